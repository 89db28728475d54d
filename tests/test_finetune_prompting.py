"""Prompt-based zero/few-shot classification: ClozeClassifier (masked LM + template +
verbalizer), InContextClassifier (GPT + demonstrations) and select_demonstrations.

Every score is checked against an independent computation: the prompt is written out as
a string and encoded in one go (a character tokenizer makes that equal to encoding its
pieces), the model is run on it alone, and log-softmax / sums are done in NumPy.
Device-clean (NumPy data, ``.numpy()`` reads).
"""
import re
from collections import Counter

import numpy as np
import pytest

import minillm as mm
from minillm.data.tokenizers import CharTokenizer
from minillm.finetune import prompting
from minillm.finetune.prompting import (ClozeClassifier, InContextClassifier,
                                        select_demonstrations)
from minillm.models import BERT, GPT, BertConfig, BertForMaskedLM, GPTConfig

SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
            "bos": "<bos>", "eos": "<eos>"}
CORPUS = ["这本书写得真不错", "质量太差了", "总体来说很好。", "评论：情感：\n", "一般般吧",
          "物流很快包装也好"]
TOK = CharTokenizer.train(CORPUS, special_tokens=SPECIALS)
TEMPLATE = "{text}总体来说很[MASK]。"
VERB = {"positive": "好", "negative": "差", "neutral": "般"}
TEXTS = ["这本书写得真不错", "质量太差了", "一般", "物流很快包装也好书"]


def randomize(model, seed, scale=0.3):
    """Non-trivial weights everywhere (LayerNorms, biases), so scores differ by position."""
    r = np.random.default_rng(seed)
    with mm.no_grad():
        for p in model.parameters():
            p.copy_(mm.tensor(p.numpy() + scale * r.standard_normal(p.shape).astype(p.dtype)))
    return model


def mlm(max_positions=32, dropout=0.0, seed=0):
    mm.manual_seed(seed)
    cfg = BertConfig(vocab_size=TOK.vocab_size, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32,
                     max_position_embeddings=max_positions, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout, pad_token_id=TOK.pad_id)
    return randomize(BertForMaskedLM(cfg), seed + 1).eval()


def gpt(block_size=128, seed=0):
    mm.manual_seed(seed)
    cfg = GPTConfig(vocab_size=TOK.vocab_size, block_size=block_size, n_layer=2, n_head=2,
                    n_embd=16)
    return randomize(GPT(cfg), seed + 1).eval()


def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# -- cloze ---------------------------------------------------------------------------------------
def manual_cloze(model, text, template=TEMPLATE, verbalizer=VERB):
    """[CLS] text + template [SEP] with [MASK]'s id at the mask, run alone; NumPy log-softmax."""
    before, after = template.replace("{text}", text).split("[MASK]")
    ids = [TOK.cls_id] + TOK.encode(before) + [TOK.mask_id] + TOK.encode(after) + [TOK.sep_id]
    pos = len(TOK.encode(before)) + 1
    logits = model(mm.tensor(np.array([ids]))).numpy()[0]
    cols = [TOK.token_to_id(w) for w in verbalizer.values()]
    return np_log_softmax(logits[pos])[cols]


def test_cloze_scores_equal_a_manual_mlm_pass():
    model = mlm()
    clf = ClozeClassifier(model, TOK, TEMPLATE, VERB)
    got = clf.scores(TEXTS)
    assert got.shape == (len(TEXTS), 3) and clf.labels == list(VERB)
    want = np.stack([manual_cloze(model, t) for t in TEXTS])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(got < 0) and np.all(np.exp(got).sum(axis=1) < 1)     # a full-vocab softmax
    assert clf.num_truncated == 0
    # the mask may also come before the text
    tmpl = "很[MASK]：{text}"
    clf = ClozeClassifier(model, TOK, tmpl, VERB)
    np.testing.assert_allclose(clf.scores(TEXTS[:2]),
                               np.stack([manual_cloze(model, t, tmpl) for t in TEXTS[:2]]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 32])
def test_cloze_scores_do_not_depend_on_batching_or_padding(batch_size):
    model = mlm(seed=3)
    clf = ClozeClassifier(model, TOK, TEMPLATE, VERB)
    alone = np.concatenate([clf.scores([t]) for t in TEXTS])
    np.testing.assert_allclose(clf.scores(TEXTS, batch_size=batch_size), alone,
                               rtol=1e-5, atol=1e-5)
    # rows differ (the check could fail): texts really change the scores
    assert np.abs(alone[0] - alone[2]).max() > 1e-3


def test_cloze_truncates_the_text_only_and_counts_it():
    model = mlm(max_positions=32)
    fixed = 2 + len("总体来说很") + 1 + len("。")                  # CLS SEP, template, mask
    clf = ClozeClassifier(model, TOK, TEMPLATE, VERB, max_length=fixed + 4)
    assert clf.max_text_tokens == 4
    texts = ["这本书写得真不错", "质量太差", "一般", "物流很快包装"]
    got = clf.scores(texts)
    assert clf.num_truncated == 2                                  # 8 and 6 characters > 4
    want = np.stack([manual_cloze(model, t[:4]) for t in texts])   # keeps the beginning
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    clf.scores(["一般"])
    assert clf.num_truncated == 0                                  # counts the last call
    # the default max_length is the model's max positions
    clf = ClozeClassifier(model, TOK, TEMPLATE, VERB)
    assert clf.max_length == 32
    clf.scores(["好" * 30])
    assert clf.num_truncated == 1


def test_cloze_predict_and_evaluate():
    model = mlm(seed=5)
    clf = ClozeClassifier(model, TOK, TEMPLATE, VERB)
    s = clf.scores(TEXTS)
    want = [list(VERB)[i] for i in s.argmax(axis=1)]
    assert clf.predict(TEXTS) == want
    gold = [want[0], "negative" if want[1] != "negative" else "positive", want[2], want[3]]
    assert clf.evaluate(TEXTS, gold) == {"accuracy": 0.75, "n": 4}
    assert clf.scores([]).shape == (0, 3) and clf.predict([]) == []


def test_cloze_runs_in_eval_mode_and_restores_the_mode():
    model = mlm(dropout=0.5, seed=7)
    model.train()
    clf = ClozeClassifier(model, TOK, TEMPLATE, VERB)
    a, b = clf.scores(TEXTS), clf.scores(TEXTS)
    np.testing.assert_array_equal(a, b)                      # no dropout while scoring
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    np.testing.assert_allclose(a, np.stack([manual_cloze(model, t) for t in TEXTS]),
                               rtol=1e-5, atol=1e-5)


def bert_body():
    mm.manual_seed(0)
    return BERT(BertConfig(vocab_size=TOK.vocab_size, hidden_size=8, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=8))


NO_MASK_TOK = CharTokenizer.train(CORPUS, special_tokens={"cls": "[CLS]", "sep": "[SEP]"})

CLOZE_ERRORS = [
    ("two tokens", lambda m: ClozeClassifier(m, TOK, TEMPLATE, {"a": "很好", "b": "差"}),
     ValueError, "'很好' (label 'a') must be exactly one token"),
    ("unknown word", lambda m: ClozeClassifier(m, TOK, TEMPLATE, {"a": "棒", "b": "差"}),
     ValueError, "tokenizes to ['[UNK]']"),
    ("no text slot", lambda m: ClozeClassifier(m, TOK, "很[MASK]", VERB), ValueError,
     "'{text}' exactly once"),
    ("two masks", lambda m: ClozeClassifier(m, TOK, "{text}[MASK][MASK]", VERB), ValueError,
     "'[MASK]' exactly once, found it 2 times"),
    ("no mask", lambda m: ClozeClassifier(m, TOK, "{text}很好", VERB), ValueError,
     "'[MASK]' exactly once, found it 0 times"),
    ("bare BERT", lambda m: ClozeClassifier(bert_body(), TOK, TEMPLATE, VERB), TypeError,
     "BertForMaskedLM"),
    ("no mask token", lambda m: ClozeClassifier(m, NO_MASK_TOK, TEMPLATE, VERB), ValueError,
     "no mask token"),
    ("one label", lambda m: ClozeClassifier(m, TOK, TEMPLATE, {"a": "好"}), ValueError,
     "at least 2 labels"),
    ("same word", lambda m: ClozeClassifier(m, TOK, TEMPLATE, {"a": "好", "b": "好"}),
     ValueError, "share a verbalizer word"),
    ("not a dict", lambda m: ClozeClassifier(m, TOK, TEMPLATE, ["好", "差"]), TypeError,
     "dict label -> word"),
    ("max_length small", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB, max_length=9),
     ValueError, "no room for the text"),
    ("max_length big", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB, max_length=33),
     ValueError, "max_position_embeddings=32"),
    ("bare string", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB).scores("好"), TypeError,
     "wrap it in a list"),
    ("batch size", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB).scores(["好"], 0),
     ValueError, "batch_size"),
    ("label count", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB).evaluate(["好"], []),
     ValueError, "1 texts but 0 labels"),
    ("unknown label", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB).evaluate(["好"], ["x"]),
     ValueError, "not in the verbalizer"),
    ("no texts", lambda m: ClozeClassifier(m, TOK, TEMPLATE, VERB).evaluate([], []),
     ValueError, "no texts"),
]


@pytest.mark.parametrize("fn,exc,match", [e[1:] for e in CLOZE_ERRORS],
                         ids=[e[0] for e in CLOZE_ERRORS])
def test_cloze_errors(fn, exc, match):
    model = mlm()
    with pytest.raises(exc, match=re.escape(match)):
        fn(model)


# -- in-context learning -----------------------------------------------------------------------
ICL_TEMPLATE = "评论：{text}\n情感：{label}\n"
ICL_VERB = {"positive": "好", "negative": "太差", "neutral": "一般般"}     # 1, 2, 3 tokens
DEMOS = [("这本书写得真不错", "positive"), ("质量太差了", "negative"), ("一般般吧", "neutral")]


def manual_icl(model, text, demos, verbalizer=ICL_VERB, template=ICL_TEMPLATE):
    """Write the prompt out as a string, add each label word, run the GPT, sum log-probs."""
    prompt = "".join(template.format(text=t, label=verbalizer[y]) for t, y in demos)
    prompt += template[:template.index("{label}")].format(text=text)
    p = TOK.encode(prompt)
    out = []
    for word in verbalizer.values():
        w = TOK.encode(word)
        logp = np_log_softmax(model(mm.tensor(np.array([p + w]))).numpy()[0])
        out.append(sum(logp[len(p) - 1 + j, w[j]] for j in range(len(w))))
    return np.array(out)


@pytest.mark.parametrize("demos", [[], DEMOS[:1], DEMOS], ids=["zero-shot", "one", "three"])
def test_icl_scores_equal_a_manual_sum_of_gpt_log_probs(demos):
    model = gpt(seed=2)
    clf = InContextClassifier(model, TOK, ICL_TEMPLATE, ICL_VERB, demonstrations=demos)
    got = clf.scores(TEXTS)
    want = np.stack([manual_icl(model, t, demos) for t in TEXTS])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert clf.num_truncated == 0 and clf.demonstrations_dropped == 0
    assert clf.predict(TEXTS) == [list(ICL_VERB)[i] for i in want.argmax(axis=1)]


def test_icl_batching_does_not_change_scores():
    model = gpt(seed=4)
    clf = InContextClassifier(model, TOK, ICL_TEMPLATE, ICL_VERB, demonstrations=DEMOS[:2])
    alone = np.concatenate([clf.scores([t]) for t in TEXTS])
    for bs in (1, 3, 32):
        np.testing.assert_allclose(clf.scores(TEXTS, batch_size=bs), alone, rtol=1e-5,
                                   atol=1e-5)
    assert np.abs(alone[0] - alone[1]).max() > 1e-3


def render_len(text, label=None):
    s = ICL_TEMPLATE.format(text=text, label=ICL_VERB[label]) if label else \
        ICL_TEMPLATE[:ICL_TEMPLATE.index("{label}")].format(text=text)
    return len(TOK.encode(s))


def test_icl_drops_demonstrations_from_the_front_then_truncates_the_query():
    block = 40
    model = gpt(block_size=block, seed=6)
    clf = InContextClassifier(model, TOK, ICL_TEMPLATE, ICL_VERB, demonstrations=DEMOS)
    budget = block - 3                                      # longest word: 一般般
    demo_lens = [render_len(t, y) for t, y in DEMOS]
    texts = ["好", "这本书写得真不错好", "物流很快包装也好" * 5]
    dropped_total, truncated = 0, 0
    want = []
    for text in texts:
        q = render_len(text)
        drop = 0
        while sum(demo_lens[drop:]) + q > budget and drop < len(DEMOS):
            drop += 1
        dropped_total += drop
        keep_text = text
        if q > budget:                                      # no demonstration left
            keep_text = text[q - budget:]                   # cut from the left
            truncated += 1
        want.append(manual_icl(model, keep_text, DEMOS[drop:]))
    assert dropped_total > 0 and truncated == 1             # the setup exercises both
    got = clf.scores(texts)
    assert clf.demonstrations_dropped == dropped_total and clf.num_truncated == truncated
    np.testing.assert_allclose(got, np.stack(want), rtol=1e-5, atol=1e-5)
    # a shorter max_length than block_size is honoured too
    clf = InContextClassifier(model, TOK, ICL_TEMPLATE, ICL_VERB, demonstrations=DEMOS,
                              max_length=20)
    clf.scores(["好"])
    assert clf.demonstrations_dropped == 3 and clf.num_truncated == 0


def test_icl_evaluate_and_eval_mode():
    model = gpt(seed=8).train()
    clf = InContextClassifier(model, TOK, ICL_TEMPLATE, ICL_VERB, demonstrations=DEMOS)
    pred = clf.predict(TEXTS)
    assert model.training
    gold = list(pred)
    gold[0] = "negative" if pred[0] != "negative" else "positive"
    assert clf.evaluate(TEXTS, gold) == {"accuracy": 0.75, "n": 4}
    # dicts work as demonstrations
    clf2 = InContextClassifier(model, TOK, ICL_TEMPLATE, ICL_VERB,
                               demonstrations=[{"text": t, "label": y} for t, y in DEMOS])
    np.testing.assert_array_equal(clf2.scores(TEXTS), clf.scores(TEXTS))


ICL_ERRORS = [
    ("not gpt", lambda: InContextClassifier(mlm(), TOK, ICL_TEMPLATE, ICL_VERB), TypeError,
     "must be a GPT"),
    ("no label slot", lambda: InContextClassifier(gpt(), TOK, "{text}：", ICL_VERB), ValueError,
     "'{label}' exactly once"),
    ("label first", lambda: InContextClassifier(gpt(), TOK, "{label}：{text}", ICL_VERB),
     ValueError, "'{text}' must come before '{label}'"),
    ("unknown demo label", lambda: InContextClassifier(gpt(), TOK, ICL_TEMPLATE, ICL_VERB,
                                                       demonstrations=[("好", "great")]),
     ValueError, "demonstration 0 has the label 'great'"),
    ("bad demo", lambda: InContextClassifier(gpt(), TOK, ICL_TEMPLATE, ICL_VERB,
                                             demonstrations=["好"]),
     TypeError, "(text, label) pair"),
    ("unk word", lambda: InContextClassifier(gpt(), TOK, ICL_TEMPLATE, {"a": "棒极", "b": "差"}),
     ValueError, "'棒极' (label 'a') has characters outside the vocabulary"),
    ("max_length big", lambda: InContextClassifier(gpt(), TOK, ICL_TEMPLATE, ICL_VERB,
                                                   max_length=129),
     ValueError, "block_size=128"),
    ("no room", lambda: InContextClassifier(gpt(), TOK, ICL_TEMPLATE, ICL_VERB, max_length=9),
     ValueError, "no room for the text"),
]


@pytest.mark.parametrize("fn,exc,match", [e[1:] for e in ICL_ERRORS],
                         ids=[e[0] for e in ICL_ERRORS])
def test_icl_errors(fn, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        fn()


# -- choosing demonstrations -------------------------------------------------------------------
EXAMPLES = ([{"text": f"p{i}", "label": "pos"} for i in range(6)]
            + [{"text": f"n{i}", "label": "neg"} for i in range(6)]
            + [{"text": f"m{i}", "label": "mid"} for i in range(2)])


@pytest.mark.parametrize("k", [0, 1, 3, 5, 6, 9])
def test_select_demonstrations_is_balanced(k):
    picked = select_demonstrations(EXAMPLES, k, seed=1)
    assert len(picked) == k and len(set(picked)) == k
    assert all(isinstance(t, str) and t[0] == y[0] for t, y in picked)   # pairs from EXAMPLES
    counts = [Counter(y for _, y in picked)[y] for y in ("pos", "neg", "mid")]
    if k <= 6:                                     # every label can give k / 3
        assert max(counts) - min(counts) <= 1, counts
    else:                                          # "mid" has only 2; the others share the rest
        assert counts[2] == 2 and abs(counts[0] - counts[1]) <= 1, counts
    assert picked == select_demonstrations(EXAMPLES, k, seed=1)          # seeded


def test_select_demonstrations_options():
    a = select_demonstrations(EXAMPLES, 6, seed=0)
    b = select_demonstrations(EXAMPLES, 6, seed=2)
    assert sorted(a) != sorted(b) or a != b                              # the seed matters
    pairs = [(e["text"], e["label"]) for e in EXAMPLES]
    assert select_demonstrations(pairs, 6, seed=0) == a                  # pairs == dicts
    u = select_demonstrations(EXAMPLES, 14, seed=0, balanced=False)
    assert sorted(u) == sorted(pairs)                                    # a permutation
    custom = [{"review": t, "y": y} for t, y in pairs]
    assert select_demonstrations(custom, 6, seed=0, text_key="review", label_key="y") == a
    assert InContextClassifier.select_demonstrations(pairs, 6, seed=0) == a
    # the picks feed an InContextClassifier
    demos = select_demonstrations([(t, y) for t, y in DEMOS * 2], 3, seed=0)
    assert Counter(y for _, y in demos) == Counter({"positive": 1, "negative": 1, "neutral": 1})
    InContextClassifier(gpt(), TOK, ICL_TEMPLATE, ICL_VERB, demonstrations=demos)


@pytest.mark.parametrize("args,exc,match", [
    ((EXAMPLES, 15), ValueError, "[0, 14]"),
    ((EXAMPLES, -1), ValueError, "[0, 14]"),
    ((EXAMPLES, 2.0), ValueError, "got 2.0"),
    (([{"txt": "a", "label": "x"}], 1), ValueError, "no key(s) ['text']"),
    (([("a", "x", "y")], 1), TypeError, "(text, label) pair"),
    (([(3, "x")], 1), TypeError, "expected str"),
])
def test_select_demonstrations_errors(args, exc, match):
    with pytest.raises(exc, match=re.escape(match)):
        select_demonstrations(*args)


# -- contextual calibration (Zhao et al. 2021) ---------------------------------------------------
class _Table(prompting._PromptClassifier):
    """Raw label probabilities from a table: a biased 'model' that prefers label 'a'."""

    TABLE = {"N/A": [0.9, 0.1], "": [0.5, 0.5], "x": [0.8, 0.2], "y": [0.95, 0.05]}

    def __init__(self):
        super().__init__(None, {"a": "A", "b": "B"})

    def raw_scores(self, texts, batch_size=32):
        return np.log(np.array([self.TABLE[t] for t in texts]))


@pytest.mark.parametrize("content_free, p_cf, want", [
    ((), None, ["a", "a"]),                         # uncalibrated: always the biased label
    (["N/A"], [0.9, 0.1], ["b", "a"]),              # x: 0.8/0.9 < 0.2/0.1; y: 0.95/0.9 > 0.5
    (["N/A", ""], [0.7, 0.3], ["a", "a"]),          # a weaker prior: x 0.8/0.7 > 0.2/0.3
])
def test_contextual_calibration_divides_by_the_content_free_prior(content_free, p_cf, want):
    clf = _Table()
    got = clf.calibrate(content_free)
    if p_cf is None:
        assert got is None and clf.log_prior is None
    else:
        np.testing.assert_allclose(got, p_cf)
        np.testing.assert_allclose(clf.scores(["x"]), clf.raw_scores(["x"]) - np.log(p_cf))
    assert clf.predict(["x", "y"]) == want


def test_calibration_of_a_real_cloze_model_sums_to_one():
    clf = ClozeClassifier(mlm(), TOK, TEMPLATE, VERB)
    raw = clf.scores(TEXTS)
    p_cf = clf.calibrate()
    assert p_cf.shape == (len(VERB),) and abs(p_cf.sum() - 1) < 1e-6
    np.testing.assert_allclose(clf.scores(TEXTS), raw - np.log(p_cf), rtol=1e-6)
    clf.calibrate(())
    np.testing.assert_array_equal(clf.scores(TEXTS), raw)
