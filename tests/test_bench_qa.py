"""minillm.apps.bench.qa: reading k retrieved paragraphs (the best span over all of them, checked
against a brute-force search over the model's own logits), the helpers, fact retrieval on a
toy knowledge base, and both benchmarks end to end in fast mode on the test device (keys,
ranges, files, a given reader reused).

SQuAD v1.1 and CMRC 2018 come from $MINILLM_DATA; a test whose file is missing is skipped.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import minillm as mm
from minillm import datasets
from minillm.apps import tasks
from minillm.apps.bench import qa
from minillm.data import CharTokenizer
from minillm.models import BERT, BertConfig
from minillm.models.heads import ModelForQuestionAnswering
from minillm.retrieval import BM25

DEVICE = os.environ.get("MINILLM_TEST_DEVICE", "cpu")
DATA = Path(os.environ.get("MINILLM_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "datasets")
FILES = {"squad_v1.1": "squad_v1.1/dev-v1.1.json", "cmrc2018": "cmrc2018/cmrc2018_dev.json"}
COMMON = {"benchmark", "version", "device", "seed", "fast", "settings", "anchor",
          "total_seconds"}


@pytest.fixture
def data_for(monkeypatch):
    def need(name):
        if not (DATA / FILES[name]).is_file():
            pytest.skip(f"{FILES[name]} not found under {DATA} (set MINILLM_DATA)")
        monkeypatch.setenv("MINILLM_DATA", str(DATA))
        monkeypatch.setenv("MINILLM_OFFLINE", "1")
    return need


# -- helpers -----------------------------------------------------------------------------------
def test_paragraph_collection_dedups_in_order():
    ex = [{"context": "b"}, {"context": "a"}, {"context": "b"}, {"context": "c"}]
    docs, gold = qa.paragraph_collection(ex)
    assert docs == ["b", "a", "c"] and gold == [0, 1, 0, 2]


@pytest.mark.parametrize("context,answer,start", [
    ("Ann was born in 1950. Bob in 19501.", "1950", 16),
    ("Bob in 19501. Ann was born in 1950.", "1950", 30),
    ("Paris is in France.", "Paris", 0),
    ("Parisian Paris", "Paris", 9),
    ("nothing here", "Paris", -1),
    ("Foo Corp is big.", "Foo Corp", 0),
])
def test_answer_span_whole_words(context, answer, start):
    assert qa.answer_span(context, answer) == start
    if start >= 0:
        assert context[start:start + len(answer)] == answer


TOY_FACTS = ["Ann Lee was born in Paris.", "Paris is a city in France.",
             "Bob Ray was born in Rome.", "Rome is a city in Italy.",
             "Ann Lee works for Acme Corp.", "Acme Corp is headquartered in Rome."]


@pytest.mark.parametrize("question,k,rounds,want", [
    ("Where was Ann Lee born?", 1, 1, [0]),
    ("In which country was Ann Lee born?", 1, 1, [0]),
    ("In which country was Ann Lee born?", 1, 2, [0, 1]),      # "paris" leads to France
    ("In which country was Bob Ray born?", 1, 2, [2, 3]),
    ("Which company does Ann Lee work for?", 2, 1, [4, 0]),
])
def test_retrieve_facts_one_and_two_rounds(question, k, rounds, want):
    bm25 = BM25().fit(TOY_FACTS)
    assert qa._retrieve_facts(bm25, TOY_FACTS, question, k, rounds) == want


# -- reading k paragraphs ----------------------------------------------------------------------
def _tiny_reader():
    docs = ["the cat sat on the mat near the door", "a dog ran in the park all day long",
            "birds sing at dawn", "fish swim deep in the cold dark sea"]
    questions = ["where did the cat sit", "who ran", "when do birds sing"]
    tok = CharTokenizer.train(docs + questions, special_tokens=tasks.SPECIALS)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ModelForQuestionAnswering.from_base(BERT(cfg)).eval()
    rng = np.random.default_rng(3)
    with mm.no_grad():
        for p in model.parameters():          # non-trivial logits (init gives tiny ones)
            p.copy_(mm.tensor(p.numpy() + 0.5 * rng.standard_normal(p.shape).astype(p.dtype)))
    info = {"max_length": 32, "doc_stride": 6, "max_query_length": 8, "max_answer_length": 5}
    return model, tok, info, questions, docs


def _brute_force(model, tok, info, question, doc_ids, docs):
    """The best span over every window of every paragraph, one window at a time."""
    best = (-np.inf, None)
    for d in doc_ids:
        ex = datasets.Dataset([{"id": "x", "question": question, "context": docs[d]}])
        for f in tasks.encode_qa(ex, tok, info["max_length"], info["doc_stride"],
                                 info["max_query_length"], with_answers=False):
            ids = mm.tensor(np.array([f["input_ids"]], dtype=np.int64))
            tt = mm.tensor(np.array([f["token_type_ids"]], dtype=np.int64))
            with mm.no_grad():
                s, e = model(ids, token_type_ids=tt)
            s, e = s.numpy()[0], e.numpy()[0]
            ctx = [i for i, o in enumerate(f["offsets"]) if o is not None]
            for i in ctx:
                for j in ctx:
                    if 0 <= j - i < info["max_answer_length"] and s[i] + e[j] > best[0]:
                        text = docs[d][f["offsets"][i][0]:f["offsets"][j][1]]
                        best = (s[i] + e[j], text)
    return best[1]


def test_read_passages_takes_the_best_span_over_all_paragraphs(float64):
    model, tok, info, questions, docs = _tiny_reader()
    lists = [[0, 1, 3], [2], [3, 0, 2, 1]]
    cache = {}
    got = qa.read_passages(model, tok, info, questions, lists, docs, batch_size=3, cache=cache)
    want = [_brute_force(model, tok, info, q, dl, docs) for q, dl in zip(questions, lists)]
    assert got == want
    assert all(a for a in got)
    # paragraphs longer than a window were read in several windows
    assert max(len(v) for v in cache.values()) >= 2
    # a subset of the cached pairs is answered from the cache, without running the model
    n = len(cache)
    sub = qa.read_passages(None, tok, info, questions, [dl[:1] for dl in lists], docs,
                           cache=cache)
    assert len(cache) == n
    assert sub == [_brute_force(model, tok, info, q, dl[:1], docs)
                   for q, dl in zip(questions, lists)]


def test_read_passages_answer_lies_in_one_paragraph(float64):
    model, tok, info, questions, docs = _tiny_reader()
    got = qa.read_passages(model, tok, info, questions, [[0, 1, 2, 3]] * 3, docs)
    for a in got:
        assert qa.JOIN not in a and any(a in d for d in docs)


# -- the benchmarks in fast mode ---------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["squad_v1.1", "cmrc2018"])
def test_fast_open_domain_qa(dataset, data_for, tmp_path, device):
    data_for(dataset)
    out = tmp_path / "odqa"
    r = qa.open_domain_qa(device=DEVICE, fast=True, progress=False, output_dir=out, log=None,
                          dataset=dataset)
    assert COMMON <= set(r) and r["benchmark"] == "open-domain-qa" and r["fast"] is True
    assert r["dataset"] == dataset and r["lang"] == ("zh" if dataset == "cmrc2018" else "en")
    test = datasets.load(dataset, split="test")
    assert r["n_documents"] == len({e["context"] for e in test})
    assert r["n_questions"] == qa.FAST_QUESTIONS
    for name in ("bm25", "tfidf"):
        rec = [r["retrieval"][name][f"recall@{k}"] for k in (1, 5, 20)]
        assert all(0 <= v <= 1 for v in rec) and rec == sorted(rec)
        curve = r["recall_curve"][name]
        assert len(curve) == 20 and curve == sorted(curve)
        assert curve[0] == rec[0] and curve[4] == rec[1] and curve[19] == rec[2]
    assert [row["k"] for row in r["rows"]] == [None, 1, 5]
    for row in r["rows"]:
        assert 0 <= row["exact_match"] <= row["f1"] <= 100
        assert row["questions"] == qa.FAST_QUESTIONS
    # the retrieval recall of a read row is the BM25 recall on the questions read
    assert r["rows"][1]["retrieval_recall"] == r["retrieval"]["bm25"]["recall@1"]
    assert r["rows"][2]["retrieval_recall"] == r["retrieval"]["bm25"]["recall@5"]
    assert r["reader"]["trained_here"] and Path(r["reader"]["path"]).is_dir()
    assert "minillm finetune --task qa" in r["reader"]["command"]
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["rows"] == r["rows"] and Path(r["plot"]).is_file()
    assert Path(r["plot"]).name == "open_domain_qa.png"
    assert mm.get_default_device() == device

    # the same reader given back: nothing trained, the same answers
    again = qa.open_domain_qa(device=DEVICE, fast=True, progress=False, log=None,
                              dataset=dataset, reader=r["reader"]["path"])
    assert again["reader"]["trained_here"] is False
    assert again["rows"] == r["rows"] and again["examples"] == r["examples"]
    # ... or its run folder (the output folder of `finetune --task qa`, which holds model/)
    run_folder = Path(r["reader"]["path"]).parent
    assert tasks.task_model_dir(run_folder) == Path(r["reader"]["path"])


def test_fast_open_domain_qa_reuses_its_reader(data_for, tmp_path):
    data_for("squad_v1.1")
    msgs = []
    for _ in range(2):
        r = qa.open_domain_qa(device=DEVICE, fast=True, progress=False, output_dir=tmp_path,
                              log=msgs.append)
    assert r["reader"]["reused"] is True
    assert any("reusing the reader" in m for m in msgs)


def test_fast_kb_qa(tmp_path, device):
    r = qa.kb_qa(device=DEVICE, fast=True, progress=False, output_dir=tmp_path, log=None)
    assert COMMON <= set(r) and r["benchmark"] == "kb-qa"
    test = datasets.load("kb_qa", split="test").examples[:qa.KB_FAST_QUESTIONS]
    assert r["n_facts"] == 464 and r["n_test"] == len(test)
    ret = r["retrieval"]["test"]
    n1 = sum(q["hops"] == 1 for q in test)
    assert ret["one_hop"]["questions"] == n1 and ret["two_hop"]["questions"] == len(test) - n1
    # one round of lexical retrieval finds the asked-about fact but not the bridge fact
    assert ret["one_hop"]["answer_in_context"] == 1.0
    assert ret["two_hop"]["facts_retrieved"] == 0.0
    missing = round(len(test) * (1 - ret["all"]["answer_in_context"]))
    assert r["not_in_context"]["test"] == missing
    assert r["test_retrieval_by_rounds"]["1"] == {k: v for k, v in ret.items()}
    two = r["test_retrieval_by_rounds"]["2"]
    assert two["two_hop"]["facts_retrieved"] >= ret["two_hop"]["facts_retrieved"]
    assert set(ret["by_relation"]) == {q["relation"] for q in test}
    rule, reader = r["rows"]
    assert rule["setting"].startswith("rule") and reader["setting"].startswith("reader")
    for row in r["rows"]:
        for part in (row, row["one_hop"], row["two_hop"]):
            assert 0 <= part["exact_match"] <= part["f1"] <= 100
    # the rule answers with the object of the top-1 fact: never a two-hop answer here
    assert rule["two_hop"]["exact_match"] == 0.0
    kb = datasets.load("kb_qa", split="test").meta["kb"]
    for ex in r["examples"]:
        assert ex["rule"] in {v for _, _, v in kb}
    assert (tmp_path / "kb_qa-data" / "train.json").is_file()
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["rows"] == r["rows"]
    assert Path(r["plot"]).is_file()
    assert mm.get_default_device() == device


@pytest.mark.parametrize("call,match", [
    (lambda: qa.open_domain_qa(dataset="trivia", fast=True, log=None), "dataset must be"),
    (lambda: qa.open_domain_qa(max_questions=0, fast=True, log=None), "max_questions"),
    (lambda: qa.kb_qa(k=0, fast=True, log=None), "k \\(facts per question\\)"),
    (lambda: qa.kb_qa(rounds=3, fast=True, log=None), "rounds must be 1 or 2"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_reader_that_is_not_a_model_directory_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(tasks.TaskError, match="not a fine-tuned model directory"):
        qa.open_domain_qa(fast=True, reader=str(tmp_path), output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    from minillm.apps import cli
    assert cli.main(["bench", "squad-odqa", "--fast", "--reader", str(tmp_path / "none"),
                     "--output-dir", str(tmp_path / "out")]) == 2
    assert "not a fine-tuned model directory" in capsys.readouterr().err
    assert cli.main(["bench", "ner", "--fast", "--reader", str(tmp_path)]) == 2
    assert "--reader does not apply to bench ner" in capsys.readouterr().err
