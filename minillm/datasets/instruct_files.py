"""Readers for your own instruction-tuning files: Alpaca records, chat transcripts, preferences.

* :func:`load_alpaca` -> :class:`Dataset` of ``{"instruction", "input", "output"[, "task"]}``
* :func:`load_chat` -> :class:`Dataset` of ``{"messages": [{"role", "content"}, ...]}``
* :func:`load_preferences` -> :class:`Dataset` of ``{"prompt", "chosen", "rejected"}``

Each reads a JSON file holding a list of records, or a JSON Lines file (one record per
line, blank lines skipped). The format follows the file name: ``*.jsonl`` and ``*.ndjson``
are JSON Lines, ``*.json`` is JSON; any other name is JSON if the whole file parses as a
JSON list, else JSON Lines. ``format="json"`` or ``"jsonl"`` overrides the name.

Nothing is coerced or silently dropped: a record that breaks a rule is a
:class:`DataFormatError` with one line naming the file, the line where the record starts
and the record number (records count from 1, messages from 0 as in Python), e.g.
``data.jsonl, line 7: record 7: field 'output' must be a string, got int``. Keys a reader
does not know are allowed but not kept; ``ds.meta["ignored_keys"]`` counts them by name.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import DataFormatError, Dataset, DatasetError
from .user import _read

JSONL_SUFFIXES = (".jsonl", ".ndjson")
ROLES = ("system", "user", "assistant")


class RecordError(DataFormatError):
    """A record that breaks a rule; ``record`` is its number (from 1)."""

    def __init__(self, path, lineno, record, message):
        self.record = record
        super().__init__(path, lineno, f"record {record}: {message}")


def _type_name(value):
    return "null" if value is None else type(value).__name__


def _file_format(path, format, text):
    if format is None:
        suffix = Path(path).suffix.lower()
        if suffix in JSONL_SUFFIXES + (".json",):
            return "json" if suffix == ".json" else "jsonl"
        try:
            return "json" if isinstance(json.loads(text), list) else "jsonl"
        except json.JSONDecodeError:
            return "jsonl"
    if format not in ("json", "jsonl"):
        raise DatasetError(f"format must be 'json', 'jsonl' or None, got {format!r}")
    return format


def _decode(text, path, line_offset=0):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = (" (one record per line? name the file *.jsonl or pass format='jsonl')"
                if e.msg == "Extra data" and not line_offset else "")
        raise DataFormatError(path, e.lineno + line_offset,
                              f"invalid JSON at column {e.colno}: {e.msg}{hint}") from None


def _json_list(text, path):
    """``(line, value)`` of each element of a top-level JSON list (lines from 1)."""
    data = _decode(text, path)
    if not isinstance(data, list):
        raise DataFormatError(path, 1, f"expected a JSON list of records, got a "
                              f"{_type_name(data)} (name a JSON Lines file *.jsonl)")
    decoder, pos, out = json.JSONDecoder(), text.index("[") + 1, []
    for _ in data:                      # the text is valid JSON: walk it for the lines
        while text[pos] in " \t\r\n,":
            pos += 1
        value, end = decoder.raw_decode(text, pos)
        out.append((text.count("\n", 0, pos) + 1, value))
        pos = end
    return out


def read_records(path, format=None):
    """``(format, [(line, record), ...])`` of a JSON list or JSON Lines file; invalid JSON
    is a :class:`DataFormatError` with the line and column, an empty file too."""
    text = _read(path).removeprefix("\ufeff")
    fmt = _file_format(path, format, text)
    if fmt == "json":
        items = _json_list(text, path)
    else:
        items = [(i, _decode(line, path, i - 1)) for i, line in
                 enumerate(text.split("\n"), 1) if line.strip()]
    if not items:
        raise DataFormatError(path, None, "no records")
    return fmt, items


def _string(rec, key, where, required=True, empty_ok=False, default=None):
    """``rec[key]`` checked to be a string (non-blank unless ``empty_ok``)."""
    if key not in rec:
        if required:
            raise where(f"missing field {key!r}")
        return default
    value = rec[key]
    if not isinstance(value, str):
        raise where(f"field {key!r} must be a string, got {_type_name(value)}")
    if not empty_ok and not value.strip():
        raise where(f"field {key!r} is empty")
    return value


def _note_ignored(rec, known, ignored):
    for key in rec:
        if key not in known:
            ignored[key] = ignored.get(key, 0) + 1


def _load(path, format, parse_record):
    """Read ``path`` and turn each record into an example with ``parse_record(value,
    where, ignored)``; ``where(message)`` builds the error for that record."""
    fmt, items = read_records(path, format)
    examples, ignored = [], {}
    for number, (lineno, value) in enumerate(items, 1):
        def where(message, lineno=lineno, number=number):
            return RecordError(path, lineno, number, message)
        examples.append(parse_record(value, where, ignored))
    meta = {"format": fmt, "records": len(examples),
            "ignored_keys": dict(sorted(ignored.items()))}
    return Dataset(examples, None, Path(path).name, meta=meta)


def _object(value, where, what="record"):
    if not isinstance(value, dict):
        raise where(f"expected a JSON object for the {what}, got {_type_name(value)}")
    return value


ALPACA_KEYS = ("instruction", "input", "output", "task")


def _alpaca_record(value, where, ignored):
    rec = _object(value, where)
    out = {"instruction": _string(rec, "instruction", where),
           "input": _string(rec, "input", where, required=False, empty_ok=True, default=""),
           "output": _string(rec, "output", where)}
    if "task" in rec:
        out["task"] = _string(rec, "task", where)
    _note_ignored(rec, ALPACA_KEYS, ignored)
    return out


def load_alpaca(path, format=None):
    """Alpaca-style instruction records ``{"instruction", "input", "output"}``.

    ``instruction`` and ``output`` are required non-blank strings; ``input`` is an
    optional string (default ``""``, may be empty); ``task`` an optional non-blank string,
    kept only when given. Other keys are not kept (counted in ``meta["ignored_keys"]``).
    """
    return _load(path, format, _alpaca_record)


def _message(msg, i, where, ignored):
    """Message ``i`` of a record, checked on its own (the order is checked after)."""
    def at(message):
        return where(f"messages[{i}]: {message}")
    msg = _object(msg, at, "message")
    role = _string(msg, "role", at)
    if role not in ROLES:
        raise at(f"role {role!r} is not one of {list(ROLES)}")
    content = _string(msg, "content", at)
    _note_ignored(msg, ("role", "content"), ignored)
    return {"role": role, "content": content}


def _check_turns(roles, where):
    """An optional system message first, then user/assistant turns ending with assistant."""
    start = 1 if roles[0] == "system" else 0
    if start == len(roles):
        raise where("a system message alone: expected user and assistant messages after it")
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            why = ("a system message is only allowed first" if roles[i] == "system"
                   else "user and assistant messages must alternate, starting with user")
            raise where(f"messages[{i}]: expected role {expected!r}, got {roles[i]!r} ({why})")
    if roles[-1] != "assistant":
        raise where(f"messages[{len(roles) - 1}]: the last message must be from the "
                    f"assistant, got {roles[-1]!r}")


def _chat_record(value, where, ignored):
    if isinstance(value, dict):
        if "messages" not in value:
            hint = (" (this looks like one message: a JSON file is a list of transcripts, "
                    "so wrap one transcript as [[...]])" if "role" in value else "")
            raise where(f"missing field 'messages'{hint}")
        _note_ignored(value, ("messages",), ignored)
        value = value["messages"]
    if not isinstance(value, list):
        raise where(f"expected a list of messages, got {_type_name(value)}")
    if not value:
        raise where("no messages")
    messages = [_message(m, i, where, ignored) for i, m in enumerate(value)]
    _check_turns([m["role"] for m in messages], where)
    return {"messages": messages}


def load_chat(path, format=None):
    """Chat transcripts: each record is ``{"messages": [...]}`` or a bare list of messages
    ``{"role", "content"}`` (non-blank strings). Roles: an optional ``system`` message
    first, then ``user`` and ``assistant`` alternating, starting with ``user`` and ending
    with ``assistant``. Errors name the record and the message, e.g. ``messages[2]``.
    Returns ``{"messages": [{"role", "content"}, ...]}`` records (other keys not kept).
    """
    return _load(path, format, _chat_record)


def _preference_record(value, where, ignored):
    rec = _object(value, where)
    out = {key: _string(rec, key, where) for key in ("prompt", "chosen", "rejected")}
    if out["chosen"] == out["rejected"]:
        raise where("'chosen' and 'rejected' are the same text")
    _note_ignored(rec, ("prompt", "chosen", "rejected"), ignored)
    return out


def load_preferences(path, format=None):
    """Preference pairs ``{"prompt", "chosen", "rejected"}`` (non-blank strings, ``chosen``
    different from ``rejected``), e.g. for DPO. Other keys are not kept."""
    return _load(path, format, _preference_record)
