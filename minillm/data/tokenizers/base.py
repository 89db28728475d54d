"""The ``Tokenizer`` base class: vocabulary, special tokens, batching and saving.

A tokenizer turns text into a list of integer ids and back. Every tokenizer in minillm
has a vocabulary -- a list of token strings, where a token's position is its id -- and
some *special tokens* (padding, unknown, begin/end of sequence, ...). Subclasses only
say how text is cut into tokens (``_encode_with_offsets``) and how tokens are glued back
into text (``_decode``); everything else lives here:

* ``encode`` / ``decode`` / ``encode_with_offsets`` (with or without special tokens),
* ``encode_batch``: padding, truncation and attention masks for a batch of texts,
* ``save`` / ``load``: one UTF-8 JSON file that records the class, so
  ``Tokenizer.load(path)`` gives back a tokenizer of the right subclass.

Special tokens are never recognised inside the input text: ``encode("<eos>")`` encodes
the five characters; special tokens enter a sequence only through
``add_special_tokens=True`` (or by using the id properties such as ``eos_id``). Adding
special tokens puts ``[CLS] ... [SEP]`` around the text when the tokenizer has both
``cls`` and ``sep`` tokens (BERT style), otherwise ``<bos> ... <eos>`` (whichever of the
two exist). Special tokens have the empty offset ``(0, 0)``.
"""
import json
import os

import numpy as np

from ..._fileio import make_temp_file
from ...autograd import tensor as _tensor

FORMAT = "minillm.tokenizer"
FORMAT_VERSION = 1

# The names a special token can have; each gets an id property (``pad_id``, ...).
SPECIAL_NAMES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be loaded (wrong format, version or class)."""


def check_texts(texts, where):
    """Materialise ``texts`` as a list of strings, refusing a bare string."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{where}: texts must be an iterable of strings (e.g. a list of lines), "
                        f"not a single {type(texts).__name__}; wrap it in a list: [text]")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{where}: texts[{i}] is a {type(t).__name__}, expected str")
        out.append(t)
    return out


def check_special_tokens(special_tokens, where):
    """Validate a ``{name: token string}`` dict (``None`` values drop that special token)."""
    if not isinstance(special_tokens, dict):
        raise TypeError(f"{where}: special_tokens must be a dict name -> token string, e.g. "
                        f"{{'pad': '<pad>', 'unk': '<unk>'}}; got {type(special_tokens).__name__}")
    out = {}
    for name, tok in special_tokens.items():
        if name not in SPECIAL_NAMES:
            raise ValueError(f"{where}: unknown special token name {name!r}; the names are "
                             f"{', '.join(SPECIAL_NAMES)}")
        if tok is None:
            continue
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"{where}: special token {name!r} must be a non-empty string, "
                             f"got {tok!r}")
        out[name] = tok
    return out


def merge_special_tokens(defaults, special_tokens, where):
    """The class defaults updated by the user's dict (a name mapped to None is dropped)."""
    if special_tokens is None:
        return dict(defaults)
    check_special_tokens(special_tokens, where)          # validates names and values
    merged = dict(defaults)
    merged.update(special_tokens)
    return {k: v for k, v in merged.items() if v is not None}


def special_tokens_first(special_tokens):
    """Distinct special token strings in ``SPECIAL_NAMES`` order (they get the first ids)."""
    out = []
    for name in SPECIAL_NAMES:
        tok = special_tokens.get(name)
        if tok is not None and tok not in out:
            out.append(tok)
    return out


class Tokenizer:
    """Base class of all minillm tokenizers (see the module docstring).

    Subclasses set ``DEFAULT_SPECIAL_TOKENS`` and implement ``train``,
    ``_encode_with_offsets(text) -> (ids, offsets)``, ``_decode(ids) -> str`` (ids without
    special tokens) and, when they have more state than the vocabulary,
    ``_config()`` / ``_from_config(...)``.
    """

    DEFAULT_SPECIAL_TOKENS = {}
    _registry = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        Tokenizer._registry[cls.__name__] = cls

    def __init__(self, vocab, special_tokens=None):
        name = type(self).__name__
        vocab = list(vocab)
        if not vocab:
            raise ValueError(f"{name}: the vocabulary is empty; train it on a non-empty corpus "
                             f"or pass a list of token strings")
        token_to_id = {}
        for i, tok in enumerate(vocab):
            if not isinstance(tok, str) or tok == "":
                raise ValueError(f"{name}: vocabulary entry {i} is {tok!r}; tokens are "
                                 f"non-empty strings")
            if tok in token_to_id:
                raise ValueError(f"{name}: token {tok!r} appears twice in the vocabulary "
                                 f"(ids {token_to_id[tok]} and {i})")
            token_to_id[tok] = i
        specials = check_special_tokens(special_tokens or {}, name)
        for sname, tok in specials.items():
            if tok not in token_to_id:
                raise ValueError(f"{name}: special token {sname}={tok!r} is not in the "
                                 f"vocabulary")
        self._id_to_token = vocab
        self._token_to_id = token_to_id
        self.special_tokens = specials
        self._special_ids = frozenset(token_to_id[t] for t in specials.values())

    # ----------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self):
        """Number of tokens (ids are ``0 .. vocab_size - 1``)."""
        return len(self._id_to_token)

    def __len__(self):
        return len(self._id_to_token)

    def get_vocab(self):
        """A copy of the vocabulary as a ``{token: id}`` dict."""
        return dict(self._token_to_id)

    def token_to_id(self, token):
        """The id of ``token``, or ``None`` when it is not in the vocabulary."""
        return self._token_to_id.get(token)

    def id_to_token(self, i):
        """The token string of id ``i`` (IndexError when out of range)."""
        self._check_id(i)
        return self._id_to_token[i]

    def _check_id(self, i):
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"{type(self).__name__}: token ids are ints, got "
                            f"{type(i).__name__} {i!r}")
        if not 0 <= i < len(self._id_to_token):
            raise IndexError(f"{type(self).__name__}: token id {int(i)} is out of range for a "
                             f"vocabulary of {len(self._id_to_token)} tokens (valid ids 0.."
                             f"{len(self._id_to_token) - 1})")

    def _special_id(self, name):
        tok = self.special_tokens.get(name)
        return None if tok is None else self._token_to_id[tok]

    pad_id = property(lambda self: self._special_id("pad"), doc="id of the padding token")
    unk_id = property(lambda self: self._special_id("unk"), doc="id of the unknown token")
    bos_id = property(lambda self: self._special_id("bos"), doc="id of begin-of-sequence")
    eos_id = property(lambda self: self._special_id("eos"), doc="id of end-of-sequence")
    cls_id = property(lambda self: self._special_id("cls"), doc="id of [CLS]")
    sep_id = property(lambda self: self._special_id("sep"), doc="id of [SEP]")
    mask_id = property(lambda self: self._special_id("mask"), doc="id of [MASK]")

    @property
    def all_special_ids(self):
        """Sorted ids of all special tokens."""
        return sorted(self._special_ids)

    # ----------------------------------------------------------------- encoding
    def _encode_with_offsets(self, text):
        raise NotImplementedError

    def _encode(self, text):
        return self._encode_with_offsets(text)[0]

    def _decode(self, ids):
        raise NotImplementedError

    def _check_text(self, text, where):
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}.{where}: text must be a str, got "
                            f"{type(text).__name__}")

    def _special_ends(self):
        """(prefix ids, suffix ids) that ``add_special_tokens=True`` puts around a text."""
        if self.cls_id is not None and self.sep_id is not None:
            return [self.cls_id], [self.sep_id]
        return ([] if self.bos_id is None else [self.bos_id],
                [] if self.eos_id is None else [self.eos_id])

    def num_special_tokens_to_add(self, pair=False):
        """How many special tokens ``build_inputs_with_special_tokens`` adds."""
        pre, post = self._special_ends()
        return len(pre) + len(post) * (2 if pair else 1)

    def build_inputs_with_special_tokens(self, ids, ids_b=None):
        """``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` (BERT style, when the tokenizer has
        cls and sep tokens), otherwise ``<bos> a <eos>`` / ``<bos> a <eos> b <eos>``."""
        pre, post = self._special_ends()
        out = pre + list(ids) + post
        if ids_b is not None:
            out += list(ids_b) + post
        return out

    def encode(self, text, add_special_tokens=False):
        """Token ids of ``text``; unknown pieces become the unknown token, never dropped."""
        self._check_text(text, "encode")
        ids = self._encode(text)
        return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids

    def encode_with_offsets(self, text, add_special_tokens=False):
        """``(ids, offsets)``: ``offsets[i] = (start, end)`` is the span of ``text`` (in
        characters) that token ``i`` came from; special tokens get ``(0, 0)``."""
        self._check_text(text, "encode_with_offsets")
        ids, offsets = self._encode_with_offsets(text)
        if add_special_tokens:
            pre, post = self._special_ends()
            ids = pre + ids + post
            offsets = [(0, 0)] * len(pre) + offsets + [(0, 0)] * len(post)
        return ids, offsets

    def tokenize(self, text):
        """The token strings of ``text`` (for reading; ``encode`` gives the ids)."""
        return [self._id_to_token[i] for i in self.encode(text)]

    def decode(self, ids, skip_special_tokens=False):
        """Text of a sequence of ids (a list, a 1-D NumPy array or a minillm tensor).

        Special tokens are written as their strings unless ``skip_special_tokens``.
        An id outside ``0 .. vocab_size - 1`` is an IndexError that names it.
        """
        ids = self._checked_ids(ids)
        if not self._special_ids:
            return self._decode(ids)
        out, run = [], []
        for i in ids:
            if i in self._special_ids:
                if run:
                    out.append(self._decode(run))
                    run = []
                if not skip_special_tokens:
                    out.append(self._id_to_token[i])
            else:
                run.append(i)
        if run:
            out.append(self._decode(run))
        return "".join(out)

    def _checked_ids(self, ids):
        """``ids`` as a list of Python ints, each checked to be in range."""
        ids = _as_id_list(ids, type(self).__name__)
        for i in ids:
            self._check_id(i)
        return [int(i) for i in ids]

    def decode_batch(self, batch, skip_special_tokens=False):
        """``decode`` for each row of a batch (a list of lists or a 2-D array/tensor)."""
        if hasattr(batch, "numpy") and not isinstance(batch, np.ndarray):
            batch = batch.numpy()
        return [self.decode(row, skip_special_tokens) for row in batch]

    def encode_batch(self, texts, padding=True, truncation=False, max_length=None,
                     add_special_tokens=False, return_tensors=None, padding_side="right"):
        """Encode a batch of texts into ``{"input_ids": ..., "attention_mask": ...}``.

        padding: ``True`` (or ``"longest"``) pads every row to the longest row, ``"max_length"``
            pads to ``max_length``, ``False`` leaves rows at their own lengths. Padding uses
            ``pad_id`` (an error when the tokenizer has none); ``padding_side`` is
            ``"right"`` (default) or ``"left"`` (for generation).
        truncation: cut each row to ``max_length`` tokens, keeping the special tokens.
            Without truncation a row longer than ``max_length`` is an error.
        return_tensors: ``None`` (lists of lists), ``"np"`` (NumPy int64 arrays) or ``"mm"``
            (minillm int64 tensors on the default device). Arrays need equal row lengths.

        ``attention_mask`` is 1 for real tokens (special tokens included) and 0 for padding.
        """
        name = f"{type(self).__name__}.encode_batch"
        texts = check_texts(texts, name)
        _check_batch_options(name, padding, truncation, max_length, return_tensors,
                             padding_side)
        rows = self._encode_rows(texts, name, truncation, max_length, add_special_tokens)
        if padding in (True, "longest", "max_length"):
            target = max_length if padding == "max_length" else max((len(r) for r in rows),
                                                                    default=0)
            rows, masks = self._pad_rows(rows, target, padding_side, name)
        else:
            masks = [[1] * len(r) for r in rows]
        out = {"input_ids": rows, "attention_mask": masks}
        if return_tensors is None:
            return out
        return _batch_arrays(out, return_tensors, name)

    def _encode_rows(self, texts, name, truncation, max_length, add_special_tokens):
        """The token ids of each text, cut and given special tokens as :meth:`encode_batch` asks."""
        n_special = self.num_special_tokens_to_add() if add_special_tokens else 0
        if truncation and max_length < n_special:
            raise ValueError(f"{name}: max_length={max_length} leaves no room for the "
                             f"{n_special} special tokens")
        rows = []
        for k, text in enumerate(texts):
            ids = self._encode(text)
            if truncation:
                ids = ids[:max_length - n_special]
            if add_special_tokens:
                ids = self.build_inputs_with_special_tokens(ids)
            if max_length is not None and len(ids) > max_length:
                raise ValueError(f"{name}: text {k} has {len(ids)} tokens, more than max_length="
                                 f"{max_length}; pass truncation=True or a larger max_length")
            rows.append(ids)
        return rows

    def _pad_rows(self, rows, target, padding_side, name):
        """``(rows, masks)``: each row padded with ``pad_id`` to ``target`` on ``padding_side``."""
        if self.pad_id is None and any(len(r) < target for r in rows):
            raise ValueError(f"{name}: padding needs a pad token, and this tokenizer has "
                             f"none; train it with special_tokens={{'pad': ...}} or pass "
                             f"padding=False")
        padded, masks = [], []
        for r in rows:
            fill = target - len(r)
            if padding_side == "right":
                padded.append(r + [self.pad_id] * fill)
                masks.append([1] * len(r) + [0] * fill)
            else:
                padded.append([self.pad_id] * fill + r)
                masks.append([0] * fill + [1] * len(r))
        return padded, masks

    # ----------------------------------------------------------------- saving
    def _config(self):
        """Extra JSON-serialisable state of a subclass (its options, merges, ...)."""
        return {}

    @classmethod
    def _from_config(cls, vocab, special_tokens, config):
        return cls(vocab, special_tokens, **config)

    def to_dict(self):
        """Everything ``save`` writes, as a JSON-serialisable dict."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "class": type(self).__name__,
                "special_tokens": dict(self.special_tokens), "config": self._config(),
                "vocab": list(self._id_to_token)}

    def save(self, path):
        """Write the tokenizer to one UTF-8 JSON file (atomically: temp file + rename)."""
        text = json.dumps(self.to_dict(), ensure_ascii=False, indent=1)
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = make_temp_file(folder, ".tokenizer-", ".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def from_dict(cls, data, source="<dict>"):
        """Rebuild a tokenizer from ``to_dict()`` output (checks format, version and class)."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TokenizerFileError(f"{source} is not a minillm tokenizer file (its 'format' "
                                     f"field is not {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise TokenizerFileError(f"{source} has tokenizer format version "
                                     f"{data.get('version')!r}; this minillm reads version "
                                     f"{FORMAT_VERSION}")
        kind = data.get("class")
        klass = Tokenizer._registry.get(kind)
        if klass is None:
            raise TokenizerFileError(f"{source} holds an unknown tokenizer class {kind!r}; known: "
                                     f"{', '.join(sorted(Tokenizer._registry))}")
        if not issubclass(klass, cls):
            raise TokenizerFileError(f"{source} holds a {kind}, not a {cls.__name__}; load it with "
                                     f"Tokenizer.load or {kind}.load")
        try:
            return klass._from_config(data["vocab"], data["special_tokens"], data["config"])
        except KeyError as e:
            raise TokenizerFileError(f"{source}: missing field {e}") from None

    @classmethod
    def load(cls, path):
        """Read a file written by ``save``; ``Tokenizer.load`` returns the saved subclass."""
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise TokenizerFileError(f"{os.fspath(path)} is not valid JSON: {e}") from None
        return cls.from_dict(data, source=os.fspath(path))

    def __repr__(self):
        specials = ", ".join(f"{k}={v!r}" for k, v in self.special_tokens.items())
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, {specials})"


def _check_batch_options(name, padding, truncation, max_length, return_tensors,
                         padding_side):
    """Raise a ValueError naming ``name`` for an unknown or inconsistent encode_batch option."""
    if padding not in (True, False, "longest", "max_length", "do_not_pad"):
        raise ValueError(f"{name}: padding must be True/'longest', 'max_length' or False, "
                         f"got {padding!r}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"{name}: padding_side must be 'right' or 'left', got "
                         f"{padding_side!r}")
    if return_tensors not in (None, "np", "mm"):
        raise ValueError(f"{name}: return_tensors must be None, 'np' or 'mm', got "
                         f"{return_tensors!r}")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"{name}: max_length must be a positive int, got {max_length!r}")
    if (truncation or padding == "max_length") and max_length is None:
        raise ValueError(f"{name}: truncation=True and padding='max_length' need "
                         f"max_length (the row length to cut or pad to)")


def _batch_arrays(out, return_tensors, name):
    """``out``'s equal-length rows as int64 NumPy arrays ("np") or minillm tensors ("mm")."""
    rows = out["input_ids"]
    if len({len(r) for r in rows}) > 1:
        raise ValueError(f"{name}: return_tensors={return_tensors!r} needs rows of equal "
                         f"length, got lengths {[len(r) for r in rows]}; use padding=True")
    width = len(rows[0]) if rows else 0
    arrays = {k: np.array(v, dtype=np.int64).reshape(len(rows), width)
              for k, v in out.items()}
    if return_tensors == "np":
        return arrays
    return {k: _tensor(v) for k, v in arrays.items()}


def _as_id_list(ids, name):
    """A list of ids from a list/tuple, a 1-D NumPy array or a minillm tensor."""
    if hasattr(ids, "numpy") and not isinstance(ids, np.ndarray):
        ids = ids.numpy()                 # a minillm tensor: an explicit copy to the host
    if isinstance(ids, np.ndarray):
        if ids.dtype.kind == "f":         # checked first: logits are the usual mistake
            raise TypeError(f"{name}.decode: ids must be integers, got floating point values "
                            f"of shape {ids.shape}; if these are a model's logits, pick the "
                            "tokens first (argmax over the last axis, or sample) and decode "
                            "those")
        if ids.ndim != 1:
            raise ValueError(f"{name}.decode: expected a 1-D sequence of ids, got shape "
                             f"{ids.shape}; use decode_batch for 2-D")
        if ids.dtype.kind not in "iu":
            raise TypeError(f"{name}.decode: ids must be integers, got dtype {ids.dtype}")
        return ids.tolist()
    if isinstance(ids, (int, np.integer)):
        raise TypeError(f"{name}.decode: expected a sequence of ids, got the single id {ids}; "
                        f"wrap it in a list or use id_to_token")
    return list(ids)
