"""Zero- and few-shot classification by prompting: no training, only a pretrained LM.

Instead of putting a new head on a model and training it, rewrite the task as the
pretraining task the model already knows, and read the answer off its word predictions.

**Cloze prompts (PET, Schick & Schütze 2021) with a masked LM.** A *template* turns a
text into a fill-in-the-blank sentence, a *verbalizer* maps each label to one word::

    template    "{text}总体来说很[MASK]。"        verbalizer {"positive": "好", "negative": "差"}
    input       [CLS] 这本书写得真不错总体来说很 [MASK] 。 [SEP]
    score(y)    = log p(verbalizer[y] | input) at the [MASK] position

with ``p`` the MLM's softmax over the *whole* vocabulary (the score columns are then read
off, so they need not sum to 1). The prediction is the label with the highest score.

**In-context learning (GPT-3, Brown et al. 2020) with a causal LM.** A few labelled
*demonstrations* are written in front of the query with the same template; the model
continues the pattern::

    template    "Review: {text}\\nSentiment: {label}\\n"
    prompt      Review: great film\\nSentiment: positive\\nReview: dull\\nSentiment: negative\\n
                Review: <query>\\nSentiment:
    score(y)    = sum_j log p(w_j | prompt, w_1 .. w_{j-1}),   w = tokens of verbalizer[y]

(with no demonstration it is zero-shot). Every label is scored as a continuation of the
same prompt, so a multi-token word is allowed; its score is a sum, which favours short
words -- keep the verbalizer words about equally long.

Tokenization: the template's literal pieces, the text and the label word are encoded
*separately* and concatenated (special tokens such as ``[MASK]`` are never recognised
inside text, see :mod:`minillm.data.tokenizers.base`). With a character tokenizer this is
the same as encoding the whole string; with a BPE tokenizer put a leading space into the
verbalizer word (``" positive"``) rather than into the template.

**Contextual calibration (Zhao et al. 2021).** A small or badly prompted LM often prefers
one label word whatever the text (it predicts one class for every input). Calibration
measures that prior on *content-free* inputs (``"N/A"``, ``""``): with ``p_cf`` the mean of
their label probabilities (normalised over the labels), a text is then classified by::

    argmax_y  p(y | x) / p_cf(y)      (the paper's W = diag(p_cf)^-1, b = 0)

:meth:`calibrate` sets ``p_cf``; :meth:`scores` then return calibrated log-scores.

Long inputs are never cut silently: the cloze classifier truncates the text part (the
template is kept) and counts it in ``num_truncated``; the in-context classifier first drops
demonstrations from the front (``demonstrations_dropped``), then cuts the query text from
the left (``num_truncated``). Both counters describe the last :meth:`scores` call.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import functional as F
from ..autograd import no_grad, tensor
from ..data.tokenizers.base import Tokenizer, check_texts
from ..models.bert import BertForMaskedLM
from ..models.gpt import GPT
from ..validation import check_int

__all__ = ["ClozeClassifier", "InContextClassifier", "select_demonstrations"]


# -- shared pieces -----------------------------------------------------------------------------
def _split_template(template, markers, who):
    """``template`` cut at each marker (each must occur exactly once): a list of pieces, a
    literal string or ``("slot", marker)``, in template order."""
    if not isinstance(template, str):
        raise TypeError(f"{who}: template must be a str, got {type(template).__name__}")
    found = []
    for m in markers:
        n = template.count(m)
        if n != 1:
            raise ValueError(f"{who}: the template must contain {m!r} exactly once, found it "
                             f"{n} times in {template!r}")
        found.append((template.index(m), m))
    pieces, start = [], 0
    for pos, m in sorted(found):
        pieces += [template[start:pos], ("slot", m)]
        start = pos + len(m)
    pieces.append(template[start:])
    return pieces


def _check_tokenizer(tokenizer, who):
    if not isinstance(tokenizer, Tokenizer):
        raise TypeError(f"{who}: tokenizer must be a minillm Tokenizer, got "
                        f"{type(tokenizer).__name__}")


def _check_verbalizer(verbalizer, who):
    if not isinstance(verbalizer, Mapping):
        raise TypeError(f"{who}: verbalizer must be a dict label -> word, e.g. "
                        f"{{'positive': 'good', 'negative': 'bad'}}; got "
                        f"{type(verbalizer).__name__}")
    if len(verbalizer) < 2:
        raise ValueError(f"{who}: the verbalizer needs at least 2 labels to choose between, got "
                         f"{dict(verbalizer)!r}")
    for label, word in verbalizer.items():
        if not isinstance(word, str) or not word:
            raise ValueError(f"{who}: the verbalizer word of label {label!r} must be a non-empty "
                             f"str, got {word!r}")
    return dict(verbalizer)


def _check_vocab_fits(tokenizer, vocab_size, who):
    if tokenizer.vocab_size > vocab_size:
        raise ValueError(f"{who}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                         f"vocabulary only {vocab_size}; use the tokenizer the model was "
                         "trained with")


def _check_max_length(max_length, limit, limit_name, who):
    if max_length is None:
        return limit
    return check_int(max_length, "max_length", who, low=1, high=limit,
                     expected=f"an int in [1, {limit_name}={limit}]")


def _has_unk(tokenizer, ids):
    return tokenizer.unk_id is not None and tokenizer.unk_id in ids


class _PromptClassifier:
    """What both classifiers share: labels, predict and evaluate on top of ``scores``."""

    def __init__(self, model, verbalizer):
        self.model = model
        self.verbalizer = verbalizer
        self.labels = list(verbalizer)
        self.num_truncated = 0
        self.log_prior = None              # log p_cf after calibrate(): subtracted from scores

    def _device(self):
        return next(iter(self.model.parameters())).device

    def _run(self, fn):
        """``fn()`` with the model in eval mode and without gradients (mode restored after)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                return fn()
        finally:
            self.model.train(was_training)

    def raw_scores(self, texts, batch_size=32):  # pragma: no cover - abstract
        raise NotImplementedError

    def scores(self, texts, batch_size=32):
        """``(N, num_labels)`` log-scores of every label (see :meth:`raw_scores`); after
        :meth:`calibrate`, minus ``log p_cf`` (contextual calibration)."""
        s = self.raw_scores(texts, batch_size)
        return s if self.log_prior is None else s - self.log_prior

    def calibrate(self, content_free=("N/A", "")):
        """Contextual calibration: ``p_cf`` = the mean over the ``content_free`` texts of
        the label probabilities (softmax of the raw scores over the labels). Returns
        ``p_cf`` (a NumPy array in ``self.labels`` order); ``calibrate(())`` turns it off."""
        content_free = check_texts(content_free, f"{type(self).__name__}.calibrate")
        if not content_free:
            self.log_prior = None
            return None
        s = self.raw_scores(content_free)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p_cf = (p / p.sum(axis=1, keepdims=True)).mean(axis=0)
        self.log_prior = np.log(p_cf)
        return p_cf

    def predict(self, texts, batch_size=32):
        """The label with the highest score for every text (a list)."""
        s = self.scores(texts, batch_size)
        return [self.labels[i] for i in s.argmax(axis=1)]

    def evaluate(self, texts, labels, batch_size=32):
        """``{"accuracy": fraction of texts predicted correctly, "n": number of texts}``."""
        who = f"{type(self).__name__}.evaluate"
        texts = check_texts(texts, who)
        labels = list(labels)
        if len(labels) != len(texts):
            raise ValueError(f"{who}: got {len(texts)} texts but {len(labels)} labels; give "
                             "one label per text")
        if not texts:
            raise ValueError(f"{who}: no texts to evaluate (accuracy of 0 examples is undefined)")
        unknown = sorted({repr(y) for y in labels if y not in self.verbalizer})
        if unknown:
            raise ValueError(f"{who}: labels {unknown[:5]} are not in the verbalizer, whose "
                             f"labels are {self.labels}")
        pred = self.predict(texts, batch_size)
        correct = sum(p == y for p, y in zip(pred, labels))
        return {"accuracy": correct / len(texts), "n": len(texts)}


# -- cloze prompts with a masked LM ------------------------------------------------------------
class ClozeClassifier(_PromptClassifier):
    """Zero-shot classification with a :class:`~minillm.models.BertForMaskedLM` and a cloze
    template (see the module docstring).

    ``template`` holds ``"{text}"`` once and the tokenizer's mask token (e.g. ``"[MASK]"``)
    once; ``verbalizer`` maps each label to a word that is exactly one token. The input is
    ``[CLS] template-with-text [SEP]`` (the tokenizer's special tokens); a text that does not
    fit ``max_length`` (default: the model's ``max_position_embeddings``) loses its last
    tokens and is counted in ``num_truncated``.
    """

    def __init__(self, model, tokenizer, template, verbalizer, max_length=None):
        who = "ClozeClassifier"
        if not isinstance(model, BertForMaskedLM):
            raise TypeError(f"{who}: model must be a BertForMaskedLM (a BERT with its MLM head), "
                            f"got {type(model).__name__}")
        _check_tokenizer(tokenizer, who)
        if tokenizer.mask_id is None:
            raise ValueError(f"{who}: the tokenizer has no mask token; a cloze prompt needs one "
                             "(train it with special_tokens={'mask': '[MASK]', ...})")
        _check_vocab_fits(tokenizer, model.config.vocab_size, who)
        super().__init__(model, _check_verbalizer(verbalizer, who))
        self.tokenizer = tokenizer
        self.template = template
        mask_token = tokenizer.special_tokens["mask"]
        self._pieces = []                                    # ids lists and slot names
        for piece in _split_template(template, ("{text}", mask_token), who):
            self._pieces.append(piece[1] if isinstance(piece, tuple)
                                else tokenizer.encode(piece))
        self.label_ids = []
        for label, word in self.verbalizer.items():
            ids = tokenizer.encode(word)
            if len(ids) != 1 or _has_unk(tokenizer, ids):
                raise ValueError(f"{who}: the verbalizer word {word!r} (label {label!r}) must be "
                                 f"exactly one token of the vocabulary; it tokenizes to "
                                 f"{[tokenizer.id_to_token(i) for i in ids]}. Pick a word that "
                                 "is a single known token")
            self.label_ids.append(ids[0])
        if len(set(self.label_ids)) != len(self.label_ids):
            raise ValueError(f"{who}: two labels share a verbalizer word ({self.verbalizer}); "
                             "each label needs its own word")
        self.max_length = _check_max_length(max_length, model.config.max_position_embeddings,
                                            "max_position_embeddings", who)
        fixed = (tokenizer.num_special_tokens_to_add() + 1
                 + sum(len(p) for p in self._pieces if isinstance(p, list)))
        self.max_text_tokens = self.max_length - fixed
        if self.max_text_tokens < 1:
            raise ValueError(f"{who}: the template takes {fixed} tokens with the special tokens, "
                             f"leaving no room for the text in max_length={self.max_length}; "
                             "shorten the template or raise max_length")

    def encode(self, text):
        """``(ids, mask position, truncated?)`` of one text's prompt (host Python values)."""
        text_ids = self.tokenizer.encode(text)
        truncated = len(text_ids) > self.max_text_tokens
        text_ids = text_ids[:self.max_text_tokens]
        body = []
        for p in self._pieces:
            if p == "{text}":
                body += text_ids
            elif isinstance(p, list):
                body += p
            else:                                            # the mask token
                body.append(self.tokenizer.mask_id)
        ids = self.tokenizer.build_inputs_with_special_tokens(body)
        # encoding text never yields a special id, so the only mask id is the one inserted
        return ids, ids.index(self.tokenizer.mask_id), truncated

    def raw_scores(self, texts, batch_size=32):
        """``(N, num_labels)`` NumPy log-probabilities of the label words at the mask position
        (log-softmax over the full vocabulary, then the label-word columns), columns in
        ``self.labels`` order. Batched with right padding and an attention mask."""
        who = "ClozeClassifier.raw_scores"
        texts = check_texts(texts, who)
        batch_size = check_int(batch_size, "batch_size", who)
        encoded = [self.encode(t) for t in texts]
        self.num_truncated = sum(e[2] for e in encoded)
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        dev = self._device()

        def run():
            out = []
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start:start + batch_size]
                width = max(len(ids) for ids, _, _ in chunk)
                ids = np.full((len(chunk), width), pad, dtype=np.int64)
                mask = np.zeros((len(chunk), width), dtype=np.int64)
                for r, (row, _, _) in enumerate(chunk):
                    ids[r, :len(row)] = row
                    mask[r, :len(row)] = 1
                logits = self.model(tensor(ids, device=dev),
                                    attention_mask=tensor(mask, device=dev))   # (B, T, V)
                rows = np.arange(len(chunk))
                at_mask = logits[rows, np.array([p for _, p, _ in chunk])]       # (B, V)
                logp = F.log_softmax(at_mask, axis=-1)
                out.append(logp[:, np.array(self.label_ids)].numpy())
            return out

        parts = self._run(run)
        if not parts:
            return np.zeros((0, len(self.labels)))
        return np.concatenate(parts, axis=0)


# -- in-context learning with a causal LM ------------------------------------------------------
def _as_pair(example, i, text_key, label_key, who):
    """``(text, label)`` from a ``(text, label)`` pair or a mapping with the two keys."""
    if isinstance(example, Mapping):
        missing = [k for k in (text_key, label_key) if k not in example]
        if missing:
            raise ValueError(f"{who}: example {i} has no key(s) {missing}; its keys are "
                             f"{list(example)} (set text_key= / label_key=)")
        text, label = example[text_key], example[label_key]
    elif isinstance(example, (tuple, list)) and len(example) == 2:
        text, label = example
    else:
        raise TypeError(f"{who}: example {i} must be a (text, label) pair or a dict with keys "
                        f"{text_key!r} and {label_key!r}, got {type(example).__name__}")
    if not isinstance(text, str):
        raise TypeError(f"{who}: the text of example {i} is a {type(text).__name__}, expected str")
    return text, label


def select_demonstrations(examples, k, seed=0, balanced=True, text_key="text", label_key="label"):
    """Pick ``k`` demonstrations from ``examples`` (dicts with ``text_key``/``label_key`` or
    ``(text, label)`` pairs); returns a list of ``(text, label)`` pairs in random order.

    ``balanced=True``: as equal a number per label as possible (counts differ by at most one,
    unless a label runs out of examples); ``balanced=False``: a uniform sample. Seeded:
    the same ``seed`` gives the same demonstrations.
    """
    who = "select_demonstrations"
    pairs = [_as_pair(e, i, text_key, label_key, who) for i, e in enumerate(examples)]
    k = check_int(k, "k", who, low=0, high=len(pairs),
                  expected=f"an int in [0, {len(pairs)}] (the number of examples)")
    rng = np.random.default_rng(seed)
    if not balanced:
        return [pairs[i] for i in rng.permutation(len(pairs))[:k]]
    by_label = {}
    for i, (_, label) in enumerate(pairs):
        by_label.setdefault(label, []).append(i)
    queues = [[int(j) for j in rng.permutation(idx)] for idx in by_label.values()]
    queues = [queues[j] for j in rng.permutation(len(queues))]   # who gets the extra ones
    picked = []
    while len(picked) < k:                                        # round robin over labels
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop())
    return [pairs[picked[j]] for j in rng.permutation(len(picked))]


class InContextClassifier(_PromptClassifier):
    """Zero/few-shot classification with a :class:`~minillm.models.GPT` by in-context
    learning (see the module docstring).

    ``template`` holds ``"{text}"`` and then ``"{label}"``, once each; ``verbalizer`` maps
    labels to words (several tokens allowed); ``demonstrations`` are ``(text, label)`` pairs
    (or dicts with "text"/"label"), rendered in order before the query. When a prompt plus
    the longest label word exceeds ``max_length`` (default: the GPT's ``block_size``),
    demonstrations are dropped from the front (``demonstrations_dropped``, summed over the
    texts of the last call), then the query text is cut from the left (``num_truncated``).
    """

    select_demonstrations = staticmethod(select_demonstrations)

    def __init__(self, model, tokenizer, template, verbalizer, demonstrations=(),
                 max_length=None):
        who = "InContextClassifier"
        if not isinstance(model, GPT):
            raise TypeError(f"{who}: model must be a GPT (a causal LM), got "
                            f"{type(model).__name__}")
        _check_tokenizer(tokenizer, who)
        _check_vocab_fits(tokenizer, model.config.vocab_size, who)
        super().__init__(model, _check_verbalizer(verbalizer, who))
        self.tokenizer = tokenizer
        self.template = template
        pieces = _split_template(template, ("{text}", "{label}"), who)
        if pieces[1] != ("slot", "{text}"):
            raise ValueError(f"{who}: '{{text}}' must come before '{{label}}' in the template "
                             f"(the model reads the text, then predicts the label): {template!r}")
        self._pre, self._mid, self._post = (tokenizer.encode(pieces[i]) for i in (0, 2, 4))
        self.word_ids = []
        for label, word in self.verbalizer.items():
            ids = tokenizer.encode(word)
            if _has_unk(tokenizer, ids):
                raise ValueError(f"{who}: the verbalizer word {word!r} (label {label!r}) has "
                                 f"characters outside the vocabulary: it tokenizes to "
                                 f"{[tokenizer.id_to_token(i) for i in ids]}")
            self.word_ids.append(ids)
        if len({tuple(w) for w in self.word_ids}) != len(self.word_ids):
            raise ValueError(f"{who}: two labels share a verbalizer word ({self.verbalizer}); "
                             "each label needs its own word")
        self.max_length = _check_max_length(max_length, model.config.block_size, "block_size",
                                            who)
        self._budget = self.max_length - max(len(w) for w in self.word_ids)  # for the prompt
        if len(self._pre) + len(self._mid) >= self._budget:
            raise ValueError(f"{who}: the query template takes {len(self._pre) + len(self._mid)} "
                             f"tokens and the longest label word "
                             f"{max(len(w) for w in self.word_ids)}, leaving no room for the text "
                             f"in max_length={self.max_length}; shorten them or raise max_length")
        self.demonstrations = []
        self._demo_ids = []
        for i, d in enumerate(demonstrations):
            text, label = _as_pair(d, i, "text", "label", f"{who} demonstrations")
            if label not in self.verbalizer:
                raise ValueError(f"{who}: demonstration {i} has the label {label!r}, which is "
                                 f"not in the verbalizer ({self.labels})")
            self.demonstrations.append((text, label))
            self._demo_ids.append(self._render(tokenizer.encode(text), label))
        self.demonstrations_dropped = 0

    def _render(self, text_ids, label=None):
        """Token ids of the template filled with a text (and, for a demonstration, its label
        word and the rest of the template); without ``label`` it stops before ``{label}``."""
        ids = self._pre + text_ids + self._mid
        if label is not None:
            ids = ids + self.word_ids[self.labels.index(label)] + self._post
        return ids

    def prompt_ids(self, text):
        """``(ids, demonstrations dropped, truncated?)``: the prompt of one query that fits
        ``max_length`` together with any label word."""
        demos = self._demo_ids
        q_text = self.tokenizer.encode(text)
        total = sum(len(d) for d in demos) + len(self._render(q_text))
        dropped = 0
        while total > self._budget and dropped < len(demos):       # oldest first
            total -= len(demos[dropped])
            dropped += 1
        truncated = total > self._budget
        if truncated:                                              # keep the end of the text
            q_text = q_text[total - self._budget:]
        prompt = [i for d in demos[dropped:] for i in d] + self._render(q_text)
        if not prompt:
            raise ValueError(f"InContextClassifier: the prompt of {text!r} is empty (no "
                             "demonstration, empty text and template before '{label}'); the "
                             "first label token needs some context")
        return prompt, dropped, truncated

    def raw_scores(self, texts, batch_size=32):
        """``(N, num_labels)`` NumPy scores: for each label the sum of the log-probabilities
        of its word's tokens continuing the prompt, columns in ``self.labels`` order.
        ``batch_size`` texts per forward pass (each gives one row per label)."""
        who = "InContextClassifier.raw_scores"
        texts = check_texts(texts, who)
        batch_size = check_int(batch_size, "batch_size", who)
        prompts = [self.prompt_ids(t) for t in texts]
        self.demonstrations_dropped = sum(p[1] for p in prompts)
        self.num_truncated = sum(p[2] for p in prompts)
        n_labels = len(self.labels)
        w_max = max(len(w) for w in self.word_ids)
        dev = self._device()

        def run():
            out = []
            for start in range(0, len(prompts), batch_size):
                chunk = [p for p, _, _ in prompts[start:start + batch_size]]
                b = len(chunk) * n_labels                           # row = (text, label)
                width = max(len(p) for p in chunk) + w_max
                ids = np.zeros((b, width), dtype=np.int64)          # right padding: causal,
                pos = np.zeros((b, w_max), dtype=np.int64)          # never seen by real tokens
                target = np.zeros((b, w_max), dtype=np.int64)
                valid = np.zeros((b, w_max), dtype=bool)
                for i, prompt in enumerate(chunk):
                    n = len(prompt)
                    for j, word in enumerate(self.word_ids):
                        r = i * n_labels + j
                        w = len(word)
                        ids[r, :n + w] = prompt + word
                        # token word[m] sits at n + m and is predicted from position n + m - 1
                        pos[r, :w] = np.arange(n - 1, n - 1 + w)
                        target[r, :w] = word
                        valid[r, :w] = True
                logits = self.model(tensor(ids, device=dev))        # (b, T, V)
                rows = np.repeat(np.arange(b)[:, None], w_max, axis=1)
                logp = F.log_softmax(logits[rows, pos], axis=-1)    # (b, w_max, V)
                cols = np.repeat(np.arange(w_max)[None, :], b, axis=0)
                token_lp = logp[rows, cols, target].numpy()         # (b, w_max)
                out.append(np.where(valid, token_lp, 0.0).sum(axis=1).reshape(-1, n_labels))
            return out

        parts = self._run(run)
        if not parts:
            return np.zeros((0, n_labels))
        return np.concatenate(parts, axis=0)
