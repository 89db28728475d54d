"""Loaders for your own files, returning the same structures as the built-in datasets.

* :func:`load_text`  -> ``str``
* :func:`load_tsv` / :func:`load_csv` -> :class:`Dataset` of ``{"text", "label"}``
* :func:`load_conll` -> :class:`Dataset` of ``{"tokens", "tags"}``
* :func:`load_squad` -> :class:`Dataset` of SQuAD-style QA examples

A malformed line is a :class:`DataFormatError` naming the file and the line number. Files
are UTF-8, with or without a byte-order mark (Excel's "CSV UTF-8" writes one).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from .base import DataFormatError, Dataset, DatasetError
from .qa import check_answers, parse_squad_json


def _read(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, encoding="utf-8-sig", newline="") as f:     # a leading BOM is dropped
        try:
            return f.read()
        except UnicodeDecodeError as e:
            raise DataFormatError(path, None, f"not valid UTF-8 ({e})") from None


def load_text(path):
    """The whole file as one ``str`` (UTF-8; Windows line endings become ``\\n``)."""
    return _read(path).replace("\r\n", "\n")


def _column(spec, header, path, what):
    """Resolve a column given by index or (with a header) by name."""
    if isinstance(spec, int):
        return spec
    if header is None:
        raise DatasetError(f"{path}: {what}={spec!r} is a name but the file is read without a "
                           "header; pass a column index or header=True")
    if spec not in header:
        raise DatasetError(f"{path}: no column {spec!r} for {what}; columns: {header}")
    return header.index(spec)


def rows_to_dataset(rows, path, text_col, label_col, header, label_names, name):
    """Shared by TSV and CSV: ``rows`` yields ``(line_number, fields)``."""
    rows = iter(rows)
    head = None
    if header:
        try:
            _, head = next(rows)
        except StopIteration:
            raise DataFormatError(path, 1, "empty file, expected a header line") from None
    tcol = _column(text_col, head, path, "text_col")
    lcol = None if label_col is None else _column(label_col, head, path, "label_col")
    need = max(tcol, -1 if lcol is None else lcol) + 1
    texts, labels, lines = [], [], []
    for lineno, fields in rows:
        if len(fields) == 1 and not fields[0].strip():
            continue  # blank line
        if len(fields) < need or (head is not None and len(fields) != len(head)):
            expected = len(head) if head is not None else f"at least {need}"
            raise DataFormatError(path, lineno, f"expected {expected} columns, got "
                                                f"{len(fields)}: {fields!r}")
        texts.append(fields[tcol])
        labels.append(None if lcol is None else fields[lcol].strip())
        if labels[-1] == "":
            raise DataFormatError(path, lineno, f"the label (column {label_col!r}) is empty")
        lines.append(lineno)
    if lcol is None:
        return Dataset([{"text": t} for t in texts], None, name)
    names = list(label_names) if label_names is not None else sorted(set(labels))
    index = {n: i for i, n in enumerate(names)}
    examples = []
    for t, lab, lineno in zip(texts, labels, lines):
        if lab not in index:
            raise DataFormatError(path, lineno, f"label {lab!r} is not one of {names}")
        examples.append({"text": t, "label": index[lab]})
    return Dataset(examples, names, name)


def load_tsv(path, text_col=0, label_col=1, header=True, label_names=None):
    """A tab-separated file as ``{"text", "label"}`` examples.

    Columns are given by index or, with ``header=True``, by name. Fields are split on tabs
    only (no quoting, as in GLUE's files). Labels become ids into ``label_names`` (default:
    the sorted distinct label strings); ``label_col=None`` reads text only.
    """
    lines = _read(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows = ((i, line.rstrip("\r").split("\t")) for i, line in enumerate(lines, 1))
    return rows_to_dataset(rows, path, text_col, label_col, header, label_names,
                           Path(path).name)


def load_csv(path, text_col=0, label_col=1, header=True, label_names=None, delimiter=","):
    """A CSV file (standard quoting) as ``{"text", "label"}`` examples; see :func:`load_tsv`."""
    text = _read(path)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter, strict=True)

    def rows():
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataFormatError(path, reader.line_num, f"bad CSV: {e}") from None
            yield reader.line_num, fields if fields else [""]
    return rows_to_dataset(rows(), path, text_col, label_col, header, label_names,
                           Path(path).name)


def tag_order(tags):
    """Label names for a set of BIO tags: ``O`` first, then by type with B before I."""
    return sorted(set(tags), key=lambda t: (t != "O", t[2:], t[:2]))


def parse_conll(text, path, token_col=0, tag_col=-1):
    """Sentences of ``(tokens, tags)`` from CoNLL text: one token per line, columns
    separated by a tab (if the line has one) or by whitespace, a blank line (or a line
    of whitespace) between sentences. Every token line has the columns of the first one:
    ``New York B-LOC`` in a two-column file is an error, not the token ``New``."""
    sentences, tokens, tags = [], [], []
    width = first = None                 # the columns of the first token line, and its number
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        if line.startswith("-DOCSTART-"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        token, tag = _conll_token_and_tag(fields, line, lineno, path, token_col, tag_col)
        if width is None:
            width, first = len(fields), lineno
        elif len(fields) != width:
            raise DataFormatError(path, lineno, f"{len(fields)} columns where line {first} has "
                                                f"{width} (a token with a space in it needs "
                                                f"tab-separated columns): {line!r}")
        tokens.append(token)
        tags.append(tag)
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def _conll_token_and_tag(fields, line, lineno, path, token_col, tag_col):
    """The token and the BIO tag of one CoNLL line split into ``fields``."""
    try:
        token, tag = fields[token_col], fields[tag_col].strip()
    except IndexError:
        raise DataFormatError(path, lineno, f"expected a token and a tag column, got "
                                            f"{line!r}") from None
    if len(fields) < 2 or not token or not tag:
        raise DataFormatError(path, lineno, f"expected a token and a tag column, got "
                                            f"{line!r}")
    if token_col % len(fields) == tag_col % len(fields):
        raise DataFormatError(path, lineno, f"the token column ({token_col}) and the tag "
                                            f"column ({tag_col}) are the same column of "
                                            f"{line!r}")
    if tag != "O" and not (tag[:2] in ("B-", "I-") and len(tag) > 2):
        raise DataFormatError(path, lineno, f"tag {tag!r} is not O, B-TYPE or I-TYPE")
    return token, tag


def load_conll(path, token_col=0, tag_col=-1, label_names=None):
    """A CoNLL file as ``{"tokens", "tags"}`` sentences (tags are BIO strings).

    ``label_names`` fixes the tag order (an unknown tag is then an error); by default it
    is ``O`` followed by the tags found, grouped by type.
    """
    sentences = parse_conll(_read(path), path, token_col, tag_col)
    found = {t for _, tags in sentences for t in tags}
    names = list(label_names) if label_names is not None else tag_order(found)
    unknown = found - set(names)
    if unknown:
        raise DataFormatError(path, None, f"tags {sorted(unknown)} are not in label_names "
                                          f"{names}")
    examples = [{"tokens": toks, "tags": tags} for toks, tags in sentences]
    return Dataset(examples, names, Path(path).name)


def load_squad(path):
    """A SQuAD-format JSON file (v1.1 style) as QA examples; see :mod:`minillm.datasets.qa`.

    An ``answer_start`` outside its context (below -1, or too close to the end for the
    answer's text) is a :class:`DataFormatError`. One inside that points elsewhere than its
    answer, or -1 (CMRC 2018's "not located"), is kept and counted in
    ``meta["answers_not_at_start"]`` (:func:`~minillm.datasets.qa.fix_answer_starts`
    repairs those)."""
    text = _read(path)
    articles = parse_squad_json(text, path)
    examples = [ex for art in articles for ex in art]
    _check_answer_ranges(examples, path, text)
    meta = {"articles": len(articles), "answers": sum(len(e["answers"]["text"]) for e in examples),
            "answers_not_at_start": check_answers(examples)}
    return Dataset(examples, None, Path(path).name, meta=meta)


def _check_answer_ranges(examples, path, source):
    """Raise a DataFormatError for the first answer whose ``answer_start`` cannot be right
    (at the line of its question's ``"id"`` in the JSON ``source``, when it is found)."""
    for ex in examples:
        n = len(ex["context"])
        for k, (text, start) in enumerate(zip(ex["answers"]["text"],
                                              ex["answers"]["answer_start"])):
            if start != -1 and not 0 <= start <= n - len(text):
                found = re.search(r'"id"\s*:\s*"?' + re.escape(ex["id"]) + r'"?\s*[,}]', source)
                line = source.count("\n", 0, found.start()) + 1 if found else None
                raise DataFormatError(path, line, f"question {ex['id']!r}, answer {k} "
                                                  f"({text[:40]!r}): answer_start {start} is "
                                                  f"outside its context ({n} characters); it "
                                                  "is the answer's character offset in the "
                                                  "context, from 0")
