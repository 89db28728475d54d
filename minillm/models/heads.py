"""Task heads on a pretrained body: sequence classification, token classification (NER), QA.

Fine-tuning puts a small layer on top of a pretrained body (a :class:`~minillm.models.GPT` or a
:class:`~minillm.models.BERT`) and trains both. With ``h`` the body's final hidden states
(B, T, H) (GPT: ``ln_f`` output; BERT: the encoder output) and ``m`` the attention mask
(1 = real token, 0 = padding)::

    sequence classification   logits = W dropout(pool(h)) + b                    (B, num_labels)
        pool = "cls":  BERT's pooler tanh(W_p h[:, 0] + b_p) (h[:, 0] for a body without one)
               "mean": sum_t m_t h_t / sum_t m_t            (the average over real tokens)
               "last": h at the last real token             (natural for a causal GPT)
               "auto": "cls" for BERT, "mean" for GPT
    token classification      logits_t = W dropout(h_t) + b                      (B, T, num_labels)
    question answering        [start_t, end_t] = W dropout(h_t) + b              (B, T) each;
                              padding positions get the logit -1e4 (float16/32-safe)

Losses are mean cross-entropies (token labels equal to -100 are ignored; the QA loss is
``(CE(start) + CE(end)) / 2``); a model called with labels returns its outputs with the loss
LAST, ``(logits, loss)`` / ``(start_logits, end_logits, loss)``, as the Trainer expects.

Each model is a :class:`~minillm.models.PreTrainedModel`: its config names the body
(``base_model_type`` "gpt" or "bert", ``base_config`` the body's config as a dict), so
``save_pretrained`` / ``from_pretrained`` (and :func:`minillm.models.load_model`) work as for
any model. The body is ``model.base``; :meth:`from_base` wraps an existing (pretrained) body
instance, sharing it, not copying it::

    gpt = GPT.from_pretrained("runs/pretrain")
    clf = ModelForSequenceClassification.from_base(gpt, num_labels=2, pooling="last")
    logits, loss = clf(ids, attention_mask=mask, labels=labels)

Padding goes on the RIGHT. A GPT body has no attention mask: with right padding, causal
attention means that real tokens never see the padding after them, and the heads exclude
padding from pooling and from QA spans (a left-padded mask is an error for a GPT body).

Decoding token labels (:meth:`ModelForTokenClassification.decode`) is post-processing on host
NumPy arrays: with BIO label names ("O", "B-X", "I-X") it is a constrained Viterbi search
(:func:`bio_viterbi`) that never emits an "I-X" at the start, after "O" or after another type.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd import Tensor, arange, tensor
from ..nn import Dropout, Linear, init
from ..validation import int_tensor
from .base import Config, PreTrainedModel

__all__ = ["HeadConfig", "SequenceClassificationConfig", "TokenClassificationConfig",
           "QuestionAnsweringConfig", "ModelWithHead", "ModelForSequenceClassification",
           "ModelForTokenClassification", "ModelForQuestionAnswering", "BODY_TYPES", "POOLINGS",
           "PAD_LOGIT", "is_bio", "bio_transition_mask", "bio_viterbi"]

#: model types a head can sit on (bodies with per-token hidden states)
BODY_TYPES = ("bert", "gpt")
#: sequence-classification pooling methods
POOLINGS = ("auto", "cls", "mean", "last")
#: the QA logit of a padding position: exp(-1e4 - max) is 0 in float16/32/64, and it is finite
PAD_LOGIT = -1e4
#: label / position value that the losses ignore (PyTorch's convention)
IGNORE_INDEX = -100


def _body_class(base_model_type):
    # auto's table lists the heads too, so it is imported when first needed (no import cycle)
    from .auto import model_class
    return model_class(base_model_type)


# -- configs -------------------------------------------------------------------------------------
@dataclasses.dataclass
class HeadConfig(Config):
    """What every head config holds: the body's model type and its config (as a dict)."""

    base_model_type: str
    base_config: dict

    def __post_init__(self):
        name = type(self).__name__
        if self.base_model_type not in BODY_TYPES:
            raise ValueError(f"{name}: unknown base_model_type {self.base_model_type!r}; a task "
                             f"head sits on one of {list(BODY_TYPES)} (a GPT or a BERT body)")
        if isinstance(self.base_config, Config):
            self.base_config = self.base_config.to_dict()
        if not isinstance(self.base_config, dict):
            raise ValueError(f"{name}: base_config must be the body's config as a dict (e.g. "
                             f"model.config.to_dict()), got {type(self.base_config).__name__}")
        self.base_config = dict(self.base_config)
        cfg_cls = _body_class(self.base_model_type).config_class
        try:
            cfg_cls.from_dict(self.base_config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: base_config is not a valid {cfg_cls.__name__} for "
                             f"base_model_type {self.base_model_type!r}: {e}") from e
        if hasattr(self, "classifier_dropout"):
            self._require_probabilities("classifier_dropout")

    def body_config(self):
        """The body's config object (a GPTConfig or a BertConfig)."""
        return _body_class(self.base_model_type).config_class.from_dict(self.base_config)

    def _check_labels(self):
        name = type(self).__name__
        self._require_ints("num_labels")
        if self.label_names is None:
            return
        names = self.label_names
        if isinstance(names, tuple):
            names = list(names)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{name}: label_names must be a list of strings, got {names!r}")
        if len(names) != self.num_labels:
            raise ValueError(f"{name}: label_names has {len(names)} names but num_labels is "
                             f"{self.num_labels}; give one name per label")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{name}: label_names must be unique; repeated: {dupes}")
        self.label_names = names


@dataclasses.dataclass
class SequenceClassificationConfig(HeadConfig):
    """A classifier over whole sequences: ``num_labels`` classes (optionally named), the
    ``pooling`` ("auto", "cls", "mean", "last") that turns (B, T, H) into (B, H), and the
    dropout before the classifier."""

    num_labels: int
    label_names: Optional[list] = None
    pooling: str = "auto"
    classifier_dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        self._check_labels()
        if self.pooling not in POOLINGS:
            raise ValueError(f"SequenceClassificationConfig: pooling must be one of "
                             f"{list(POOLINGS)}, got {self.pooling!r}")

    def resolved_pooling(self):
        """``pooling`` with "auto" resolved: "cls" for BERT, "mean" for GPT."""
        if self.pooling != "auto":
            return self.pooling
        return "cls" if self.base_model_type == "bert" else "mean"


@dataclasses.dataclass
class TokenClassificationConfig(HeadConfig):
    """A classifier for every token: ``num_labels`` tags (BIO names enable constrained
    decoding) and the dropout before the classifier."""

    num_labels: int
    label_names: Optional[list] = None
    classifier_dropout: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        self._check_labels()


@dataclasses.dataclass
class QuestionAnsweringConfig(HeadConfig):
    """Extractive QA: a start and an end logit per token, after ``classifier_dropout``."""

    classifier_dropout: float = 0.0


# -- shared model code ---------------------------------------------------------------------------
class ModelWithHead(PreTrainedModel):
    """Base of the task-head models: the body ``self.base``, ``self.dropout``, input checks.

    ``Model(config)`` builds a fresh body from ``config.base_model_type`` / ``base_config``
    (BERT with its pooler); ``Model(config, base=body)`` uses the given body instance
    instead (that is what :meth:`from_base` does). A BERT body without a pooler (e.g.
    ``BertForMaskedLM(...).bert``) is saved without ``base.pooler.*`` and loads back the
    same way: :meth:`load_state_dict` drops the pooler when the state dict has none of its keys.
    """

    config_class = HeadConfig

    def __init__(self, config, base=None):
        super().__init__(config)
        if base is None:
            body_cls = _body_class(config.base_model_type)
            body_cfg = config.body_config()
            base = (body_cls(body_cfg, add_pooling_layer=True)
                    if config.base_model_type == "bert" else body_cls(body_cfg))
        elif getattr(base, "model_type", None) != config.base_model_type:
            raise TypeError(f"{type(self).__name__}: the config says the body is a "
                            f"{config.base_model_type!r} model, got "
                            f"{getattr(base, 'model_type', type(base).__name__)!r}")
        self.base = base
        body_cfg = base.config
        self.hidden_size = body_cfg.n_embd if config.base_model_type == "gpt" \
            else body_cfg.hidden_size
        self.dropout = Dropout(config.classifier_dropout)

    @classmethod
    def from_base(cls, base_model, **head_kwargs):
        """Wrap an existing body (e.g. ``GPT.from_pretrained(dir)``): the head model's config
        is built from ``base_model.model_type``, ``base_model.config`` and ``head_kwargs``; the
        body is shared (its weights are used, not copied) and the new head is created on the
        body's device and dtype."""
        model_type = getattr(base_model, "model_type", None)
        if not isinstance(base_model, PreTrainedModel) or model_type not in BODY_TYPES:
            hint = (" (for a BERT with pretraining heads pass its encoder, model.bert)"
                    if isinstance(model_type, str) and model_type.startswith("bert") else "")
            raise TypeError(f"{cls.__name__}.from_base: base_model must be one of the bodies "
                            f"{list(BODY_TYPES)}, got a {model_type or type(base_model).__name__!r}"
                            f" model{hint}")
        config = cls.config_class(base_model_type=model_type,
                                  base_config=base_model.config.to_dict(), **head_kwargs)
        first = next(iter(base_model.parameters()))
        with backend.default_device_as(first.device), backend.default_dtype_as(first.dtype):
            return cls(config, base=base_model)

    def load_state_dict(self, state_dict, strict=True):
        if (self.config.base_model_type == "bert" and getattr(self.base, "pooler", None) is not None
                and not any(k.startswith("base.pooler.") for k in state_dict)):
            self.base.pooler = None          # saved from a body without a pooler: keep it so
        return super().load_state_dict(state_dict, strict)

    def _new_head(self, out_features):
        """A Linear (hidden -> out_features) initialised like BERT/nanoGPT: N(0, 0.02^2)
        weights (BERT's ``initializer_range`` for a BERT body), zero bias."""
        layer = Linear(self.hidden_size, out_features)
        init.normal_(layer.weight, std=getattr(self.base.config, "initializer_range", 0.02))
        init.zeros_(layer.bias)
        return layer

    def _device(self):
        return next(iter(self.base.parameters())).device

    def _real_tokens(self, attention_mask, shape, dev):
        """The attention mask as a bool Tensor (True = real token), or None without a mask.

        Checked with one device->host read of a flag: values 0/1, at least one real token
        per sequence, and (GPT) right padding."""
        who = type(self).__name__
        if attention_mask is None:
            return None
        m = attention_mask
        if not isinstance(m, Tensor):
            m = tensor(np.asarray(m), device=dev)
        if m.device != dev:
            raise RuntimeError(f"{who}: attention_mask is on {m.device}, the model on {dev}")
        if m.shape != tuple(shape):
            raise ValueError(f"{who}: attention_mask must have the shape of input_ids (B, T) = "
                             f"{tuple(shape)}, got {m.shape} (1 = real token, 0 = padding)")
        real = m != 0
        bad = ((m != 0) & (m != 1)).sum() + (real.sum(axis=1) == 0).sum()
        gpt = self.config.base_model_type == "gpt"
        if gpt and shape[1] > 1:
            bad = bad + (real[:, 1:] & ~real[:, :-1]).sum()          # a real token after a pad
        def error():
            host = m.numpy()
            if not np.isin(host, (0, 1)).all():
                return ValueError(f"{who}: attention_mask must hold 0 (padding) and 1 (real "
                                  f"token), found {np.unique(host)[:5].tolist()}")
            empty = np.flatnonzero((host != 0).sum(axis=1) == 0)
            if empty.size:
                return ValueError(f"{who}: sequences {empty[:5].tolist()} have no real token "
                                  "(attention_mask all 0); every sequence needs at least one")
            rows = np.flatnonzero(((host[:, 1:] != 0) & (host[:, :-1] == 0)).any(axis=1))
            return ValueError(f"{who}: a GPT body needs RIGHT padding (1s then 0s in "
                              f"attention_mask), sequences {rows[:5].tolist()} have padding "
                              "before a real token; causal attention would let real tokens "
                              "see it. Pad on the right")

        backend.check((bad != 0).data, error)      # made now on cpu, at the next sync on a GPU
        return real

    def _encode(self, input_ids, attention_mask, token_type_ids):
        """The body's outputs: ``(sequence (B, T, H), pooled (B, H) or None, real or None)``."""
        who = type(self).__name__
        dev = self._device()
        ids = int_tensor(input_ids, "input_ids", dev, who)
        if ids.ndim != 2:
            raise ValueError(f"{who}: input_ids must be (B, T), got shape {ids.shape}")
        real = self._real_tokens(attention_mask, ids.shape, dev)
        if self.config.base_model_type == "gpt":
            # GPT has no segment embeddings: token_type_ids are accepted (one call signature
            # for every body) and not used
            return self.base.hidden_states(ids), None, real
        seq, pooled = self.base(ids, token_type_ids=token_type_ids, attention_mask=real)
        return seq, pooled, real

    def _targets(self, values, name, shape, num_classes, dev, ignore=False, real=None):
        """Integer targets of ``shape`` in [0, num_classes) (or -100 when ``ignore``); with
        ``real`` (B, T) (QA positions) they must also point at real tokens."""
        who = type(self).__name__
        t = int_tensor(values, name, dev, who)
        if t.shape != tuple(shape):
            raise ValueError(f"{who}: {name} must have shape {tuple(shape)}, got {t.shape}")
        ok = (t >= 0) & (t < num_classes)
        if real is not None:
            ok = ok & real[arange(shape[0], device=dev), t.clip(0, num_classes - 1)]
        if ignore:
            ok = ok | (t == IGNORE_INDEX)
        def error():
            bad = t.numpy()[~ok.numpy()]
            what = (f"class ids in [0, num_labels={num_classes})" if name == "labels"
                    else f"positions in [0, T={num_classes})")
            if real is not None:
                what += " at real tokens (attention_mask 1)"
            if ignore:
                what += f" or {IGNORE_INDEX} (ignored)"
            return ValueError(f"{who}: {name} must be {what}; found {bad[:5].tolist()}")

        backend.check((~ok.data).any(), error)   # made now on cpu, at the next sync on a GPU
        return t


# -- the three heads -----------------------------------------------------------------------------
class ModelForSequenceClassification(ModelWithHead):
    """One label per sequence: ``model(input_ids, attention_mask=None, token_type_ids=None,
    labels=None)`` -> logits (B, num_labels), or ``(logits, loss)`` with ``labels`` (B,)
    (mean cross-entropy). Layers: ``base`` (the body), ``dropout``, ``classifier``."""

    config_class = SequenceClassificationConfig
    model_type = "sequence_classification"

    def __init__(self, config, base=None):
        super().__init__(config, base)
        self.classifier = self._new_head(config.num_labels)

    @property
    def pooling(self):
        """The pooling in use ("cls", "mean" or "last"; "auto" resolved)."""
        return self.config.resolved_pooling()

    def pool(self, sequence, pooled, real):
        """(B, T, H) -> (B, H) by ``self.pooling``; ``real`` (B, T) bool or None (no padding)."""
        how = self.pooling
        if how == "cls":
            return pooled if pooled is not None else sequence[:, 0]
        if how == "mean":
            if real is None:
                return sequence.mean(axis=1)
            w = real.astype(sequence.dtype).unsqueeze(-1)                  # (B, T, 1)
            return (sequence * w).sum(axis=1) / w.sum(axis=1)
        b, t = sequence.shape[:2]                                          # "last"
        if real is None:
            return sequence[:, t - 1]
        dev = sequence.device
        # index of the last real token: argmax of m_t * (t + 1)
        last = (real.astype(np.int64) * arange(1, t + 1, device=dev)).argmax(axis=1)
        return sequence[arange(b, device=dev), last]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        seq, pooled, real = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(self.pool(seq, pooled, real)))
        if labels is None:
            return logits
        labels = self._targets(labels, "labels", logits.shape[:1], self.config.num_labels,
                               logits.device)
        return logits, F.cross_entropy(logits, labels)


class ModelForTokenClassification(ModelWithHead):
    """One label per token (NER, POS, word segmentation): ``model(input_ids,
    attention_mask=None, token_type_ids=None, labels=None)`` -> logits (B, T, num_labels), or
    ``(logits, loss)`` with ``labels`` (B, T) (mean cross-entropy; -100 = ignored: give padding
    and sub-word continuations -100). :meth:`decode` turns logits into label ids."""

    config_class = TokenClassificationConfig
    model_type = "token_classification"

    def __init__(self, config, base=None):
        super().__init__(config, base)
        self.classifier = self._new_head(config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        seq, _, _ = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(seq))
        if labels is None:
            return logits
        labels = self._targets(labels, "labels", logits.shape[:2], self.config.num_labels,
                               logits.device, ignore=True)
        return logits, F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)

    def decode(self, logits, attention_mask=None):
        """Label ids of the real tokens of every sequence: a list (per sequence) of lists.

        With BIO ``label_names`` a constrained Viterbi search (:func:`bio_viterbi`) on the
        log-softmax scores (never an "I-X" at the start, after "O" or after another type);
        otherwise the argmax per token. Runs on host NumPy arrays (post-processing).
        """
        scores = logits.numpy() if isinstance(logits, Tensor) else np.asarray(logits)
        n = self.config.num_labels
        if scores.ndim != 3 or scores.shape[2] != n:
            raise ValueError(f"{type(self).__name__}.decode: logits must be (B, T, "
                             f"num_labels={n}), got {scores.shape}")
        if attention_mask is None:
            real = np.ones(scores.shape[:2], dtype=bool)
        else:
            m = attention_mask.numpy() if isinstance(attention_mask, Tensor) \
                else np.asarray(attention_mask)
            if m.shape != scores.shape[:2]:
                raise ValueError(f"{type(self).__name__}.decode: attention_mask must be (B, T) "
                                 f"= {scores.shape[:2]}, got {m.shape}")
            real = m != 0
        scores = scores.astype(np.float64)
        z = scores - scores.max(axis=-1, keepdims=True)
        scores = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))     # log-softmax
        names = self.config.label_names
        use_viterbi = names is not None and is_bio(names)
        out = []
        for s, r in zip(scores, real):
            s = s[r]
            out.append(bio_viterbi(s, names) if use_viterbi else s.argmax(axis=-1).tolist())
        return out


class ModelForQuestionAnswering(ModelWithHead):
    """Extractive QA (SQuAD, CMRC): ``model(input_ids, attention_mask=None,
    token_type_ids=None, start_positions=None, end_positions=None)`` -> ``(start_logits,
    end_logits)`` (B, T) each, padding positions set to :data:`PAD_LOGIT`; with both position
    tensors (B,) -> ``(start_logits, end_logits, loss)``, ``loss = (CE(start) + CE(end)) / 2``.
    Layers: ``base``, ``dropout``, ``qa_outputs`` (hidden -> 2: start, end)."""

    config_class = QuestionAnsweringConfig
    model_type = "question_answering"

    def __init__(self, config, base=None):
        super().__init__(config, base)
        self.qa_outputs = self._new_head(2)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, start_positions=None,
                end_positions=None):
        seq, _, real = self._encode(input_ids, attention_mask, token_type_ids)
        logits = self.qa_outputs(self.dropout(seq))                     # (B, T, 2)
        start, end = logits[:, :, 0], logits[:, :, 1]
        if real is not None:
            start = start.masked_fill(~real, PAD_LOGIT)
            end = end.masked_fill(~real, PAD_LOGIT)
        if start_positions is None and end_positions is None:
            return start, end
        if start_positions is None or end_positions is None:
            raise ValueError(f"{type(self).__name__}: give both start_positions and "
                             "end_positions (or neither)")
        b, t = start.shape
        sp = self._targets(start_positions, "start_positions", (b,), t, start.device,
                           ignore=True, real=real)
        ep = self._targets(end_positions, "end_positions", (b,), t, start.device,
                           ignore=True, real=real)
        loss = (F.cross_entropy(start, sp) + F.cross_entropy(end, ep)) / 2
        return start, end, loss


# -- BIO decoding ----------------------------------------------------------------------------------
def is_bio(label_names):
    """True when every name is "O", "B-<type>" or "I-<type>" (and some are B-/I- tags)."""
    if not label_names:
        return False
    tagged = False
    for n in label_names:
        if n == "O":
            continue
        if not (isinstance(n, str) and len(n) > 2 and n[:2] in ("B-", "I-")):
            return False
        tagged = True
    return tagged


def bio_transition_mask(label_names):
    """The BIO constraints as bool arrays ``(allowed_start (L,), allowed (L, L))``.

    ``allowed_start[j]``: tag j may begin a sequence (anything but an "I-" tag);
    ``allowed[i, j]``: tag j may follow tag i. "O" and "B-X" may follow anything; "I-X" only
    "B-X" or "I-X" (the same type X).
    """
    if not is_bio(label_names):
        raise ValueError(f"bio_transition_mask: label names are not BIO tags ('O', 'B-X', "
                         f"'I-X'): {list(label_names or [])}")
    types = {}
    type_id = np.array([-1 if n == "O" else types.setdefault(n[2:], len(types))
                        for n in label_names])
    inside = np.array([n.startswith("I-") for n in label_names])
    allowed_start = ~inside
    allowed = ~inside[None, :] | (type_id[:, None] == type_id[None, :])   # "O" rows: id -1
    return allowed_start, allowed


def bio_viterbi(scores, label_names):
    """The best valid BIO tag sequence for ``scores`` (T, L) (NumPy log-scores, e.g.
    log-softmax of a token classifier's logits): the ids maximising ``sum_t scores[t, y_t]``
    over the sequences allowed by :func:`bio_transition_mask`. Returns a list of T ints.

    Dynamic programming: ``delta_t(j) = scores[t, j] + max_{i: i -> j allowed} delta_{t-1}(i)``,
    with back-pointers to recover the path; O(T L^2).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(label_names):
        raise ValueError(f"bio_viterbi: scores must be (T, L) with L = {len(label_names)} "
                         f"labels, got {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError("bio_viterbi: scores contain NaN")
    allowed_start, allowed = bio_transition_mask(label_names)
    t_len = scores.shape[0]
    if t_len == 0:
        return []
    trans = np.where(allowed, 0.0, -np.inf)                    # (previous, next)
    delta = np.where(allowed_start, scores[0], -np.inf)
    back = np.zeros((t_len, scores.shape[1]), dtype=np.int64)
    for t in range(1, t_len):
        cand = delta[:, None] + trans
        back[t] = cand.argmax(axis=0)
        delta = cand.max(axis=0) + scores[t]
    if not np.isfinite(delta.max()):
        raise ValueError(f"bio_viterbi: no valid tag sequence; the labels {list(label_names)} "
                         "need an 'O' or a 'B-' tag to start with")
    path = [int(delta.argmax())]
    for t in range(t_len - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]
