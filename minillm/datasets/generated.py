"""Data the project generates itself: seeded, deterministic, with answers a program can check.

* ``dates``: ISO dates -> English text, ``"2024-03-05" -> "March 5, 2024"`` (a small
  seq2seq "translation" task; :func:`date_to_text` is the reference).
* ``zh_numerals``: Arabic numerals -> Chinese numerals, ``"1234" -> "一千二百三十四"``
  (:func:`number_to_chinese` is the reference, :func:`chinese_to_number` the inverse).
* ``kb_qa``: a tiny knowledge base of invented entities as ``(entity, relation, value)``
  triples, with one- and two-hop questions and their answers.

Nothing is read from disk: the same seed gives the same data on every machine (only
:class:`random.Random` is used, whose streams are stable across Python versions).
"""
from __future__ import annotations

import datetime
import random

from .base import Dataset, DatasetError, seeded_split, split_sizes
from .registry import register

GEN_SPLITS = ("train", "validation", "test")
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]


def _take(items, split):
    n_train, n_val, _ = split_sizes(len(items))
    return {"train": items[:n_train], "validation": items[n_train:n_train + n_val],
            "test": items[n_train + n_val:]}[split]


def _check_size(n, minimum=10):
    if not isinstance(n, int) or n < minimum:
        raise DatasetError(f"n must be an int >= {minimum}, got {n!r}")


# -- dates --------------------------------------------------------------------------------
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)


def date_to_text(iso):
    """``"2024-03-05"`` -> ``"March 5, 2024"`` (raises ValueError on a bad date)."""
    d = datetime.date.fromisoformat(iso)
    return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"


@register("dates", GEN_SPLITS, "seq2seq: ISO date -> English date", "generated",
          "generated ISO dates 1900-2099 and their English form (no date in two splits)")
def dates(split="train", n=10000, seed=0):
    """Pairs ``{"source": "2024-03-05", "target": "March 5, 2024"}``: ``n`` distinct dates
    drawn between 1900-01-01 and 2099-12-31, split 80/10/10 (no date occurs twice)."""
    _check_size(n)
    days = (LAST_DAY - FIRST_DAY).days + 1
    if n > days:
        raise DatasetError(f"n={n} is more than the {days} dates available")
    chosen = random.Random(seed).sample(range(days), n)
    out = []
    for k in _take(chosen, split):
        iso = (FIRST_DAY + datetime.timedelta(days=k)).isoformat()
        out.append({"source": iso, "target": date_to_text(iso)})
    return Dataset(out, None, "dates", split)


# -- Chinese numerals ---------------------------------------------------------------------
ZH_DIGITS = "零一二三四五六七八九"
_SMALL = ["", "十", "百", "千"]
_BIG = ["", "万", "亿"]


def _section(n):
    """0 < n < 10000 in Chinese, with 零 for inner zeros (1004 -> 一千零四)."""
    out, zero = "", False
    for pos in (3, 2, 1, 0):
        d = n // 10 ** pos % 10
        if d == 0:
            zero = zero or bool(out)
        else:
            out += ("零" if zero else "") + ZH_DIGITS[d] + _SMALL[pos]
            zero = False
    return out


def number_to_chinese(n):
    """A non-negative integer below 10**12 in Chinese numerals (二, not 两).

    1234 -> 一千二百三十四, 10 -> 十, 15 -> 十五, 110 -> 一百一十, 1004 -> 一千零四,
    10010 -> 一万零一十, 100000 -> 十万, 10001000 -> 一千万一千, 100000001 -> 一亿零一.
    """
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 10 ** 12:
        raise ValueError(f"expected an int in [0, 10**12), got {n!r}")
    if n == 0:
        return "零"
    sections = []
    while n:
        sections.append(n % 10000)
        n //= 10000
    out, gap = "", False
    for i in reversed(range(len(sections))):
        sec = sections[i]
        if sec == 0:
            gap = gap or bool(out)
            continue
        if out and (gap or sec < 1000):
            out += "零"
        out += _section(sec) + _BIG[i]
        gap = False
    return out[1:] if out.startswith("一十") else out


def chinese_to_number(text):
    """The inverse of :func:`number_to_chinese` (also reads 两 and a leading 十)."""
    digits = {c: i for i, c in enumerate(ZH_DIGITS)}
    digits["两"] = 2
    small = {"十": 10, "百": 100, "千": 1000}
    total = section = digit = 0
    for ch in text:
        if ch in digits:
            digit = digits[ch]
        elif ch in small:
            section += (digit or 1) * small[ch]
            digit = 0
        elif ch == "万":
            total += (section + digit) * 10 ** 4
            section = digit = 0
        elif ch == "亿":
            total = (total + section + digit) * 10 ** 8
            section = digit = 0
        else:
            raise ValueError(f"{text!r}: {ch!r} is not a Chinese numeral character")
    return total + section + digit


def _random_number(rng, max_digits):
    """A number with 1..max_digits digits; each digit after the first is 0 with p=0.3,
    so that the 零 rules come up often."""
    k = rng.randint(1, max_digits)
    digits = [rng.randint(1, 9) if k > 1 else rng.randint(0, 9)]
    digits += [0 if rng.random() < 0.3 else rng.randint(1, 9) for _ in range(k - 1)]
    return int("".join(map(str, digits)))


@register("zh_numerals", GEN_SPLITS, "seq2seq: Arabic numerals -> Chinese numerals", "generated",
          "generated numbers below 10**8 and their Chinese numerals (no number in two splits)")
def zh_numerals(split="train", n=10000, seed=0, max_digits=8):
    """Pairs ``{"source": "1234", "target": "一千二百三十四"}`` for ``n`` distinct numbers
    with 1 to ``max_digits`` digits (uniform in length), split 80/10/10."""
    _check_size(n)
    if not 1 <= max_digits <= 12:
        raise DatasetError(f"max_digits must be in 1..12, got {max_digits!r}")
    available = 10 ** max_digits
    if n > available // 2:
        raise DatasetError(f"n={n} is too many distinct numbers for max_digits={max_digits}")
    rng, seen = random.Random(seed), {}
    while len(seen) < n:
        seen.setdefault(_random_number(rng, max_digits), None)
    out = [{"source": str(k), "target": number_to_chinese(k)} for k in _take(list(seen), split)]
    return Dataset(out, None, "zh_numerals", split)


# -- knowledge-base QA --------------------------------------------------------------------
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "kr", "st", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "", "n", "r", "l", "s", "m", "th"]
JOBS = ["teacher", "engineer", "doctor", "painter", "farmer", "pilot", "chef", "lawyer",
        "musician", "architect", "nurse", "writer"]

# relation -> question template (one hop)
QUESTIONS = {
    "born_in": "Where was {} born?",
    "occupation": "What does {} do for a living?",
    "born_year": "In what year was {} born?",
    "works_for": "Which company does {} work for?",
    "headquartered_in": "In which city is {} headquartered?",
    "founded_year": "In what year was {} founded?",
    "located_in": "Which country is {} in?",
    "capital": "What is the capital of {}?",
}
# (first relation, second relation) -> question template (two hops)
TWO_HOP = {
    ("born_in", "located_in"): "In which country was {} born?",
    ("works_for", "headquartered_in"): "In which city is the employer of {} headquartered?",
}
FACT_TEXT = {
    "born_in": "{} was born in {}.", "occupation": "{} works as a {}.",
    "born_year": "{} was born in the year {}.", "works_for": "{} works for {}.",
    "headquartered_in": "{} is headquartered in {}.", "founded_year": "{} was founded in {}.",
    "located_in": "{} is a city in {}.", "capital": "The capital of {} is {}.",
}


def _namer(rng):
    used = set()

    def name(syllables, suffix=""):
        while True:
            s = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                        for _ in range(syllables))
            s = s.capitalize() + suffix
            if s not in used and len(s) > 3:
                used.add(s)
                return s
    return name


def make_kb(seed=0, countries=8, cities_per_country=3, companies=16, people=100):
    """A list of ``(entity, relation, value)`` triples about invented entities (all names
    are made up, so a model cannot know the answers from pretraining)."""
    rng = random.Random(seed)
    name = _namer(rng)
    triples = []
    all_cities = []
    for _ in range(countries):
        country = name(2, "ia")
        cities = [name(2) for _ in range(cities_per_country)]
        all_cities += cities
        triples += [(c, "located_in", country) for c in cities]
        triples.append((country, "capital", rng.choice(cities)))
    firms = []
    for _ in range(companies):
        firm = name(2, " Corp")
        firms.append(firm)
        triples.append((firm, "headquartered_in", rng.choice(all_cities)))
        triples.append((firm, "founded_year", str(rng.randint(1850, 2020))))
    for _ in range(people):
        person = f"{name(2)} {name(2)}"
        triples += [(person, "born_in", rng.choice(all_cities)),
                    (person, "occupation", rng.choice(JOBS)),
                    (person, "born_year", str(rng.randint(1930, 2005))),
                    (person, "works_for", rng.choice(firms))]
    return triples


def kb_facts_text(triples):
    """The triples as English sentences, one per triple."""
    return [FACT_TEXT[r].format(e, v) for e, r, v in triples]


def kb_questions(triples):
    """Every one-hop question (one per triple) and every two-hop question, in KB order."""
    facts = {(e, r): v for e, r, v in triples}
    out = []
    for e, r, v in triples:
        out.append({"question": QUESTIONS[r].format(e), "answer": v, "subject": e,
                    "relation": r, "hops": 1})
        for (r1, r2), template in TWO_HOP.items():
            if r == r1 and (v, r2) in facts:
                out.append({"question": template.format(e), "answer": facts[(v, r2)],
                            "subject": e, "relation": f"{r1}/{r2}", "hops": 2})
    for i, q in enumerate(out):
        q["id"] = f"kbqa-{i:05d}"
    return out


@register("kb_qa", GEN_SPLITS, "question answering over a knowledge base", "generated",
          "invented entities: KB triples plus one- and two-hop questions")
def kb_qa(split="train", seed=0, people=100):
    """Questions ``{"id", "question", "answer", "subject", "relation", "hops"}``; the
    knowledge base (all splits share it) is ``ds.meta["kb"]`` (a list of triples) and
    ``ds.meta["facts"]`` (the same as sentences). Questions are split 80/10/10 (seeded)."""
    _check_size(people, 1)
    kb = make_kb(seed, people=people)
    questions = kb_questions(kb)
    idx = seeded_split(len(questions), seed, sort=False)[split]
    meta = {"kb": kb, "facts": kb_facts_text(kb)}
    return Dataset([questions[i] for i in idx], None, "kb_qa", split, meta)
