"""Generation benchmarks (minillm.apps.bench.generation): seq2seq translation and code completion.

The metrics are checked against small independent reimplementations (exact match, BLEU,
Dice overlap of character bigrams, line-completion scores), the stdlib corpus helpers on a
hand-made folder tree and on the real standard library (split by file, deterministic), and
both benchmarks run their real code path in fast mode on the test device, returning the
documented keys and writing results.json and a PNG plot.
"""
import hashlib
import json
import math
import os
import random
import re
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm import datasets
from minillm.apps.bench import generation as G
from minillm.data.tokenizers import CharTokenizer

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
COMMON_KEYS = {"benchmark", "version", "device", "seed", "fast", "settings", "anchor",
               "total_seconds"}


# -- independent reference implementations ---------------------------------------------------
def ref_tokens(text, unit):
    if unit == "words":                     # space out punctuation, then split on spaces
        return re.sub(r"([^\w\s])", r" \1 ", text).split()
    return list(text.replace(" ", ""))


def ref_bleu(refs, hyps, unit, max_n=4):
    """Papineni et al.'s corpus BLEU with one reference per hypothesis."""
    matches, totals, c, r = [0] * max_n, [0] * max_n, 0, 0
    for ref, hyp in zip(refs, hyps):
        R, H = ref_tokens(ref, unit), ref_tokens(hyp, unit)
        c, r = c + len(H), r + len(R)
        for n in range(1, max_n + 1):
            hg = Counter(tuple(H[i:i + n]) for i in range(len(H) - n + 1))
            rg = Counter(tuple(R[i:i + n]) for i in range(len(R) - n + 1))
            matches[n - 1] += sum((hg & rg).values())
            totals[n - 1] += max(len(H) - n + 1, 0)
    if c == 0 or min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(log_p)


def ref_dice(a, b):
    """Dice overlap of the bigram multisets of '^a$' and '^b$'."""
    ga = Counter(("\x02" + a + "\x03")[i:i + 2] for i in range(len(a) + 1))
    gb = Counter(("\x02" + b + "\x03")[i:i + 2] for i in range(len(b) + 1))
    return 2 * sum((ga & gb).values()) / (len(a) + 1 + len(b) + 1)


def _perturb(text, rng):
    """A copy of ``text`` with one character replaced, dropped or duplicated (or unchanged)."""
    k = rng.randrange(4)
    if k == 0 or not text:
        return text
    i = rng.randrange(len(text))
    if k == 1:
        return text[:i] + rng.choice("0123456789 ,一二三十百") + text[i + 1:]
    if k == 2:
        return text[:i] + text[i + 1:]
    return text[:i] + text[i] + text[i:]


# -- translation metrics -----------------------------------------------------------------------
@pytest.mark.parametrize("text, unit, tokens", [
    ("March 5, 2024", "words", ["March", "5", ",", "2024"]),
    ("  December 31,1999 ", "words", ["December", "31", ",", "1999"]),
    ("一千零四", "characters", ["一", "千", "零", "四"]),
    ("十 万", "characters", ["十", "万"]),
    ("", "words", []),
])
def test_bleu_tokens(text, unit, tokens):
    assert G.bleu_tokens(text, unit) == tokens == ref_tokens(text, unit)


@pytest.mark.parametrize("name, unit", [("dates", "words"), ("zh_numerals", "characters")])
def test_translation_scores_match_an_independent_computation(name, unit):
    assert G.TRANSLATION_SETS[name] == unit
    refs = [ex["target"] for ex in datasets.load(name, split="validation")[:200]]
    rng = random.Random(0)
    hyps = [_perturb(r, rng) for r in refs]
    got = G.translation_scores(refs, hyps, unit)
    em = sum(h == r for h, r in zip(hyps, refs)) / len(refs)
    assert 0.1 < em < 0.5                                  # some right, most wrong
    assert got["exact_match"] == pytest.approx(em, abs=1e-15)
    want = ref_bleu(refs, hyps, unit)
    assert 0.3 < want < 0.99
    assert got["bleu"] == pytest.approx(want, rel=1e-12) and got["bleu_unit"] == unit
    # perfect output: 1 and 1; an output with no 4-gram in common: BLEU 0
    assert G.translation_scores(refs, refs, unit)["bleu"] == pytest.approx(1.0, rel=1e-12)
    assert G.translation_scores(refs[:2], ["x", "y"], unit) == {
        "exact_match": 0.0, "bleu": 0.0, "bleu_precisions": [0.0, 0.0, 0.0, 0.0],
        "brevity_penalty": pytest.approx(math.exp(1 - sum(len(ref_tokens(r, unit))
                                                        for r in refs[:2]) / 2)),
        "bleu_unit": unit}


def test_translation_scores_reject_bad_input():
    with pytest.raises(ValueError, match="as many hypotheses"):
        G.translation_scores(["a"], ["a", "b"], "words")
    with pytest.raises(TypeError, match=r"hypotheses\[1\]"):
        G.translation_scores(["a", "b"], ["a", ["b"]], "words")
    with pytest.raises(ValueError, match="unit must be one of"):
        G.translation_scores(["a"], ["a"], "bytes")


# -- the nearest-neighbour baseline -----------------------------------------------------------
def test_nearest_neighbour_similarity_equals_brute_force():
    rng = random.Random(1)
    train = ["".join(rng.choice("0123-") for _ in range(rng.randint(1, 9))) for _ in range(40)]
    train += ["0100", "0010", "7", "1111111"]              # repeated bigrams, a single char
    queries = ["".join(rng.choice("01234-9") for _ in range(rng.randint(0, 9)))
               for _ in range(25)] + ["0100", "11", "9"]
    nn = G.NearestNeighbour().fit(train, [f"t{i}" for i in range(len(train))])
    sim = nn.similarity(queries)
    want = np.array([[ref_dice(q, t) for t in train] for q in queries])
    np.testing.assert_allclose(sim, want, rtol=1e-12, atol=0)
    # neighbours: an exact source first, otherwise the first most similar training pair
    got = nn.neighbours(queries, chunk=7)
    for q, j in zip(queries, got):
        expect = train.index(q) if q in train else int(np.argmax(want[queries.index(q)]))
        assert j == expect, q
    assert ref_dice("0010", "0100") == 1.0                 # a tie with another source ...
    assert nn.predict(["0010"]) == [f"t{train.index('0010')}"]     # ... yet exact


def test_nearest_neighbour_hand_example():
    nn = G.NearestNeighbour().fit(["2024-03-05", "1999-12-31", "1024-03-09"], ["A", "B", "C"])
    # 2024-03-06 shares 9 of its 11 bigrams with the first, 7 with the third
    np.testing.assert_allclose(nn.similarity(["2024-03-06"])[0, [0, 2]], [18 / 22, 14 / 22])
    assert nn.predict(["2024-03-06", "1999-12-30", "1999-12-31"]) == ["A", "B", "B"]


@pytest.mark.parametrize("name", ["dates", "zh_numerals"])
def test_nearest_neighbour_is_exact_on_training_pairs(name):
    train = datasets.load(name, split="train")[:1500]
    src, tgt = [p["source"] for p in train], [p["target"] for p in train]
    nn = G.NearestNeighbour().fit(src, tgt)
    assert nn.predict(src) == tgt
    sim = nn.similarity(src[:200])
    np.testing.assert_allclose(np.diag(sim[:, :200]), 1.0)       # identical: Dice 1, the max
    assert sim.max() <= 1.0 + 1e-12


# -- the stdlib corpus --------------------------------------------------------------------------
def _tree(root, files):
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def test_stdlib_files_on_a_hand_made_tree(tmp_path):
    _tree(tmp_path, {
        "b.py": "x = 1\n", "a.py": "", "notes.txt": "no",
        "pkg/__init__.py": "", "pkg/mod.py": "y = 2\n", "pkg/sub/deep.py": "z\n",
        "pkg/test/test_mod.py": "t\n", "pkg/tests/t.py": "t\n", "pkg/sub/tests/t.py": "t\n",
        "test/__init__.py": "", "test/test_x.py": "t\n",
        "idlelib/__init__.py": "", "idlelib/run.py": "r\n",
        "lib2to3/__init__.py": "", "site-packages/__init__.py": "", "site-packages/s.py": "",
        "scripts/tool.py": "not a package\n",
    })
    files = G.stdlib_files(tmp_path)
    want = [("a.py", 0), ("b.py", 6), ("pkg/__init__.py", 0), ("pkg/mod.py", 6),
            ("pkg/sub/deep.py", 2)]
    assert files == want
    lines = "".join(f"{p}\t{n}\n" for p, n in want)
    assert G.stdlib_fingerprint(files) == hashlib.sha256(lines.encode("utf-8")).hexdigest()
    assert G.stdlib_fingerprint(files[::-1]) == G.stdlib_fingerprint(files)
    assert G.stdlib_fingerprint(files[:-1] + [("pkg/sub/deep.py", 3)]) != \
        G.stdlib_fingerprint(files)
    with pytest.raises(ValueError, match="is not a directory"):
        G.stdlib_files(tmp_path / "missing")


def test_real_stdlib_is_split_by_file_and_deterministically():
    files = G.stdlib_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [p for p, _ in files]
    assert len(files) > 100 and paths == sorted(paths) and "os.py" in paths
    assert all(p.endswith(".py") for p in paths)
    assert not any(set(Path(p).parts[:-1]) & set(G.STDLIB_EXCLUDE) for p in paths)
    assert dict(files)["os.py"] == (root / "os.py").stat().st_size
    split = G.split_files(paths, seed=0)
    n = len(paths)
    assert len(split["validation"]) == len(split["test"]) == round(0.05 * n)
    assert len(split["train"]) == n - 2 * round(0.05 * n)
    sets = [set(v) for v in split.values()]
    assert sum(map(len, sets)) == n and set().union(*sets) == set(paths)   # disjoint, complete
    shuffled = list(paths)
    random.Random(3).shuffle(shuffled)
    assert G.split_files(shuffled, seed=0) == split            # input order does not matter
    other = G.split_files(paths, seed=1)
    assert other["test"] != split["test"]
    with pytest.raises(ValueError, match="at least 3 files"):
        G.split_files(["a.py", "b.py"])


def test_char_ids_equal_the_tokenizer():
    tok = CharTokenizer.train(["def f(x):\n    return x  # é"],
                              special_tokens={"pad": None, "bos": None, "eos": None})
    text = "def g(y):\n\treturn 'ü' + y  # é\n"
    np.testing.assert_array_equal(G._char_ids(text, tok), tok.encode(text))
    assert tok.unk_id in G._char_ids(text, tok).tolist()


# -- the line-completion task -------------------------------------------------------------------
def test_completion_lines_by_hand():
    head = "#" * 127 + "\n"                                # 128 characters of context
    text = head + "    x = compute(1, 2)\n" + "short\n" + "  \n" + "y = f(aaaa, bbbb)\n" + "end"
    lines = G.completion_lines([("m.py", text)], n=10, seed=0)
    first = {"file": "m.py", "start": 128, "split": 128 + 4 + 8,
             "prefix": "    x = comp", "reference": "ute(1, 2)"}
    start2 = 128 + 22 + 6 + 3
    second = {"file": "m.py", "start": start2, "split": start2 + 8,
              "prefix": "y = f(aa", "reference": "aa, bbbb)"}
    assert lines == [first, second]                # "short", a blank line, "end" (no \n) left out
    assert text[:first["split"]].endswith("x = comp")
    # one line fewer than min_context into the file: not a candidate
    assert [ln["start"] for ln in G.completion_lines([("m.py", text[1:])], 10)] == [start2 - 1]
    assert len(G.completion_lines([("m.py", text)] * 3, n=4, seed=1)) == 4
    with pytest.raises(ValueError, match="no line qualifies"):
        G.completion_lines([("m.py", "x = 1\n")], 5)


def test_completion_scores_by_hand():
    refs = ["abc", "hello", "xyz"]
    gens = ["abc\n", list("help\n"), "xyzw"]
    s = G.completion_scores(refs, gens)
    assert s["exact_match"] == pytest.approx(1 / 3)           # "xyzw": the line does not end
    assert s["char_accuracy"] == pytest.approx((3 + 3 + 3) / 11)
    assert s["n_lines"] == 3 and s["n_chars"] == 11
    assert G.completion_scores(["ab"], ["<unk>b\n"])["char_accuracy"] == 0.0
    assert G.completion_scores(["ab"], [["<unk>", "b", "\n"]])["char_accuracy"] == 0.5
    with pytest.raises(ValueError, match="as many completions"):
        G.completion_scores(["a"], [])


# -- both benchmarks in fast mode ---------------------------------------------------------------
from test_bench_quality import _finite_numbers  # noqa: E402  (the suite's checker)


def _check_files(result, tmp_path, name):
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["benchmark"] == name and saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert not list(tmp_path.glob(".results.json.*")), "a temporary file was left behind"
    png = Path(result["plot"])
    assert png.parent == tmp_path and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fast_translation(tmp_path, device):
    lines = []
    r = G.translation(device=DEVICE, fast=True, progress=False, output_dir=str(tmp_path),
                      log=lines.append)
    assert COMMON_KEYS <= set(r) and {"rows", "table", "datasets"} <= set(r)
    assert r["benchmark"] == "translation" and r["fast"] is True and lines
    assert r["version"] == mm.__version__ and mm.get_default_device() == device
    _finite_numbers(r)
    _check_files(r, tmp_path, "translation")
    assert [(row["dataset"], row["model"].split(",")[0]) for row in r["rows"]] == [
        (d, m) for d in ("dates", "zh_numerals")
        for m in ("nearest neighbour (char bigrams)", "Transformer", "Transformer")]
    kinds = ["nearest_neighbour", "greedy", "beam"]
    for i, row in enumerate(r["rows"]):
        assert set(row) >= {"dataset", "model", "exact_match", "bleu", "train_seconds",
                            "parameters", "bleu_unit"}
        assert 0 <= row["exact_match"] <= 1 and 0 <= row["bleu"] <= 1
        d = r["datasets"][row["dataset"]]
        assert row["bleu_unit"] == d["bleu_unit"] == G.TRANSLATION_SETS[row["dataset"]]
        refs, hyps = d["references"], d["predictions"][kinds[i % 3]]
        assert len(hyps) == len(refs) == d["n_test"] == r["settings"]["n_test"]
        em = sum(h == t for h, t in zip(hyps, refs)) / len(refs)
        assert row["exact_match"] == pytest.approx(em, abs=1e-15)
        assert row["bleu"] == pytest.approx(ref_bleu(refs, hyps, row["bleu_unit"]), rel=1e-12,
                                            abs=1e-15)
        neural = kinds[i % 3] != "nearest_neighbour"
        assert (row["parameters"] > 0) if neural else row["parameters"] is None
    for name, d in r["datasets"].items():
        test = datasets.load(name, split="test")[:d["n_test"]]
        assert d["references"] == [p["target"] for p in test]
        assert len(d["examples"]) == 5
        for e in d["examples"]:
            i = [p["source"] for p in test].index(e["source"])
            assert e["reference"] == test[i]["target"]
            assert e["greedy"] == d["predictions"]["greedy"][i]
        train = datasets.load(name, split="train")[:r["settings"]["n_train"]]
        nn = G.NearestNeighbour().fit([p["source"] for p in train], [p["target"] for p in train])
        assert d["predictions"]["nearest_neighbour"] == nn.predict([p["source"] for p in test])
        assert [e["step"] for e in d["evals"]] == [6, 12]
        assert d["best_step"] in (6, 12) and d["val_exact_match"] == max(
            e["val_exact_match"] for e in d["evals"])
    assert "| zh_numerals | Transformer, beam 4 |" in r["table"]
    assert r["table"] in G.format_generation("translation", r)
    with pytest.raises(KeyError, match="unknown benchmark"):
        G.format_generation("ptb-lstm", r)
    with pytest.raises(ValueError, match="datasets must be among"):
        G.translation(fast=True, datasets=("ptb",), log=None, progress=False)


def test_fast_code_completion(tmp_path, device):
    lines = []
    r = G.code_completion(device=DEVICE, fast=True, progress=False, output_dir=str(tmp_path),
                          log=lines.append)
    keys = ["python_version", "stdlib", "stdlib_sha256", "files", "train_chars", "val_chars",
            "test_chars", "vocab_size", "parameters", "train_seconds", "ms_per_iter",
            "val_loss", "test_loss", "val_bpc", "test_bpc", "test_perplexity", "ngram",
            "completion", "samples", "rows", "table", "history", "eval_history"]
    assert COMMON_KEYS <= set(r) and set(keys) <= set(r), set(keys) - set(r)
    assert r["benchmark"] == "code-completion" and r["fast"] is True and lines
    assert mm.get_default_device() == device
    _finite_numbers(r)
    _check_files(r, tmp_path, "code-completion")
    files = G.stdlib_files()
    assert r["stdlib_sha256"] == G.stdlib_fingerprint(files)
    f = r["files"]
    assert f["total"] == len(files) == f["train"] + f["validation"] + f["test"]
    assert 1 <= f["train_used"] <= f["train"] and 1 <= f["test_used"] <= f["test"]
    s = r["settings"]
    assert r["train_chars"] <= s["train_cap"] and r["test_chars"] <= s["eval_cap"]
    for loss, bpc in (("val_loss", "val_bpc"), ("test_loss", "test_bpc")):
        assert 0 < r[loss] < math.log(r["vocab_size"]) + 0.5
        assert r[bpc] == pytest.approx(r[loss] / math.log(2), rel=1e-12)
    assert r["test_perplexity"] == pytest.approx(math.exp(r["test_loss"]), rel=1e-12)
    ng = r["ngram"]
    assert [o["order"] for o in ng["orders"]] == list(s["ngram_orders"])
    assert ng["val_perplexity"] == min(o["val_perplexity"] for o in ng["orders"])
    assert ng["test_perplexity"] == pytest.approx(math.exp(ng["test_loss"]), rel=1e-12)
    assert ng["chars_scored"] == r["test_chars_scored"] == r["test_chars"] - 1
    c = r["completion"]
    assert c["n_lines"] == s["n_lines"]
    for who in ("gpt", "ngram"):
        assert 0 <= c[who]["exact_match"] <= 1 and 0 <= c[who]["char_accuracy"] <= 1
        assert c[who]["n_lines"] == s["n_lines"]
    for e in c["examples"]:
        assert len(e["reference"]) >= 5 and "\n" not in e["gpt"] + e["ngram"]
    assert len(r["samples"]) == 3
    assert all(len(x["sample"]) >= s["sample_chars"] for x in r["samples"])
    assert [row["model"].split(" ")[0] for row in r["rows"]] == ["GPT", "Kneser-Ney"]
    assert [e["iter"] for e in r["eval_history"]] == [0, 4, 8]       # every 4 steps, and last
    summary = G.format_generation("code-completion", r)
    assert r["stdlib_sha256"][:12] in summary and "fast mode" in summary and r["table"] in summary
