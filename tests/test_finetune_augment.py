"""EDA text augmentation (SR, RI, RS, RD) for English and Chinese, and distributional
synonyms (PPMI + cosine) checked against a loop-by-loop reference.

Pure host-side text processing (no tensors), so the file runs the same on every test device.
"""
import math
from collections import Counter

import numpy as np
import pytest

from minillm.finetune.augment import (EDA, distributional_synonyms, random_deletion,
                                      random_insertion, random_swap, split_units,
                                      synonym_replacement)

SYN = {"good": ["great", "fine"], "movie": ["film", "picture"], "story": ["tale"],
       "很": ["非常"], "好": ["棒"], "电影": ["影片"], "天": ["日"]}
EN = "this is a good movie with a good story and a good cast".split()
ZH_CHARS = list("今天天气很好我们去看电影")
ZH_WORDS = "这 部 电影 很 好 我们 都 喜欢".split()
UNITS = {"en": EN, "zh-chars": ZH_CHARS, "zh-words": ZH_WORDS}


def is_subsequence(short, long):
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


# -- units ----------------------------------------------------------------------------------------
SPLITS = [
    ("a good  movie ", (["a", "good", "movie"], " ")),
    ("迈向 充满 希望 的 新 世纪", (["迈向", "充满", "希望", "的", "新", "世纪"], " ")),
    ("今天天气很好", (list("今天天气很好"), "")),
    ("hello", (["hello"], " ")),
    ("  ", ([], " ")),
]


@pytest.mark.parametrize("text,want", SPLITS)
def test_split_units_auto(text, want):
    assert split_units(text) == want


def test_split_units_callable():
    seg = lambda t: ["今天", "天气", "很", "好"]          # noqa: E731 - a word segmenter
    assert split_units("今天天气很好", seg) == (["今天", "天气", "很", "好"], "")
    assert split_units("a b", str.split) == (["a", "b"], " ")
    with pytest.raises(TypeError, match="list of non-empty strings"):
        split_units("abc", lambda t: "abc")
    with pytest.raises(ValueError, match="tokenize"):
        split_units("abc", "chars")


# -- the four operations: invariants ---------------------------------------------------------------
CASES = [(lang, n, seed) for lang in UNITS for n in (1, 2, 5) for seed in range(4)]


@pytest.mark.parametrize("lang,n,seed", CASES)
def test_synonym_replacement_invariants(lang, n, seed):
    units = UNITS[lang]
    out = synonym_replacement(units, n, SYN, np.random.default_rng(seed))
    assert len(out) == len(units)
    replaced = {}
    for old, new in zip(units, out):
        if new != old:
            assert old in SYN and new in SYN[old], (old, new)     # only listed synonyms
            replaced.setdefault(old, set()).add(new)
    having = {u for u in units if u in SYN}
    assert len(replaced) == min(n, len(having))                 # n distinct words (or all)
    for old, news in replaced.items():                          # every occurrence, one synonym
        assert len(news) == 1
        assert all(o != old or u in news for o, u in zip(units, out))
    assert units == UNITS[lang]                                 # input not modified


@pytest.mark.parametrize("lang,n,seed", CASES)
def test_random_insertion_invariants(lang, n, seed):
    units = UNITS[lang]
    out = random_insertion(units, n, SYN, np.random.default_rng(seed))
    assert len(out) == len(units) + n
    assert is_subsequence(units, out)
    added = Counter(out) - Counter(units)
    assert sum(added.values()) == n
    allowed = {s for u in units for s in SYN.get(u, [])}
    assert set(added) <= allowed


@pytest.mark.parametrize("lang,n,seed", CASES)
def test_random_swap_keeps_the_multiset(lang, n, seed):
    units = UNITS[lang]
    out = random_swap(units, n, np.random.default_rng(seed))
    assert Counter(out) == Counter(units) and len(out) == len(units)
    assert sum(a != b for a, b in zip(units, out)) <= 2 * n
    assert random_swap(["x"], 3, 0) == ["x"]


RD_CASES = [(lang, p, s) for lang in UNITS for p in (0.1, 0.5, 0.9, 1.0) for s in range(5)]


@pytest.mark.parametrize("lang,p,seed", RD_CASES)
def test_random_deletion_only_removes_and_never_empties(lang, p, seed):
    units = UNITS[lang]
    out = random_deletion(units, p, np.random.default_rng(seed))
    assert 1 <= len(out) <= len(units)
    assert is_subsequence(out, units)
    if p == 1.0:
        assert len(out) == 1


def test_random_deletion_rate_and_edges():
    units = [f"w{i}" for i in range(2000)]
    out = random_deletion(units, 0.3, np.random.default_rng(0))
    assert abs(len(out) / 2000 - 0.7) < 0.05                     # binomial: sd ~ 0.01
    assert random_deletion(units[:5], 0.0, 1) == units[:5]
    assert random_deletion(["solo"], 1.0, 1) == ["solo"]


def test_ops_are_deterministic_given_the_generator():
    for fn, args in ((synonym_replacement, (EN, 3, SYN)), (random_insertion, (EN, 3, SYN)),
                     (random_swap, (EN, 3)), (random_deletion, (EN, 0.3))):
        a = [fn(*args, np.random.default_rng(7)) for _ in range(2)]
        assert a[0] == a[1], fn.__name__
        assert fn(*args, 7) == a[0], fn.__name__                # an int seed works the same


def test_no_synonym_in_the_text_leaves_it_unchanged():
    units = ["no", "listed", "word"]
    assert synonym_replacement(units, 2, SYN, 0) == units
    assert random_insertion(units, 2, SYN, 0) == units


def test_synonym_equal_to_the_word_is_not_a_replacement():
    syn = {"a": ["a", "b"], "c": ["c"]}
    for seed in range(5):
        out = synonym_replacement(["a", "c", "a"], 2, syn, seed)
        assert out == ["b", "c", "b"]


# -- EDA ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,sep", [("this is a good movie with a good story", " "),
                                      ("这 部 电影 很 好 我们 都 喜欢", " "),
                                      ("今天天气很好我们去看电影", "")])
def test_eda_english_and_chinese(text, sep):
    eda = EDA(SYN, alpha_sr=0.2, alpha_ri=0.2, alpha_rs=0.2, p_rd=0.2, num_aug=8, seed=3)
    out = eda.augment(text)
    assert len(out) == 8 and all(isinstance(t, str) and t for t in out)
    units, _ = split_units(text)
    vocab = set(units) | {s for u in units for s in SYN.get(u, [])}
    for t in out:
        if sep:
            assert set(t.split(" ")) <= vocab
        else:
            assert " " not in t and set(t) <= set("".join(vocab))
    assert any(t != text for t in out)


def test_eda_is_deterministic_with_a_seed():
    texts = ["this is a good movie with a good story", "今天天气很好我们去看电影"]
    runs = [[EDA(SYN, seed=s).augment(t) for t in texts] for s in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


@pytest.mark.parametrize("alpha,length,n", [(0.3, 10, 3), (0.28, 10, 3), (0.1, 10, 1),
                                            (0.01, 10, 1), (0.5, 4, 2)])
def test_eda_operation_size(alpha, length, n):
    """n = max(1, round(alpha * l)): random insertion alone adds exactly n units."""
    text = " ".join(["good"] * length)
    eda = EDA(SYN, alpha_sr=0, alpha_ri=alpha, alpha_rs=0, p_rd=0, num_aug=3, seed=0)
    assert n == max(1, round(alpha * length))
    assert all(len(t.split()) == length + n for t in eda.augment(text))


def test_eda_uses_only_operations_that_can_change_the_text():
    eda = EDA(SYN, num_aug=5, seed=0)
    assert eda.augment("zzz") == ["zzz"] * 5                      # 1 unit, no synonym
    assert set(eda.augment("good")) <= {"great", "fine", "good great", "great good",
                                        "good fine", "fine good"}
    swap_only = EDA(alpha_sr=0, alpha_ri=0, p_rd=0, alpha_rs=0.5, num_aug=6, seed=1)
    for t in swap_only.augment("a b c d"):
        assert sorted(t.split()) == ["a", "b", "c", "d"]


def test_augment_dataset_copies_the_labels():
    data = [{"text": "this is a good movie", "label": 1, "id": 0},
            {"text": "今天天气很好", "label": 0, "id": 1}]
    eda = EDA(SYN, num_aug=3, seed=0)
    out = eda.augment_dataset(data)
    assert len(out) == 2 * (1 + 3)
    assert out[0] == data[0] and out[4] == data[1] and out[0] is not data[0]
    for ex in out[1:4]:
        assert ex["label"] == 1 and ex["id"] == 0 and set(ex) == {"text", "label", "id"}
    for ex in out[5:]:
        assert ex["label"] == 0 and ex["id"] == 1
    no_orig = EDA(SYN, num_aug=2, seed=0).augment_dataset(data, keep_original=False)
    assert len(no_orig) == 4 and [e["id"] for e in no_orig] == [0, 0, 1, 1]
    custom = EDA(SYN, num_aug=1, seed=0).augment_dataset([{"sentence": "a good movie", "y": 1}],
                                                         text_key="sentence")
    assert len(custom) == 2 and custom[1]["y"] == 1
    assert data[0]["text"] == "this is a good movie"              # input not modified


# -- distributional synonyms ----------------------------------------------------------------------
def reference_synonyms(texts, window, min_count, top_k):
    """Loop-by-loop PPMI + cosine (independent of the NumPy implementation).
    Returns {word: {neighbour: similarity}} of all positive similarities."""
    docs = [split_units(t)[0] for t in texts]
    counts = Counter(u for d in docs for u in d)
    vocab = [w for w in counts if counts[w] >= min_count]
    cooc = Counter()
    for d in docs:
        for i, w in enumerate(d):
            for j in range(max(0, i - window), min(len(d), i + window + 1)):
                if j != i and w in vocab and d[j] in vocab:
                    cooc[w, d[j]] += 1
    total = sum(cooc.values())
    row = Counter()
    for (w, _), n in cooc.items():
        row[w] += n
    vec = {w: {c: max(0.0, math.log(n * total / (row[w] * row[c])))
               for (w2, c), n in cooc.items() if w2 == w} for w in vocab}
    norm = {w: math.sqrt(sum(x * x for x in vec[w].values())) for w in vocab}
    sims = {}
    for a in vocab:
        sims[a] = {}
        for b in vocab:
            if a != b and norm[a] and norm[b]:
                s = sum(x * vec[b].get(c, 0.0) for c, x in vec[a].items()) / (norm[a] * norm[b])
                if s > 1e-9:
                    sims[a][b] = s
    return sims


def test_identical_contexts_are_top_neighbours():
    r = np.random.default_rng(0)
    texts = []
    for _ in range(60):
        animal, vehicle = r.choice(["cat", "dog"]), r.choice(["car", "bus"])
        texts.append(f"the {animal} eats food and sleeps")
        texts.append(f"a red {vehicle} drives on roads")
    syn = distributional_synonyms(texts, window=2, min_count=5, top_k=3)
    assert syn["cat"][0] == "dog" and syn["dog"][0] == "cat"
    assert syn["car"][0] == "bus" and syn["bus"][0] == "car"
    assert all(len(v) <= 3 for v in syn.values())


def test_antonyms_come_out_as_synonyms():
    """The pitfall the module docstring warns about: 好 and 差 share every context."""
    texts = [f"{start}很{w}" for start in ("这部电影", "今天天气") for w in ("好", "差") * 30]
    syn = distributional_synonyms(texts, min_count=5, top_k=2)
    assert syn["好"][0] == "差" and syn["差"][0] == "好"
    # fed to EDA, synonym replacement flips the sentiment while the label is copied
    eda = EDA({"好": syn["好"][:1]}, alpha_sr=1.0, alpha_ri=0, alpha_rs=0, p_rd=0, num_aug=1)
    flipped = eda.augment_dataset([{"text": "这部电影很好", "label": "positive"}])
    assert flipped[1] == {"text": "这部电影很差", "label": "positive"}


@pytest.mark.parametrize("window,min_count,top_k,seed", [(1, 1, 3, 0), (2, 2, 4, 1), (3, 1, 2, 2)])
def test_distributional_synonyms_match_a_loop_reference(window, min_count, top_k, seed):
    r = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(9)]
    p = np.linspace(2, 1, 9) / np.linspace(2, 1, 9).sum()
    texts = [" ".join(r.choice(words, size=r.integers(2, 8), p=p)) for _ in range(25)]
    got = distributional_synonyms(texts, window=window, min_count=min_count, top_k=top_k)
    ref = reference_synonyms(texts, window, min_count, top_k)
    assert set(got) == {w for w, s in ref.items() if s}
    for w, neighbours in got.items():
        want = sorted(ref[w].values(), reverse=True)[:top_k]
        have = [ref[w][n] for n in neighbours]                      # their true similarities
        np.testing.assert_allclose(have, want, rtol=1e-4, err_msg=w)


def test_vocabulary_limits():
    texts = ["a b c d"] * 5 + ["a b e"] * 3 + ["a f"]
    syn = distributional_synonyms(texts, min_count=4, top_k=5)
    assert set(syn) <= {"a", "b", "c", "d"}
    assert not any(w in {"e", "f"} for v in syn.values() for w in v)
    small = distributional_synonyms(texts, min_count=1, max_vocab=2)
    assert set(small) <= {"a", "b"} and all(set(v) <= {"a", "b"} for v in small.values())
    # windows never cross texts: x and y are only ever in different texts
    sep = distributional_synonyms(["x"] * 5 + ["y"] * 5 + ["x z"] * 5, min_count=1)
    assert "y" not in sep and "y" not in sep.get("x", []) + sep.get("z", [])


# -- errors ---------------------------------------------------------------------------------------
ERRORS = [
    (lambda: EDA(), ValueError, "synonyms="),
    (lambda: EDA({}), ValueError, "empty"),
    (lambda: EDA({"a": "b"}), TypeError, "list of non-empty strings"),
    (lambda: EDA(["a"]), TypeError, "dict"),
    (lambda: EDA(SYN, alpha_sr=1.5), ValueError, "alpha_sr"),
    (lambda: EDA(SYN, p_rd=-0.1), ValueError, "p_rd"),
    (lambda: EDA(SYN, num_aug=0), ValueError, "num_aug"),
    (lambda: EDA(SYN, tokenize="words"), ValueError, "tokenize"),
    (lambda: EDA(alpha_sr=0, alpha_ri=0, alpha_rs=0, p_rd=0), ValueError, "every operation"),
    (lambda: EDA(SYN).augment("   "), ValueError, "no units"),
    (lambda: EDA(SYN).augment(["a"]), TypeError, "str"),
    (lambda: EDA(SYN).augment_dataset([{"label": 1}]), ValueError, "text_key"),
    (lambda: EDA(SYN).augment_dataset(["a text"]), TypeError, "dict"),
    (lambda: synonym_replacement(EN, 1, None, 0), ValueError, "synonyms="),
    (lambda: random_insertion(EN, 1, {}, 0), ValueError, "synonyms="),
    (lambda: synonym_replacement("a good movie", 1, SYN, 0), TypeError, "list of str"),
    (lambda: random_swap(EN, -1, 0), ValueError, "n must be"),
    (lambda: random_deletion(EN, 2.0, 0), ValueError, "p must be"),
    (lambda: random_swap(EN, 1, "seed"), TypeError, "Generator"),
    (lambda: distributional_synonyms("one text"), TypeError, "list of str"),
    (lambda: distributional_synonyms(["a b"], min_count=5), ValueError, "min_count"),
    (lambda: distributional_synonyms(["a b"] * 9, window=0), ValueError, "window"),
    (lambda: distributional_synonyms(["a b", 3]), TypeError, r"texts\[1\]"),
]


@pytest.mark.parametrize("fn,exc,match", ERRORS, ids=[f"err{i}" for i in range(len(ERRORS))])
def test_errors(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()
