"""NER sentences longer than max_length: cut into word ranges, predictions put back whole."""
import numpy as np
import pytest

import minillm as mm
from minillm import datasets
from minillm.apps import tasks
from minillm.data import Collator


@pytest.mark.parametrize("words, tags, counts, room, expected", [
    # fits: one chunk
    ("abc", "OOO", [1, 1, 1], 5, [(0, 3)]),
    # no punctuation, no entity: as many words as fit
    ("abcde", "OOOOO", [1, 1, 1, 1, 1], 2, [(0, 2), (2, 4), (4, 5)]),
    # cut after the last punctuation word that fits
    ("a，bcde", "OOOOOO", [1] * 6, 4, [(0, 2), (2, 6)]),
    # never between the words of an entity: the cut moves before its B- word
    ("abcde", ["O", "O", "B-PER", "I-PER", "O"], [1] * 5, 3, [(0, 2), (2, 5)]),
    # an entity longer than the room is cut (nothing else fits)
    ("abcd", ["B-ORG", "I-ORG", "I-ORG", "I-ORG"], [1] * 4, 2, [(0, 2), (2, 4)]),
    # a word longer than the room is a chunk of its own
    (["ab", "cdefg", "h"], "OOO", [2, 5, 1], 3, [(0, 1), (1, 2), (2, 3)]),
    # sub-word counts, not words, fill the room
    ("abc", "OOO", [2, 2, 2], 4, [(0, 2), (2, 3)]),
])
def test_ner_chunks(words, tags, counts, room, expected):
    chunks = tasks.ner_chunks(list(words), list(tags), counts, room)
    assert chunks == expected
    assert [a for a, _ in chunks[1:]] == [b for _, b in chunks[:-1]]       # contiguous


class _TagOracle:
    """A stand-in model whose logits at each token name the tag its character stands for:
    a perfect tagger, so any F1 below 1 would be a bookkeeping error."""

    def __init__(self, tok, names, tag_of_char):
        self.logit = np.full((tok.vocab_size, len(names)), -5.0, dtype=np.float32)
        self.logit[:, names.index("O")] = 5.0
        for ch, tag in tag_of_char.items():
            self.logit[tok.encode(ch)[0]] = -5.0
            self.logit[tok.encode(ch)[0], names.index(tag)] = 5.0
        self.training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, input_ids, **_):
        return mm.tensor(self.logit[input_ids.numpy()])


def test_long_sentences_are_scored_whole():
    names = ["O", "B-PER", "I-PER"]
    tag_of_char = {"张": "B-PER", "三": "I-PER"}
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(12):
        words = list(rng.choice(list("张三好的，天"), size=int(rng.integers(5, 60))))
        tags = []
        for i, w in enumerate(words):       # gold tags are what the characters stand for
            t = tag_of_char.get(w, "O")
            if t == "I-PER" and (i == 0 or tags[-1] == "O"):
                words[i], t = "的", "O"
            tags.append(t)
        examples.append({"tokens": words, "tags": tags})
    assert sum(ex["tags"].count("B-PER") for ex in examples) > 10
    ds = datasets.Dataset(examples, names, "toy", "test")
    tok = tasks.build_tokenizer("ner", ds, "char")
    feats = tasks.encode_ner(ds, tok, names, max_length=8)
    assert len(feats) > len(ds) and max(len(f["input_ids"]) for f in feats) <= 8
    info = {"label_names": names}
    scores, pred = tasks.evaluate_features(_TagOracle(tok, names, tag_of_char), "ner", ds,
                                           feats, Collator(pad_id=tok.pad_id), info, 5)
    assert pred["gold"] == [ex["tags"] for ex in examples]
    assert [len(p) for p in pred["pred"]] == [len(ex["tokens"]) for ex in examples]
    assert scores["f1"] == 1.0
