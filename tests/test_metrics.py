"""minillm.metrics against hand-computed cases (arithmetic in the comments) and edge cases.

Tensor inputs are built with ``mm.tensor`` on the test device, so the MINILLM_TEST_DEVICE=fake
run proves the metrics read tensors back explicitly with ``.numpy()``.
"""
import math
import warnings

import numpy as np
import pytest

import minillm as mm
from minillm import metrics as M

approx = pytest.approx


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("y_true, y_pred, kwargs, expected", [
    ([1, 2, 3, 4], [1, 2, 0, 4], {}, 3 / 4),                            # 3 of 4 equal
    (["cat", "dog", "dog"], ["cat", "cat", "dog"], {}, 2 / 3),          # string labels
    ([1, -100, 3, -100], [1, 5, 0, 7], {"ignore_index": -100}, 1 / 2),  # 2 kept, 1 right
    (np.array([True, False]), np.array([True, True]), {}, 1 / 2),
])
def test_accuracy_table(y_true, y_pred, kwargs, expected):
    assert M.accuracy(y_true, y_pred, **kwargs) == approx(expected)


def test_accuracy_accepts_tensors_on_any_device():
    t = mm.tensor(np.array([0, 1, 2, 2]))
    p = mm.tensor(np.array([0, 2, 2, 2]))
    assert M.accuracy(t, p) == approx(3 / 4)
    assert M.confusion_matrix(t, p).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]


@pytest.mark.parametrize("y_true, y_pred, kwargs, err, match", [
    ([], [], {}, ValueError, "empty"),
    ([1, 2], [1], {}, ValueError, "same length"),
    ([1, "a"], [1, 2], {}, TypeError, "mixes label types"),
    ([1, 2], ["1", "2"], {}, TypeError, "dtype"),
    (np.zeros((2, 2)), np.zeros((2, 2)), {}, ValueError, "1-D"),
    ("abc", "abd", {}, TypeError, "string"),
    ([-100, -100], [1, 2], {"ignore_index": -100}, ValueError, "nothing left"),
])
def test_accuracy_errors(y_true, y_pred, kwargs, err, match):
    with pytest.raises(err, match=match):
        M.accuracy(y_true, y_pred, **kwargs)


# ---------------------------------------------------------------------------------------------
# precision / recall / F1
# ---------------------------------------------------------------------------------------------
# y_true = [0, 0, 0, 1, 1, 2], y_pred = [0, 1, 0, 1, 2, 2]
# label 0: TP=2 pred=2 true=3 -> P=1,   R=2/3, F1=2*2/(2+3)=0.8
# label 1: TP=1 pred=2 true=2 -> P=1/2, R=1/2, F1=2*1/(2+2)=0.5
# label 2: TP=1 pred=2 true=1 -> P=1/2, R=1,   F1=2*1/(2+1)=2/3
# micro: TP=4, pred=6, true=6 -> 4/6 for all three (= accuracy)
# macro: P=(1+.5+.5)/3=2/3, R=(2/3+1/2+1)/3=13/18, F1=(.8+.5+2/3)/3=59/90
# weighted (support 3,2,1): P=(3+1+.5)/6=3/4, R=(2+1+1)/6=2/3, F1=(2.4+1+2/3)/6=61/90
YT = [0, 0, 0, 1, 1, 2]
YP = [0, 1, 0, 1, 2, 2]


@pytest.mark.parametrize("average, expected", [
    ("micro", (4 / 6, 4 / 6, 4 / 6)),
    ("macro", (2 / 3, 13 / 18, 59 / 90)),
    ("weighted", (3 / 4, 2 / 3, 61 / 90)),
])
def test_prf_averages_hand_computed(average, expected):
    p, r, f, s = M.precision_recall_f1(YT, YP, average=average)
    assert (p, r, f) == approx(expected)
    assert s is None                      # as scikit-learn: no support for an average


def test_prf_per_class_hand_computed():
    p, r, f, s = M.precision_recall_f1(YT, YP, average=None)
    assert p.tolist() == approx([1, 0.5, 0.5])
    assert r.tolist() == approx([2 / 3, 0.5, 1])
    assert f.tolist() == approx([0.8, 0.5, 2 / 3])
    assert s.tolist() == [3, 2, 1]


@pytest.mark.parametrize("y_true, y_pred, kwargs, expected", [
    # label 1 listed but never true nor predicted: P=R=F1=zero_division; label 0: all 1.
    ([0, 0], [0, 0], dict(labels=[0, 1], average=None, zero_division=0.0),
     ([1, 0], [1, 0], [1, 0], [2, 0])),
    ([0, 0], [0, 0], dict(labels=[0, 1], average=None, zero_division=1.0),
     ([1, 1], [1, 1], [1, 1], [2, 0])),
    # macro with zero_division=nan: the nan entries are left out -> mean over label 0 only = 1
    ([0, 0], [0, 0], dict(labels=[0, 1], average="macro", zero_division=float("nan")),
     (1, 1, 1, None)),
    # label 1 true once, never predicted: P = 0/0 -> zero_division; R = 0/1 = 0;
    # F1 = 2*0/(0+1) = 0 (NOT zero_division). label 0: TP=1 pred=2 true=1 -> .5, 1, 2/3
    ([0, 1], [0, 0], dict(average=None, zero_division=1.0),
     ([0.5, 1], [1, 0], [2 / 3, 0], [1, 1])),
    # labels restricts micro: label 0 TP1 pred1 true1; label 1 TP0 pred1 true1 -> 1/2
    ([0, 1, 2], [0, 2, 1], dict(labels=[0, 1], average="micro"), (0.5, 0.5, 0.5, None)),
    # weighted with no true sample of the listed labels: their plain mean (label 5 is never
    # true nor predicted, so every score is zero_division)
    ([0, 1], [0, 1], dict(labels=[5], average="weighted", zero_division=1.0), (1, 1, 1, None)),
])
def test_prf_zero_division_and_labels(y_true, y_pred, kwargs, expected):
    got = M.precision_recall_f1(y_true, y_pred, **kwargs)
    for g, e in zip(got, expected):
        if e is None:
            assert g is None
        else:
            assert np.asarray(g, dtype=float).tolist() == approx(e, nan_ok=True)


NAN = float("nan")
WEIGHTED_EDGE_CASES = [
    # label 0: P = 0/0 (nan, left out), R = 0/1; label 1: P = 0/1, R = 0/0 (nan), support 0.
    # Weighted P keeps only label 1, whose weight is 0: the plain mean of what is left -> 0
    ([0], [1], dict(zero_division=NAN), (0.0, 0.0, 0.0)),
    ([0], [1], dict(zero_division=1.0), (1.0, 0.0, 0.0)),
    ([0], [1], dict(zero_division=0.0), (0.0, 0.0, 0.0)),
    # label 2 predicted twice, never true: P = 0/2 is well defined, only R = 0/0
    ([0, 1], [2, 2], dict(labels=[2], zero_division=1.0), (0.0, 1.0, 0.0)),
    ([0, 1], [2, 2], dict(labels=[2], zero_division=0.0), (0.0, 0.0, 0.0)),
    ([0, 1], [2, 2], dict(labels=[2], zero_division=NAN), (0.0, NAN, 0.0)),
    # labels never true nor predicted: every score is zero_division
    ([0, 1], [0, 1], dict(labels=[5, 6], zero_division=0.0), (0.0, 0.0, 0.0)),
    ([0, 1], [0, 1], dict(labels=[5, 6], zero_division=NAN), (NAN, NAN, NAN)),
    # one label with support, one without: the weights decide
    ([0, 0], [0, 1], dict(zero_division=NAN), (1.0, 0.5, 2 / 3)),
    ([0, 0, 1], [1, 1, 1], dict(labels=[1, 2], zero_division=NAN), (1 / 3, 1.0, 0.5)),
]


@pytest.mark.parametrize("y_true, y_pred, kwargs, expected", WEIGHTED_EDGE_CASES)
def test_prf_weighted_edge_cases_match_sklearn(y_true, y_pred, kwargs, expected):
    got = M.precision_recall_f1(y_true, y_pred, average="weighted", **kwargs)
    assert list(got[:3]) == approx(expected, nan_ok=True)
    sk = pytest.importorskip("sklearn.metrics")
    ref = sk.precision_recall_fscore_support(y_true, y_pred, average="weighted", **kwargs)
    assert list(got[:3]) == approx(list(ref[:3]), nan_ok=True)


@pytest.mark.parametrize("y_true, y_pred, kwargs, expected", WEIGHTED_EDGE_CASES)
def test_classification_report_weighted_edge_cases_match_sklearn(y_true, y_pred, kwargs,
                                                                 expected):
    got = M.classification_report(y_true, y_pred, **kwargs)["weighted avg"]
    assert [got[k] for k in ("precision", "recall", "f1-score")] == approx(expected, nan_ok=True)
    sk = pytest.importorskip("sklearn.metrics")
    ref = sk.classification_report(y_true, y_pred, output_dict=True, **kwargs)["weighted avg"]
    assert [got[k] for k in ("precision", "recall", "f1-score", "support")] == \
        approx([ref[k] for k in ("precision", "recall", "f1-score", "support")], nan_ok=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(average="binary"), "average"),
    (dict(zero_division="warn"), "zero_division"),
    (dict(labels=[]), "labels is empty"),
    (dict(labels=[0, 0]), "duplicates"),
    (dict(labels=["a"]), "dtype"),
])
def test_prf_argument_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        M.precision_recall_f1(YT, YP, **kwargs)


def test_classification_report_dict_and_text():
    rep = M.classification_report(YT, YP, target_names=["neg", "neu", "pos"])
    assert list(rep) == ["neg", "neu", "pos", "accuracy", "macro avg", "weighted avg"]
    assert rep["neg"] == approx({"precision": 1.0, "recall": 2 / 3, "f1-score": 0.8, "support": 3})
    assert rep["accuracy"] == approx(4 / 6)
    assert rep["macro avg"]["f1-score"] == approx(59 / 90)
    assert rep["weighted avg"] == approx({"precision": 0.75, "recall": 2 / 3,
                                          "f1-score": 61 / 90, "support": 6})
    text = M.classification_report(YT, YP, output="text")
    lines = text.splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert lines[2].split() == ["0", "1.00", "0.67", "0.80", "3"]
    assert any(line.split() == ["accuracy", "0.67", "6"] for line in lines)
    # a label subset: "micro avg" replaces "accuracy" (scikit-learn's rule)
    sub = M.classification_report(YT, YP, labels=[0, 1])
    assert "accuracy" not in sub and "micro avg" in sub
    # micro over labels 0,1: TP=2+1=3, pred=2+2=4, true=3+2=5 -> P=3/4, R=3/5
    assert sub["micro avg"]["precision"] == approx(3 / 4)
    assert sub["micro avg"]["recall"] == approx(3 / 5)
    with pytest.raises(ValueError, match="target_names"):
        M.classification_report(YT, YP, target_names=["a"])


# ---------------------------------------------------------------------------------------------
# confusion matrix
# ---------------------------------------------------------------------------------------------
# rows = true, columns = predicted; YT/YP as above:
# true 0 -> pred 0,1,0 = [2,1,0]; true 1 -> pred 1,2 = [0,1,1]; true 2 -> pred 2 = [0,0,1]
CM = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("kwargs, expected", [
    ({}, CM),
    (dict(normalize="true"), [[2 / 3, 1 / 3, 0], [0, 1 / 2, 1 / 2], [0, 0, 1]]),   # row sums 3,2,1
    (dict(normalize="pred"), [[1, 1 / 2, 0], [0, 1 / 2, 1 / 2], [0, 0, 1 / 2]]),   # col sums 2,2,2
    (dict(normalize="all"), (np.array(CM) / 6).tolist()),
    # labels reorders and drops: pairs (t,p) with both in {2,0}: (0,0)x2, (2,2)x1
    (dict(labels=[2, 0]), [[1, 0], [0, 2]]),
    # label 7 never seen: its row/column stay 0, also after normalization (no nan)
    (dict(labels=[0, 7], normalize="true"), [[1, 0], [0, 0]]),
])
def test_confusion_matrix_table(kwargs, expected):
    cm = M.confusion_matrix(YT, YP, **kwargs)
    np.testing.assert_allclose(cm, np.array(expected, dtype=float))
    assert cm.dtype == (np.int64 if "normalize" not in kwargs else np.float64)


def test_confusion_matrix_strings_and_errors():
    cm = M.confusion_matrix(["猫", "狗", "狗"], ["猫", "狗", "猫"])
    # sorted labels: '狗' (U+72D7) < '猫' (U+732B); 狗 -> [狗 1, 猫 1]; 猫 -> [狗 0, 猫 1]
    assert cm.tolist() == [[1, 1], [0, 1]]
    with pytest.raises(ValueError, match="normalize"):
        M.confusion_matrix(YT, YP, normalize="rows")
    with pytest.raises(ValueError, match="empty"):
        M.confusion_matrix([], [])


def test_prf_and_confusion_matrix_match_sklearn_randomized():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(20):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 5))
        t, p = rng.integers(0, k, n), rng.integers(0, k, n)
        labels = None if trial % 2 else list(range(k + 1))
        for average in (None, "micro", "macro", "weighted"):
            for zd in (0.0, 1.0, float("nan")):
                ours = M.precision_recall_f1(t, p, average=average, labels=labels,
                                             zero_division=zd)
                ref = sk.precision_recall_fscore_support(t, p, average=average, labels=labels,
                                                         zero_division=zd)
                for a, b in zip(ours[:3], ref[:3]):
                    np.testing.assert_allclose(a, b, err_msg=f"{trial} {average} {zd}")
        np.testing.assert_array_equal(M.confusion_matrix(t, p, labels=labels),
                                      sk.confusion_matrix(t, p, labels=labels))


# ---------------------------------------------------------------------------------------------
# confusion-matrix plot
# ---------------------------------------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _plot_without_warnings(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = M.plot_confusion_matrix(*args, **kwargs)
    assert [str(w.message) for w in caught] == []
    return fig


def test_plot_confusion_matrix_fallback_without_cjk_font(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "find_cjk_font", lambda: None)
    path = tmp_path / "cm.png"
    cm = M.confusion_matrix(["猫", "狗", "cat"], ["猫", "狗", "猫"], labels=["猫", "狗", "cat"])
    fig = _plot_without_warnings(cm, ["猫", "狗", "cat"], path=path, title="混淆矩阵")
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["#0", "#1", "cat"]
    assert "labels shown as indices: no CJK font installed" in ax.get_title()
    assert ax.get_title().startswith("Confusion matrix")      # the Chinese title was replaced


def test_plot_confusion_matrix_latin_labels_and_normalized(tmp_path):
    path = tmp_path / "cm_norm.png"
    cm = M.confusion_matrix(YT, YP, normalize="true")
    fig = _plot_without_warnings(cm, ["neg", "neu", "pos"], path=str(path))
    assert path.read_bytes()[:8] == PNG_MAGIC
    ax = fig.axes[0]
    assert ax.get_title() == "Confusion matrix"
    assert "0.67" in [t.get_text() for t in ax.texts]          # 2/3 printed with 2 decimals


def test_plot_confusion_matrix_with_cjk_font(tmp_path):
    if M.find_cjk_font() is None:
        pytest.skip("no CJK font installed (the fallback is tested above)")
    fig = _plot_without_warnings(np.eye(2, dtype=int), ["猫", "狗"], path=tmp_path / "c.png",
                                 title="混淆矩阵")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["猫", "狗"]


def test_plot_confusion_matrix_shape_error():
    with pytest.raises(ValueError, match="square"):
        M.plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"])


# ---------------------------------------------------------------------------------------------
# perplexity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    ((0.0,), 1.0),                       # exp(0): a model certain of every token
    ((math.log(50.0),), 50.0),           # uniform over 50 tokens: NLL = ln 50 -> PPL 50
    ((10 * math.log(4.0), 10), 4.0),     # total NLL 10 ln 4 over 10 tokens -> exp(ln 4) = 4
    ((1e6,), math.inf),                  # overflow -> inf, explicitly
])
def test_perplexity_table(args, expected):
    assert M.perplexity(*args) == approx(expected)


def test_perplexity_accepts_tensors():
    assert M.perplexity(mm.tensor(np.float32(math.log(8.0)))) == approx(8.0, rel=1e-6)
    assert M.perplexity(mm.tensor(np.array(12 * math.log(3.0))), 12) == approx(3.0)


@pytest.mark.parametrize("args, match", [
    ((-1.0,), "negative log-likelihood"),
    ((1.0, 0), "positive integer"),
    ((1.0, 2.5), "positive integer"),
    ((float("nan"),), "nan"),
    (([1.0, 2.0],), "single number"),
])
def test_perplexity_errors(args, match):
    with pytest.raises(ValueError, match=match):
        M.perplexity(*args)


# ---------------------------------------------------------------------------------------------
# NER (conlleval / seqeval default semantics)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tags, entities", [
    (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 1), ("LOC", 3, 3)]),
    (["O", "I-PER", "I-PER"], [("PER", 1, 2)]),                    # I- after O starts one
    (["I-MISC"], [("MISC", 0, 0)]),                                # I- at sentence start
    (["I-PER", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 1)]),          # type switch: two entities
    (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2)]),
    (["B-PER", "B-PER"], [("PER", 0, 0), ("PER", 1, 1)]),          # B- B- same type: two
    (["B-PER", "O", "I-PER"], [("PER", 0, 0), ("PER", 2, 2)]),
    (["B-ORG", "I-ORG", "I-ORG"], [("ORG", 0, 2)]),
    (["S-PER", "B-LOC", "E-LOC", "I-LOC"], [("PER", 0, 0), ("LOC", 1, 2), ("LOC", 3, 3)]),
    (["B", "I", "O"], [("", 0, 1)]),                              # untyped tags
    (["O", "O"], []),
    ([], []),
])
def test_extract_entities_conlleval(tags, entities):
    assert M.extract_entities(tags) == entities


def test_ner_f1_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-PER"]]
    # gold: PER(s0,0-1) LOC(s0,3) ORG(s1,0)                          -> 3
    # pred: PER(s0,0-1)+ ORG(s0,3)- ORG(s1,0)+ PER(s1,1)-             -> 4, 2 correct
    # P = 2/4, R = 2/3, F1 = 2*2/(4+3) = 4/7
    res = M.ner_f1(gold, pred)
    assert (res["precision"], res["recall"], res["f1"]) == approx((1 / 2, 2 / 3, 4 / 7))
    # PER: gold 1, pred 2, correct 1 -> P 1/2, R 1, F1 2/3; LOC: gold 1, pred 0 -> P 0/0 -> 0,
    # R 0, F1 0; ORG: gold 1, pred 2, correct 1 -> like PER
    assert res["per_type"] == {
        "LOC": approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}),
        "ORG": approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}),
        "PER": approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}),
    }


def test_ner_f1_conlleval_i_after_o_counts_as_entity():
    # gold B-PER I-PER; pred O I-PER: pred entity PER(1,1) != gold PER(0,1) -> 0 correct
    res = M.ner_f1([["B-PER", "I-PER"]], [["O", "I-PER"]])
    assert (res["precision"], res["recall"], res["f1"]) == (0.0, 0.0, 0.0)
    # an I-PER-only prediction of the whole span is the same entity as B-PER I-PER
    res = M.ner_f1([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    assert res["f1"] == 1.0


def test_ner_f1_no_entities_zero_division():
    res = M.ner_f1([["O", "O"]], [["O", "O"]])
    assert (res["precision"], res["recall"], res["f1"], res["per_type"]) == (0.0, 0.0, 0.0, {})
    res = M.ner_f1([["O"]], [["O"]], zero_division=1.0)
    assert res["f1"] == 1.0


@pytest.mark.parametrize("gold, pred, err, match", [
    ([], [], ValueError, "empty"),
    ([["O"]], [["O"], ["O"]], ValueError, "1 gold sentences but 2"),
    ([["O", "O"]], [["O"]], ValueError, "sentence 0"),
    (["B-PER", "O"], ["B-PER", "O"], TypeError, "flat list"),
    ([["X-PER"]], [["O"]], ValueError, "bad tag"),
    ([["B-"]], [["O"]], ValueError, "bad tag"),
])
def test_ner_f1_errors(gold, pred, err, match):
    with pytest.raises(err, match=match):
        M.ner_f1(gold, pred)


# ---------------------------------------------------------------------------------------------
# extractive QA: SQuAD v1.1 (en) and CMRC 2018 (zh)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, normalized", [
    ("The Eiffel Tower", "eiffel tower"),
    ("Eiffel tower!", "eiffel tower"),
    ("  an apple   a day ", "apple day"),
    ("The theater", "theater"),                 # articles only as whole words
    ("Levi's Stadium", "levis stadium"),        # apostrophe removed, not split
])
def test_squad_normalize(text, normalized):
    assert M.squad_normalize(text) == normalized


@pytest.mark.parametrize("pred, golds, em, f1", [
    ("The Eiffel Tower", ["Eiffel tower!"], 1.0, 1.0),
    ("Denver Broncos", ["Denver Broncos", "Broncos"], 1.0, 1.0),
    # "broncos of denver" vs "denver broncos": common 2, P=2/3, R=1, F1=2*(2/3)/(5/3)=0.8
    ("the Broncos of Denver", ["Denver Broncos"], 0.0, 0.8),
    # max over golds: vs "santa clara california" common 2, P=1, R=2/3 -> F1 0.8; vs the first 0
    ("Santa Clara", ["Levi's Stadium", "Santa Clara, California"], 0.0, 0.8),
    # multiset overlap: "cat cat cat" vs "cat": common 1, P=1/3, R=1 -> F1=2*(1/3)/(4/3)=0.5
    ("the cat cat cat", ["cat"], 0.0, 0.5),
    ("Paris", "Paris.", 1.0, 1.0),               # a single string is one answer
    # both normalize to "": EM 1 but F1 0 (official v1.1 behaviour: common == 0 -> 0)
    ("the", ["a"], 1.0, 0.0),
])
def test_squad_em_f1(pred, golds, em, f1):
    assert M.exact_match(pred, golds) == em
    assert M.qa_f1(pred, golds) == approx(f1)


@pytest.mark.parametrize("pred, golds, em, f1", [
    ("北京大学。", ["北京大学"], 1.0, 1.0),            # Chinese full stop removed
    ("《红楼梦》", ["红楼梦"], 1.0, 1.0),              # book-title marks removed
    ("北京 大学", ["北京大学"], 1.0, 1.0),             # whitespace removed
    ("“你好！”", ["你好"], 1.0, 1.0),
    # [位 于 北 京 市] vs [北 京]: LCS 2, P=2/5, R=1, F1=2*(2/5)/(7/5)=4/7
    ("位于北京市", ["北京"], 0.0, 4 / 7),
    # order matters (longest common contiguous run): [京 北] vs [北 京]: LCS 1 -> P=R=1/2
    ("京北", ["北京"], 0.0, 0.5),
    # mixed segmentation: "GPT-2模型" -> [gpt2 模 型] (hyphen removed, run lower-cased)
    ("GPT-2模型", ["gpt2 模型"], 1.0, 1.0),
    # [2018 年 apple 公 司] vs [apple 公 司]: LCS 3, P=3/5, R=1, F1=2*(3/5)/(8/5)=0.75
    ("2018年，Apple公司", ["apple公司"], 0.0, 0.75),
    # max over golds: 0 for "上海", 1 for "北京"
    ("北京", ["上海", "北京，"], 1.0, 1.0),
])
def test_cmrc_em_f1(pred, golds, em, f1):
    assert M.exact_match(pred, golds, lang="zh") == em
    assert M.qa_f1(pred, golds, lang="zh") == approx(f1)


def test_mixed_segmentation():
    assert M.mixed_segmentation("GPT-2模型, 北京 大学!") == ["gpt2", "模", "型", "北", "京", "大", "学"]
    assert M.mixed_segmentation("New York（纽约）") == ["new", "york", "纽", "约"]


def test_qa_scores_dataset():
    # EM (1 + 0)/2 = 50 %; F1 (1 + 0.8)/2 = 90 %
    preds = ["Eiffel tower", "the Broncos of Denver"]
    refs = [["The Eiffel Tower"], ["Denver Broncos"]]
    assert M.qa_scores(preds, refs) == approx({"exact_match": 50.0, "f1": 90.0})
    by_id = M.qa_scores({"q2": preds[1], "q1": preds[0]}, {"q1": refs[0], "q2": refs[1]})
    assert by_id == approx({"exact_match": 50.0, "f1": 90.0})
    # zh: EM (1 + 0)/2, F1 (1 + 4/7)/2
    zh = M.qa_scores(["北京大学。", "位于北京市"], [["北京大学"], ["北京"]], lang="zh")
    assert zh == approx({"exact_match": 50.0, "f1": 100 * (1 + 4 / 7) / 2})


@pytest.mark.parametrize("call, err, match", [
    (lambda: M.qa_scores([], []), ValueError, "empty"),
    (lambda: M.qa_scores(["a"], [["a"], ["b"]]), ValueError, "1 predictions for 2"),
    (lambda: M.qa_scores({"q1": "a"}, {"q1": ["a"], "q2": ["b"]}), ValueError, "q2"),
    (lambda: M.qa_scores({"q1": "a"}, [["a"]]), TypeError, "both"),
    (lambda: M.qa_f1("a", []), ValueError, "no ground-truth"),
    (lambda: M.exact_match(None, ["a"]), TypeError, "string"),
    (lambda: M.exact_match("a", ["a"], lang="fr"), ValueError, "lang"),
])
def test_qa_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# BLEU
# ---------------------------------------------------------------------------------------------
THE7 = "the the the the the the the".split()
CAT_REFS = ["the cat is on the mat".split(), "there is a cat on the mat".split()]


def test_bleu_clipping_classic_example():
    # unigram "the": 7 in the hypothesis, at most 2 in one reference -> clipped p1 = 2/7.
    # c = 7, reference lengths 6 and 7 -> closest r = 7 -> BP = 1 -> BLEU-1 = 2/7
    d = M.bleu_details([CAT_REFS], [THE7], max_n=1)
    assert d["counts"] == [2] and d["totals"] == [7]
    assert (d["bleu"], d["bp"], d["ref_len"]) == approx((2 / 7, 1.0, 7))
    # bigram "the the": 6 in the hypothesis, 0 in the references -> p2 = 0 -> BLEU-2 = 0
    assert M.bleu([CAT_REFS], [THE7], max_n=2) == 0.0
    # smoothed (add one for n >= 2): p2 = (0+1)/(6+1) -> BLEU-2 = sqrt(2/7 * 1/7) = sqrt(2)/7
    assert M.bleu([CAT_REFS], [THE7], max_n=2, smooth=True) == approx(math.sqrt(2) / 7)


def test_bleu_papineni_example():
    hyp = ("It is a guide to action which ensures that the military always obeys the "
           "commands of the party").split()
    refs = ["It is a guide to action that ensures that the military will forever heed Party "
            "commands".split(),
            "It is the guiding principle which guarantees the military forces always being "
            "under the command of the Party".split(),
            "It is the practical guide for the army always to heed the directions of the "
            "party".split()]
    d = M.bleu_details([refs], [hyp])
    # clipped n-gram matches / hypothesis n-grams (18 tokens): 17/18, 10/17, 7/16, 4/15;
    # c = 18 = r (first reference) -> BP = 1; BLEU = (17/18 * 10/17 * 7/16 * 4/15) ** (1/4)
    assert d["counts"] == [17, 10, 7, 4] and d["totals"] == [18, 17, 16, 15]
    assert d["bp"] == 1.0
    expected = (17 / 18 * 10 / 17 * 7 / 16 * 4 / 15) ** 0.25
    assert d["bleu"] == approx(expected)
    assert d["bleu"] == approx(0.5045666840058485)       # NLTK's documented value
    assert M.sentence_bleu(refs, hyp) == d["bleu"]


@pytest.mark.parametrize("refs, hyps, max_n, expected", [
    # brevity: c = 2, r = 6, p1 = p2 = 1 -> BLEU = exp(1 - 6/2) = exp(-2)
    ([["the cat sat on the mat".split()]], [["the", "cat"]], 2, math.exp(-2)),
    # closest length tie (3 and 5 for c = 4): the shorter, 3 -> c > r -> BP = 1, p1 = 4/4
    ([["a b c".split(), "a b c d e".split()]], [["a", "b", "c", "d"]], 1, 1.0),
    # corpus-level sums, not a mean of sentences: p1 = (2 + 0)/(2 + 2) = 1/2, c = r = 4
    ([[["a", "b"]], [["x", "y"]]], [["a", "b"], ["c", "d"]], 1, 0.5),
    # an empty hypothesis contributes nothing; all empty -> 0
    ([[["a"]]], [[]], 1, 0.0),
])
def test_bleu_table(refs, hyps, max_n, expected):
    assert M.bleu(refs, hyps, max_n=max_n) == approx(expected)


@pytest.mark.parametrize("refs, hyps, match", [
    ([], [], "empty corpus"),
    ([[["a"]]], [["a"], ["b"]], "1 reference sets for 2"),
    ([[["a"]]], ["a b"], "tokenize first"),
    ([["a", "b"]], [["a", "b"]], "list of reference token lists"),
    ([[]], [["a"]], "no reference"),
])
def test_bleu_errors(refs, hyps, match):
    with pytest.raises((ValueError, TypeError), match=match):
        M.bleu(refs, hyps)
