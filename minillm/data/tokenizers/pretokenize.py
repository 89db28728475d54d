"""Pre-tokenization: cutting text into "words" before a subword model sees it.

Two pieces are shared by several tokenizers:

* :func:`gpt2_split` -- GPT-2's pre-tokenization pattern::

      's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

  It cuts text into contractions, runs of letters, runs of numbers and runs of other
  symbols, each optionally preceded by ONE space, plus whitespace runs. Python's ``re``
  module has no ``\\p{L}`` (Unicode letter) or ``\\p{N}`` (Unicode number) classes, so we
  use a trick: first map every character to a stand-in ASCII character of the same
  class (a letter becomes ``a``, a number ``0``, whitespace ``\\t``, anything else ``!``;
  ASCII letters, digits, the space and the apostrophe stay as they are, because the
  pattern needs them literally), then run the same pattern, written with ASCII classes,
  on that "class string". The class string has the same length as the text, so the
  match spans are spans of the original text. Classes follow the Unicode standard:
  letters are general categories ``L*``, numbers ``N*``, and whitespace is the
  ``White_Space`` property (which, unlike ``str.isspace``, excludes U+001C..U+001F).

* :func:`bytes_to_unicode` -- GPT-2's reversible map from the 256 byte values to 256
  printable Unicode characters, so that byte-level tokens can be stored as strings
  (``vocab.json``) without spaces or control characters in them.

``is_cjk`` tells whether a character is a CJK (Han) ideograph; the word and WordPiece
tokenizers treat those specially.
"""
import re
import unicodedata

# Characters with the Unicode White_Space property (what \s means in the `regex` module
# and in Oniguruma). str.isspace() also accepts U+001C..U+001F, which GPT-2 does not.
_WHITE_SPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                         + "".join(chr(c) for c in range(0x2000, 0x200B)))


def is_white_space(ch):
    """True for characters with the Unicode White_Space property."""
    return ch in _WHITE_SPACE


def char_class(ch):
    """The GPT-2 class of one character: 'L' letter, 'N' number, 'S' space, 'O' other."""
    if ch in _WHITE_SPACE:
        return "S"
    cat = unicodedata.category(ch)[0]
    if cat == "L":
        return "L"
    if cat == "N":
        return "N"
    return "O"


class _ClassMap(dict):
    """A ``str.translate`` table mapping each character to its stand-in, filled lazily."""

    _STAND_IN = {"L": "a", "N": "0", "S": "\t", "O": "!"}

    def __missing__(self, code):
        ch = chr(code)
        if ch.isascii() and (ch.isalnum() or ch in " '"):
            out = ch                      # the pattern needs these literally
        else:
            out = self._STAND_IN[char_class(ch)]
        self[code] = out
        return out


_CLASS_MAP = _ClassMap()

# GPT-2's pattern, on the class string: [A-Za-z] is \p{L}, [0-9] is \p{N}, [ \t] is \s.
_GPT2_ON_CLASSES = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)| ?[A-Za-z]+| ?[0-9]+| ?[^ \tA-Za-z0-9]+|[ \t]+(?![^ \t])|[ \t]+")


def gpt2_spans(text):
    """``(start, end)`` character spans of GPT-2's pre-tokens; they tile ``text`` exactly."""
    classes = text.translate(_CLASS_MAP)
    return [m.span() for m in _GPT2_ON_CLASSES.finditer(classes)]


def gpt2_split(text):
    """GPT-2 pre-tokenization: ``"Hello  world's!"`` -> ``['Hello', ' ', ' world', "'s", '!']``."""
    return [text[s:e] for s, e in gpt2_spans(text)]


def bytes_to_unicode():
    """GPT-2's byte -> character table (a dict of 256 entries).

    Printable Latin-1 bytes (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) map to themselves; the
    other 68 bytes (controls, space, ...) map to U+0100, U+0101, ... in byte order. So the
    space byte 0x20 becomes ``Ġ`` and the newline 0x0A becomes ``Ċ``.
    """
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def is_cjk(ch):
    """True for CJK unified/compatibility ideographs (the ranges BERT's tokenizer uses)."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)
