"""Batching and collators: DataLoader, padding, LM windows, MLM/NSP data, label alignment
and QA features, with small stand-in tokenizers that implement the tokenizer interface.

Tensors are read back only with ``.numpy()`` so the tests run on the strict fake device.
"""
import os
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm.data.batching import DataLoader, contiguous_stream, default_collate, random_windows
from minillm.data.collators import (Collator, MLMCollator, align_labels_with_tokens, encode_pair,
                                    encode_words, nsp_pairs, pad_collate, postprocess_qa,
                                    prepare_qa_features, token_classification_features)

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
DATA = Path(os.environ.get("MINILLM_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "datasets")


# -- stand-in tokenizers (the interface of minillm.data.tokenizers) -------------------------
class CharTokenizer:
    """One token per non-space character; ids hashed into a small vocabulary."""

    pad_id, unk_id, cls_id, sep_id, mask_id, bos_id, eos_id = 0, 1, 2, 3, 4, None, None
    vocab_size = 1000

    def _id(self, ch):
        return 5 + ord(ch) % 995

    def encode(self, text, add_special_tokens=False):
        ids = [self._id(c) for c in text if not c.isspace()]
        return [self.cls_id] + ids + [self.sep_id] if add_special_tokens else ids

    def encode_with_offsets(self, text):
        pairs = [(self._id(c), (i, i + 1)) for i, c in enumerate(text) if not c.isspace()]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class ChunkTokenizer(CharTokenizer):
    """Words split into pieces of at most 3 characters ("playing" -> pla yin g)."""

    def encode_with_offsets(self, text):
        ids, offsets, i = [], [], 0
        for word in text.split(" "):
            for k in range(0, len(word), 3):
                ids.append(5 + sum(map(ord, word[k:k + 3])) % 995)
                offsets.append((i + k, i + min(k + 3, len(word))))
            i += len(word) + 1
        return ids, offsets

    def encode(self, text, add_special_tokens=False):
        return self.encode_with_offsets(text)[0]


class SpaceCharTokenizer(CharTokenizer):
    """A character tokenizer that also encodes spaces as tokens."""

    def encode_with_offsets(self, text):
        return [self._id(c) for c in text], [(i, i + 1) for i in range(len(text))]


class SpacePrefixTokenizer(ChunkTokenizer):
    """Like GPT-2's byte-level BPE: a word's first piece includes the space before it."""

    pad_id = cls_id = sep_id = mask_id = None
    bos_id, eos_id = 1, 2

    def encode_with_offsets(self, text):
        ids, offsets = super().encode_with_offsets(text)
        return ids, [(s - 1, e) if s > 0 and text[s - 1] == " " else (s, e) for s, e in offsets]


def np_of(t):
    assert isinstance(t, mm.Tensor) and t.device == mm.device(DEVICE)
    return t.numpy()


# -- DataLoader -----------------------------------------------------------------------------
def test_dataloader_len_order_and_drop_last():
    data = list(range(10))
    assert len(DataLoader(data, 3)) == 4 and len(DataLoader(data, 3, drop_last=True)) == 3
    batches = [np_of(b).tolist() for b in DataLoader(data, 3)]
    assert batches == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [np_of(b).tolist() for b in DataLoader(data, 3, drop_last=True)][-1] == [6, 7, 8]
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(data, 0)


def test_dataloader_seeded_shuffle_per_epoch():
    data = list(range(50))
    a, b = DataLoader(data, 8, shuffle=True, seed=3), DataLoader(data, 8, shuffle=True, seed=3)
    epochs_a = [np.concatenate([np_of(x) for x in a]) for _ in range(3)]
    epochs_b = [np.concatenate([np_of(x) for x in b]) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        assert ea.tolist() == eb.tolist() and sorted(ea.tolist()) == data
    assert epochs_a[0].tolist() != epochs_a[1].tolist() != epochs_a[2].tolist()
    assert a.epoch == 3
    a.set_epoch(1)
    assert np.concatenate([np_of(x) for x in a]).tolist() == epochs_a[1].tolist()
    other = DataLoader(data, 8, shuffle=True, seed=4)
    assert np.concatenate([np_of(x) for x in other]).tolist() != epochs_a[0].tolist()


def test_dataloader_without_seed_follows_manual_seed():
    mm.manual_seed(11)
    a = DataLoader(list(range(30)), 30, shuffle=True)
    mm.manual_seed(11)
    b = DataLoader(list(range(30)), 30, shuffle=True)
    assert a.seed == b.seed and np_of(next(iter(a))).tolist() == np_of(next(iter(b))).tolist()


def test_default_collate_types():
    batch = default_collate([{"ids": [1, 2], "label": 1, "w": 0.5, "text": "a", "ok": True},
                             {"ids": [3, 4], "label": 0, "w": 1.5, "text": "b", "ok": False}])
    assert batch["ids"].dtype == np.int64 and np_of(batch["ids"]).tolist() == [[1, 2], [3, 4]]
    assert batch["label"].dtype == np.int64 and np_of(batch["label"]).tolist() == [1, 0]
    assert batch["w"].dtype == mm.get_default_dtype() and np_of(batch["w"]).tolist() == [0.5, 1.5]
    assert batch["text"] == ["a", "b"] and np_of(batch["ok"]).tolist() == [True, False]
    x, y = default_collate([(np.array([1, 2]), 5), (np.array([3, 4]), 6)])
    assert np_of(x).tolist() == [[1, 2], [3, 4]] and np_of(y).tolist() == [5, 6]
    tokens = default_collate([{"tokens": ["a", "b"]}, {"tokens": ["c"]}])
    assert tokens["tokens"] == [["a", "b"], ["c"]]
    with pytest.raises(ValueError, match=r"different lengths \[1, 2\].*Collator"):
        default_collate([{"ids": [1]}, {"ids": [1, 2]}])
    with pytest.raises(ValueError, match="same fields"):
        default_collate([{"a": 1}, {"b": 2}])


def test_dataloader_over_a_real_dataset_object():
    from minillm import datasets as D
    ds = D.load("dates", "validation")
    batch = next(iter(DataLoader(ds, 4)))
    assert batch["source"] == [e["source"] for e in ds[:4]]


# -- padding --------------------------------------------------------------------------------
def test_collator_pads_ids_mask_and_labels():
    batch = [{"input_ids": [5, 6, 7], "labels": [1, 2, 3], "token_type_ids": [0, 0, 1], "id": "a"},
             {"input_ids": [8], "labels": [4], "token_type_ids": [0], "id": "b"}]
    out = Collator(pad_id=0)(batch)
    assert np_of(out["input_ids"]).tolist() == [[5, 6, 7], [8, 0, 0]]
    assert np_of(out["attention_mask"]).tolist() == [[1, 1, 1], [1, 0, 0]]
    assert np_of(out["labels"]).tolist() == [[1, 2, 3], [4, -100, -100]]
    assert np_of(out["token_type_ids"]).tolist() == [[0, 0, 1], [0, 0, 0]]
    assert out["id"] == ["a", "b"] and out["input_ids"].dtype == np.int64
    left = Collator(pad_id=9, padding_side="left", pad_to_multiple_of=4)(batch)
    assert np_of(left["input_ids"]).tolist() == [[9, 5, 6, 7], [9, 9, 9, 8]]
    scalar = pad_collate([{"input_ids": [1, 2], "labels": 1}, {"input_ids": [3], "labels": 0}])
    assert np_of(scalar["labels"]).tolist() == [1, 0]
    assert np_of(pad_collate([[1], [2, 3]], pad_id=7)["input_ids"]).tolist() == [[1, 7], [2, 3]]
    seq2seq = pad_collate([{"input_ids": [1, 2, 3], "labels": [7]},
                           {"input_ids": [4], "labels": [8, 9]}])
    assert np_of(seq2seq["labels"]).tolist() == [[7, -100], [8, 9]]
    fixed = Collator(tokenizer=CharTokenizer(), pad_to=4)([[5]])
    assert np_of(fixed["input_ids"]).tolist() == [[5, 0, 0, 0]]
    with pytest.raises(ValueError, match="longer than pad_to=2"):
        Collator(pad_id=0, pad_to=2)([[1, 2, 3]])
    with pytest.raises(ValueError, match="needs a pad_id"):
        Collator(tokenizer=SpacePrefixTokenizer())


def test_collator_with_dataloader_on_token_classification():
    feats = token_classification_features(
        [{"tokens": ["playing", "go"], "tags": ["B-X", "O"]}, {"tokens": ["a"], "tags": ["O"]}],
        ChunkTokenizer(), ["O", "B-X", "I-X"])
    batch = next(iter(DataLoader(feats, 2, collate_fn=Collator(pad_id=0))))
    assert np_of(batch["labels"]).tolist() == [[-100, 1, -100, -100, 0, -100],
                                               [-100, 0, -100, -100, -100, -100]]
    assert batch["word_ids"] == [[None, 0, 0, 0, 1, None], [None, 0, None]]


# -- language-model batches -----------------------------------------------------------------
def test_random_windows_are_shifted_slices():
    data = np.arange(1000, 1500)
    x, y = random_windows(data, block_size=16, batch_size=8, seed=5)
    xs, ys = np_of(x), np_of(y)
    assert xs.shape == ys.shape == (8, 16) and x.dtype == np.int64
    starts = xs[:, 0] - 1000
    assert (starts >= 0).all() and (starts < 500 - 16).all()
    assert (xs == data[starts[:, None] + np.arange(16)]).all() and (ys == xs + 1).all()
    again = random_windows(data, 16, 8, seed=5)[0]
    assert (np_of(again) == xs).all()
    rng = np.random.default_rng(0)
    b1, b2 = random_windows(data, 16, 8, rng=rng)[0], random_windows(data, 16, 8, rng=rng)[0]
    assert not (np_of(b1) == np_of(b2)).all()
    on_device = random_windows(mm.tensor(data), 16, 8, seed=5)
    assert (np_of(on_device[0]) == xs).all() and (np_of(on_device[1]) == ys).all()
    with pytest.raises(ValueError, match="more than block_size=16"):
        random_windows(np.arange(16), 16, 2)


def test_random_windows_cover_every_start():
    data = np.arange(40)
    x, _ = random_windows(data, 8, 5000, seed=0)
    assert set(np_of(x)[:, 0].tolist()) == set(range(32))  # starts 0..len-block-1


def test_contiguous_stream_is_the_zaremba_layout():
    n, bsz, bptt = 1003, 4, 7
    data = np.arange(n)
    stream = contiguous_stream(data, bsz, bptt)
    batch_len = n // bsz
    assert len(stream) == (batch_len - 1) // bptt == 35
    xs, ys = zip(*[(np_of(x), np_of(y)) for x, y in stream])
    assert all(x.shape == (bsz, bptt) for x in xs)
    rows = np.concatenate(xs, axis=1)
    assert (rows == data[:bsz * batch_len].reshape(bsz, batch_len)[:, :35 * bptt]).all()
    assert all((y == x + 1).all() for x, y in zip(xs, ys))
    tail = list(contiguous_stream(data, bsz, bptt, drop_last=False))
    assert len(tail) == 36 and np_of(tail[-1][0]).shape == (bsz, (batch_len - 1) % bptt)
    tm = next(iter(contiguous_stream(data, bsz, bptt, time_major=True)))
    assert np_of(tm[0]).shape == (bptt, bsz) and (np_of(tm[0]) == xs[0].T).all()
    with pytest.raises(ValueError, match="too short for bptt=300"):
        contiguous_stream(data, bsz, 300)


# -- BERT pretraining data ------------------------------------------------------------------
def test_mlm_statistics_on_100k_tokens():
    tok = CharTokenizer()
    rng = np.random.default_rng(1)
    ids = rng.integers(5, tok.vocab_size, size=(100, 1000))
    ids[:, 0], ids[:, -1] = tok.cls_id, tok.sep_id
    coll = MLMCollator(tok, seed=0)
    corrupted, labels = coll.mask_tokens(ids)
    special = np.isin(ids, [tok.cls_id, tok.sep_id])
    chosen = labels != -100
    assert not (chosen & special).any() and (labels[chosen] == ids[chosen]).all()
    assert (corrupted[~chosen] == ids[~chosen]).all()
    n = (~special).sum()
    assert abs(chosen.sum() / n - 0.15) < 0.005
    masked = (corrupted == tok.mask_id) & chosen
    same = (corrupted == ids) & chosen
    replaced = chosen & ~masked & ~same
    k = chosen.sum()
    assert abs(masked.sum() / k - 0.80) < 0.01
    assert abs(replaced.sum() / k - 0.10) < 0.01
    assert abs(same.sum() / k - 0.10) < 0.01
    assert not np.isin(corrupted[replaced], [0, 1, 2, 3, 4]).any()
    again = MLMCollator(tok, seed=0).mask_tokens(ids)
    assert (again[0] == corrupted).all() and (again[1] == labels).all()


def test_mlm_collator_batch_leaves_padding_alone():
    tok = CharTokenizer()
    coll = MLMCollator(tok, mlm_probability=0.5, seed=1)
    out = coll([tok.encode("hello world", add_special_tokens=True), tok.encode("hi", True)])
    ids, labels, mask = np_of(out["input_ids"]), np_of(out["labels"]), np_of(out["attention_mask"])
    assert ids.shape == labels.shape == mask.shape == (2, 12)
    assert (ids[1, 4:] == tok.pad_id).all() and (labels[mask == 0] == -100).all()
    assert (labels != -100).any() and (labels[:, 0] == -100).all()
    with pytest.raises(ValueError, match="needs mask_id and vocab_size"):
        MLMCollator(pad_id=0)


def test_nsp_pairs():
    docs = [[f"d{d}s{i}" for i in range(20)] for d in range(60)]
    pairs = nsp_pairs(docs, seed=0)
    assert len(pairs) == 60 * 19
    frac = sum(p["is_next"] for p in pairs) / len(pairs)
    assert abs(frac - 0.5) < 0.04
    for p in pairs:
        da, ia = p["a"][1:].split("s")
        db, ib = p["b"][1:].split("s")
        if p["is_next"]:
            assert (db, int(ib)) == (da, int(ia) + 1) and p["next_sentence_label"] == 0
        else:
            assert db != da and p["next_sentence_label"] == 1
    assert nsp_pairs(docs, seed=0) == pairs and nsp_pairs(docs, seed=1) != pairs
    with pytest.raises(ValueError, match="at least two non-empty documents"):
        nsp_pairs([["a", "b"], []], seed=0)


def test_encode_pair_truncates_the_longer_side():
    tok = CharTokenizer()
    out = encode_pair(tok, "abcdef", "xy", max_length=8)
    assert out["input_ids"] == [2] + tok.encode("abc") + [3] + tok.encode("xy") + [3]
    assert out["token_type_ids"] == [0] * 5 + [1] * 3
    assert encode_pair(tok, [10, 11])["input_ids"] == [2, 10, 11, 3]


# -- token classification -------------------------------------------------------------------
ALIGN = [  # word_labels, word_ids, kwargs, expected
    ([1, 0], [None, 0, 0, 1, None], {}, [-100, 1, -100, 0, -100]),
    ([1, 0], [None, 0, 0, 1, None], {"label_all_tokens": True}, [-100, 1, 1, 0, -100]),
    ([1, 0], [0, 0, 1], {"label_all_tokens": True, "b_to_i": {1: 2}}, [1, 2, 0]),
    (["B-PER", "I-PER", "O"], [0, 0, 1, 1, 2], {"label_names": ["O", "B-PER", "I-PER"]},
     [1, -100, 2, -100, 0]),
    (["B-PER", "O"], [0, 0, 0, 1],
     {"label_names": ["O", "B-PER", "I-PER"], "label_all_tokens": True}, [1, 2, 2, 0]),
]


@pytest.mark.parametrize("labels,word_ids,kw,expected", ALIGN)
def test_align_labels_with_tokens(labels, word_ids, kw, expected):
    assert align_labels_with_tokens(labels, word_ids, **kw) == expected


def test_align_labels_needs_label_names_for_strings():
    with pytest.raises(ValueError, match="pass label_names"):
        align_labels_with_tokens(["B-PER"], [0])


@pytest.mark.parametrize("tok", [ChunkTokenizer(), SpacePrefixTokenizer()],
                         ids=["chunks", "space-prefix"])
def test_encode_words_offsets_and_per_word_agree(tok):
    words = ["Shakespeare", "wrote", "in", "Stratford"]
    ids, word_ids = encode_words(tok, words)
    assert word_ids == [0, 0, 0, 0, 1, 1, 2, 3, 3, 3]
    assert encode_words(tok, words, method="per_word")[1] == word_ids
    ids2, wid2 = encode_words(tok, words, add_special_tokens=True)
    first = tok.cls_id if tok.cls_id is not None else tok.bos_id
    assert ids2[0] == first and ids2[1:-1] == ids and wid2 == [None] + word_ids + [None]


def test_encode_words_drops_the_joining_spaces():
    ids, word_ids = encode_words(SpaceCharTokenizer(), ["江泽民", "发表", "讲话"])
    assert word_ids == [0, 0, 0, 1, 1, 2, 2] and ids == CharTokenizer().encode("江泽民发表讲话")


def test_token_features_on_peoples_daily_characters():
    from minillm import datasets as D
    ds = D.load("peoples_daily_ner", "validation")
    examples = [ex for ex in ds.examples[:200] if any(t != "O" for t in ex["tags"])]
    feats = token_classification_features(examples, CharTokenizer(), ds.label_names, max_length=64)
    for ex, f in zip(examples, feats):
        n = min(len(ex["tokens"]), 62)  # one token per character, [CLS] and [SEP] around
        assert len(f["input_ids"]) == n + 2 and f["input_ids"][0] == 2 and f["input_ids"][-1] == 3
        assert f["labels"][1:-1] == [ds.label_names.index(t) for t in ex["tags"][:n]]
        assert f["labels"][0] == f["labels"][-1] == -100


# -- QA features ----------------------------------------------------------------------------
CONTEXT = "The quick brown fox jumps over the lazy dog near the river bank."
QA = [{"id": "q1", "question": "Who jumps?", "context": CONTEXT,
       "answers": {"text": ["brown fox"], "answer_start": [CONTEXT.index("brown fox")]}},
      {"id": "q2", "question": "Where?", "context": CONTEXT,
       "answers": {"text": ["river bank"], "answer_start": [CONTEXT.index("river bank")]}}]


def _span_text(feat, example):
    s, e = feat["start_positions"], feat["end_positions"]
    return example["context"][feat["offsets"][s][0]:feat["offsets"][e][1]]


def test_qa_features_windows_and_positions():
    tok = CharTokenizer()
    stride = 8
    feats = prepare_qa_features(QA, tok, max_length=30, stride=stride, max_query_length=5)
    ctx_tokens = len(tok.encode(CONTEXT))  # 52 characters without spaces
    q1 = [f for f in feats if f["example_id"] == "q1"]
    room = 30 - 5 - 3
    assert all(len(f["input_ids"]) <= 30 for f in feats)
    assert q1[0]["input_ids"][:7] == [2] + tok.encode("Who jumps?")[:5] + [3]  # question cut to 5
    assert q1[0]["token_type_ids"] == [0] * 7 + [1] * (room + 1)
    # windows advance by room - stride and together cover the context
    firsts = [f["offsets"][7][0] for f in q1]
    assert len(q1) == 1 + -(-(ctx_tokens - room) // (room - stride))
    covered = {o for f in q1 for o in f["offsets"] if o is not None}
    assert len(covered) == ctx_tokens and firsts == sorted(firsts)
    shared = set(q1[0]["offsets"]) & set(q1[1]["offsets"]) - {None}
    assert len(shared) == stride  # consecutive windows share `stride` context tokens
    for f in feats:
        ex = QA[f["example_index"]]
        if f["start_positions"]:
            assert _span_text(f, ex) == ex["answers"]["text"][0]
        else:
            assert f["end_positions"] == 0
    assert sum(f["start_positions"] > 0 for f in q1) >= 1
    assert q1[-1]["start_positions"] == 0  # "brown fox" is not in the last window


def test_qa_postprocess_picks_the_best_span_across_windows():
    tok = CharTokenizer()
    feats = prepare_qa_features(QA, tok, max_length=30, stride=8, max_query_length=5)
    width = 32  # padded logits
    start, end = np.full((len(feats), width), -4.0), np.full((len(feats), width), -4.0)
    for i, f in enumerate(feats):
        if f["start_positions"]:
            start[i, f["start_positions"]] = 3.0 + i * 0.01
            end[i, f["end_positions"]] = 3.0
        start[i, 0] = end[i, 0] = 50.0  # CLS and the question are never answers
        start[i, 2] = end[i, 3] = 40.0
    pred = postprocess_qa(QA, feats, mm.tensor(start), end, max_answer_length=30)
    assert pred == {"q1": "brown fox", "q2": "river bank"}
    # a span longer than max_answer_length is not allowed: the best short span wins instead
    short = postprocess_qa(QA, feats, start, end, max_answer_length=3)
    assert all(len(v.replace(" ", "")) <= 3 for v in short.values())
    with pytest.raises(ValueError, match="one row per feature"):
        postprocess_qa(QA, feats, start[:1], end)


def test_qa_features_reject_misplaced_answers():
    bad = dict(QA[0], id="cmrc", answers={"text": ["brown fox"], "answer_start": [-1]})
    with pytest.raises(ValueError, match="'cmrc'.*fix_answer_starts=True"):
        prepare_qa_features([bad], CharTokenizer())
    no_answer = {k: v for k, v in QA[0].items() if k != "answers"}
    feats = prepare_qa_features([no_answer], CharTokenizer(), max_length=64, stride=16)
    assert "start_positions" not in feats[0]
    with pytest.raises(ValueError, match="stride=40 must be in"):
        prepare_qa_features(QA, CharTokenizer(), max_length=30, stride=40)
    gpt_style = prepare_qa_features(QA[:1], SpacePrefixTokenizer(), max_length=64, stride=16)
    ids = list(gpt_style[0]["input_ids"])          # no [CLS]/[SEP]: <bos> q <eos> c <eos>
    assert ids[0] == SpacePrefixTokenizer.bos_id and ids.count(SpacePrefixTokenizer.eos_id) == 2
    with pytest.raises(ValueError, match="needs a tokenizer with cls_id and sep_id"):
        prepare_qa_features(QA, type("NoEnds", (SpacePrefixTokenizer,),
                                     {"bos_id": None, "eos_id": None})())


def test_qa_features_on_cmrc2018(monkeypatch):
    if not (DATA / "cmrc2018" / "cmrc2018_dev.json").is_file():
        pytest.skip(f"CMRC 2018 not found at {DATA}")
    monkeypatch.setenv("MINILLM_DATA", str(DATA))
    monkeypatch.setenv("MINILLM_OFFLINE", "1")
    from minillm import datasets as D
    ds = D.load("cmrc2018", "test", fix_answer_starts=True)
    examples = ds.examples[:150]
    feats = prepare_qa_features(examples, CharTokenizer(), max_length=128, stride=32)
    assert len(feats) > len(examples)  # long Chinese contexts need several windows
    hits = [f for f in feats if f["start_positions"]]
    for f in hits:
        ex = examples[f["example_index"]]
        assert _span_text(f, ex).replace(" ", "") == ex["answers"]["text"][0].replace(" ", "")
    # every answer no longer than the overlap lies entirely inside some window
    tok = CharTokenizer()
    short = {i for i, e in enumerate(examples) if len(tok.encode(e["answers"]["text"][0])) <= 32}
    assert len(short) > 140 and short <= {f["example_index"] for f in hits}
    width = max(len(f["input_ids"]) for f in feats)
    start, end = np.zeros((len(feats), width)), np.zeros((len(feats), width))
    for i, f in enumerate(feats):
        if f["start_positions"]:
            start[i, f["start_positions"]] = end[i, f["end_positions"]] = 10.0
    pred = postprocess_qa(examples, feats, start, end, max_answer_length=64)
    exact = sum(pred[e["id"]] == e["answers"]["text"][0] for e in examples)
    assert exact >= 0.95 * len(examples)
