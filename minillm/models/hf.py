"""Hugging Face checkpoints <-> minillm models: GPT-2 and BERT, weights in safetensors.

A Hugging Face model directory holds ``config.json`` (with HF's ``model_type``: ``"gpt2"`` or
``"bert"``) and ``model.safetensors``. :func:`load_hf` reads both and returns the minillm
model; :func:`save_hf` writes a directory that ``transformers``' ``from_pretrained`` loads.

**GPT-2** (``GPT2LMHeadModel`` / ``GPT2Model``) -> :class:`~minillm.models.gpt.GPT`. The names
are the same once the ``transformer.`` prefix is dropped, and GPT-2's ``Conv1D`` stores its
weight ``(in, out)`` like minillm's ``Linear``: no transpose. Config::

    vocab_size -> vocab_size      n_positions -> block_size     n_layer, n_head, n_embd (same)
    resid_pdrop = embd_pdrop = attn_pdrop -> dropout            (biases always: bias=True)

Dropped on load: the causal-mask buffers ``attn.bias`` / ``attn.masked_bias`` of old
checkpoints and a ``lm_head.weight`` equal to ``wte`` (the head is tied). Refused (clear
errors): an untied head, ``n_inner != 4 n_embd``, an activation other than the tanh GELU
(``gelu_new``), ``layer_norm_epsilon != 1e-5``, ``scale_attn_by_inverse_layer_idx``,
``scale_attn_weights=False``, cross-attention.

**BERT** (``BertModel`` / ``BertForMaskedLM`` / ``BertForPreTraining``) ->
:class:`~minillm.models.bert.BERT` / ``BertForMaskedLM`` / ``BertForPreTraining``; the config
keys are the same. Names match after the ``bert.`` prefix; PyTorch's ``nn.Linear`` stores
``(out, in)``, so every 2-D weight except the embedding tables is **transposed**. The MLM
decoder (``cls.predictions.decoder.*``) is tied to the word embeddings and ``cls.predictions.bias``
and is dropped when it equals them. Old names ``LayerNorm.gamma/beta`` are read as
``weight/bias``. Refused: ``position_embedding_type != "absolute"``, ``is_decoder``,
cross-attention.

Loading a body (``BERT``) from a checkpoint with heads ignores the head weights, as
``transformers`` does, and warns listing them; a checkpoint without pooler weights (a
``BertForMaskedLM``) gives a ``BERT`` without pooler (``pooled_output`` is None).
Float16/bfloat16 checkpoints load as float32 (pass ``dtype=`` to choose), converted tensor by
tensor: the model is built without random initial weights (``nn.init.skip_init``) and each
tensor goes from the file into its parameter, so memory holds the weights once.

:func:`load_hf_tokenizer` returns minillm's :class:`BPETokenizer` (GPT-2 byte-level BPE) or
:class:`WordPieceTokenizer` (BERT) from ``tokenizer.json`` or the classic ``vocab.json`` +
``merges.txt`` / ``vocab.txt`` files.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np

from .. import backend
from .._fileio import json_default, make_temp_dir, replace_directory
from ..nn.module import StateDictError
from ..nn.init import skip_init
from ..safetensors import open_file, save_file
from .bert import BERT, BertConfig, BertForMaskedLM, BertForPreTraining
from .gpt import GPT, GPTConfig

__all__ = ["load_hf", "save_hf", "load_hf_tokenizer", "is_hf_checkpoint", "HF_WEIGHTS_NAME"]

HF_WEIGHTS_NAME = "model.safetensors"
_GPT2_EPS = 1e-5                       # minillm's LayerNorm default, GPT-2's layer_norm_epsilon
_BERT_ARCHS = {"BertModel": BERT, "BertForMaskedLM": BertForMaskedLM,
               "BertForPreTraining": BertForPreTraining}
_GPT2_ARCHS = ("GPT2LMHeadModel", "GPT2Model")


def _read_config(directory):
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; a Hugging Face model directory holds "
                                f"config.json and {HF_WEIGHTS_NAME}")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return cfg


def is_hf_checkpoint(directory):
    """True when ``directory`` holds a Hugging Face checkpoint minillm can read: a
    ``config.json`` with HF's ``model_type`` ("gpt2" or "bert") and ``model.safetensors``, and
    no ``model.npz`` (minillm's BERT also says "bert"; its weights are in model.npz)."""
    d = Path(directory)
    if not (d / "config.json").is_file() or not (d / HF_WEIGHTS_NAME).is_file():
        return False
    if (d / "model.npz").is_file():                  # minillm's own format (also "bert")
        return False
    try:
        cfg = _read_config(d)
    except (ValueError, OSError):
        return False
    return cfg.get("model_type") in ("gpt2", "bert")


def _fail(where, msg):
    raise ValueError(f"{where}: {msg}")


# -- GPT-2 -------------------------------------------------------------------------------------
def _gpt2_config(cfg, where, dropout):
    n_embd = cfg.get("n_embd", 768)
    checks = [
        (cfg.get("n_inner") in (None, 4 * n_embd), f"n_inner={cfg.get('n_inner')} (minillm's "
         f"MLP is 4 * n_embd = {4 * n_embd} wide)"),
        (cfg.get("activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
         f"activation_function={cfg.get('activation_function')!r} (minillm's GPT uses the "
         "tanh GELU, 'gelu_new')"),
        (cfg.get("layer_norm_epsilon", 1e-5) == _GPT2_EPS,
         f"layer_norm_epsilon={cfg.get('layer_norm_epsilon')} (minillm's GPT uses 1e-5)"),
        (not cfg.get("scale_attn_by_inverse_layer_idx", False),
         "scale_attn_by_inverse_layer_idx=true (minillm scales attention by 1/sqrt(head_dim) "
         "only)"),
        (cfg.get("scale_attn_weights", True), "scale_attn_weights=false"),
        (not cfg.get("add_cross_attention", False), "add_cross_attention=true"),
        (cfg.get("tie_word_embeddings", True), "tie_word_embeddings=false (minillm's head is "
         "tied to wte)"),
    ]
    for ok, what in checks:
        if not ok:
            _fail(where, f"unsupported GPT-2 config: {what}")
    if dropout is None:
        drops = {cfg.get(k, 0.1) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
        if len(drops) != 1:
            _fail(where, f"resid_pdrop, embd_pdrop and attn_pdrop differ ({sorted(drops)}); "
                  "minillm's GPT has one dropout rate: pass dropout=... to load_hf")
        dropout = drops.pop()
    return GPTConfig(vocab_size=cfg.get("vocab_size", 50257),
                     block_size=cfg.get("n_positions", 1024), n_layer=cfg.get("n_layer", 12),
                     n_head=cfg.get("n_head", 12), n_embd=n_embd, dropout=float(dropout),
                     bias=True)


def _gpt2_state(arrays, where):
    if any(k.startswith("transformer.") for k in arrays):
        arrays = {(k[len("transformer."):] if k.startswith("transformer.") else k): v
                  for k, v in arrays.items()}
    head = arrays.pop("lm_head.weight", None)
    if head is not None and not np.array_equal(head, arrays.get("wte.weight")):
        _fail(where, "lm_head.weight differs from wte.weight: an untied GPT-2 head is not "
              "supported (minillm's GPT ties its head to wte)")
    return {k: v for k, v in arrays.items()
            if not k.endswith((".attn.bias", ".attn.masked_bias"))}


# -- BERT --------------------------------------------------------------------------------------
def _bert_config(cfg, where, dropout):
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        _fail(where, f"unsupported BERT config: position_embedding_type="
              f"{cfg['position_embedding_type']!r} (minillm's BERT has absolute positions)")
    for key in ("is_decoder", "add_cross_attention"):
        if cfg.get(key, False):
            _fail(where, f"unsupported BERT config: {key}=true (minillm's BERT is an encoder)")
    if not cfg.get("tie_word_embeddings", True):
        _fail(where, "unsupported BERT config: tie_word_embeddings=false")
    names = {f for f in BertConfig.__dataclass_fields__}
    kwargs = {k: cfg[k] for k in names if k in cfg}
    if dropout is not None:
        kwargs["hidden_dropout_prob"] = kwargs["attention_probs_dropout_prob"] = float(dropout)
    if "vocab_size" not in kwargs:
        _fail(where, "config.json lacks vocab_size")
    return BertConfig(**kwargs)


def _is_embedding(key):
    return key.endswith("_embeddings.weight")


def _bert_state(arrays, model, where):
    """HF BERT arrays -> minillm names for ``model`` (transposing Linear weights)."""
    renamed = {}
    for k, v in arrays.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                     "LayerNorm.bias")
        if k.endswith("embeddings.position_ids"):
            continue                                  # a buffer of old checkpoints
        renamed[k] = v
    has_prefix = any(k.startswith("bert.") for k in renamed)
    wants_prefix = not isinstance(model, BERT)
    out = {}
    for k, v in renamed.items():
        if has_prefix and not k.startswith(("bert.", "cls.")):
            out[k] = v                               # unknown: reported by the key check
            continue
        if wants_prefix and not has_prefix and not k.startswith("cls."):
            k = "bert." + k
        elif not wants_prefix and has_prefix:
            if not k.startswith("bert."):
                out["\0" + k] = v                      # a head: dropped below with a warning
                continue
            k = k[len("bert."):]
        out[k] = v
    decoder_w = out.pop("cls.predictions.decoder.weight", None)
    decoder_b = out.pop("cls.predictions.decoder.bias", None)
    emb = out.get("bert.embeddings.word_embeddings.weight")
    if decoder_w is not None and emb is not None and not np.array_equal(decoder_w, emb):
        _fail(where, "cls.predictions.decoder.weight differs from the word embeddings: an "
              "untied MLM decoder is not supported")
    if decoder_b is not None:
        bias = out.get("cls.predictions.bias")
        if bias is None:
            out["cls.predictions.bias"] = decoder_b
        elif not np.array_equal(bias, decoder_b):
            _fail(where, "cls.predictions.decoder.bias differs from cls.predictions.bias")
    heads = sorted(k[1:] for k in out if k.startswith("\0"))
    own = set(model.state_dict())
    heads += sorted(k for k in out if k.startswith(("cls.", "bert.pooler.", "pooler."))
                    and k not in own)
    if heads:
        warnings.warn(f"{where}: loading {type(model).__name__} ignores the checkpoint's head "
                      f"weights {heads}", stacklevel=3)
    out = {k: v for k, v in out.items() if not k.startswith("\0") and k not in heads}
    return {k: (v.T if v.ndim == 2 and not _is_embedding(k) else v) for k, v in out.items()}


# -- loading -----------------------------------------------------------------------------------
def _float_dtype(arrays, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    floats = {a.dtype for a in arrays.values() if a.dtype.kind == "f"}
    return np.dtype(np.float64) if floats == {np.dtype(np.float64)} else np.dtype(np.float32)


def load_hf(directory, model_class=None, device=None, dtype=None, dropout=None):
    """The minillm model for the Hugging Face checkpoint in ``directory``.

    ``model_class``: the minillm class to build (default: from ``architectures`` in the
    config: GPT for GPT-2, BERT / BertForMaskedLM / BertForPreTraining for BERT). ``dtype``:
    the float dtype (default: float32, or float64 for a float64 checkpoint). ``dropout``:
    override the config's dropout rates (minillm's GPT has a single one).
    """
    directory = Path(directory)
    where = f"load_hf({directory})"
    cfg = _read_config(directory)
    w_path = directory / HF_WEIGHTS_NAME
    if not w_path.is_file():
        raise FileNotFoundError(f"{w_path} is missing (only safetensors checkpoints are read: "
                                "save with save_pretrained(dir, safe_serialization=True))")
    hf_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if hf_type == "gpt2":
        if model_class not in (None, GPT):
            _fail(where, f"a GPT-2 checkpoint loads as GPT, not {model_class.__name__}")
        if archs and archs[0] not in _GPT2_ARCHS:
            _fail(where, f"architecture {archs[0]!r} is not supported; GPT-2 checkpoints of "
                  f"{', '.join(_GPT2_ARCHS)} are")
        config, model_class = _gpt2_config(cfg, where, dropout), GPT
        arrays = _gpt2_state(open_file(w_path), where)
    elif hf_type == "bert":
        if model_class is None:
            if archs and archs[0] not in _BERT_ARCHS:
                _fail(where, f"architecture {archs[0]!r} is not supported; BERT checkpoints of "
                      f"{', '.join(_BERT_ARCHS)} are (or pass model_class=BERT to load the "
                      "encoder alone)")
            model_class = _BERT_ARCHS[archs[0]] if archs else BERT
        if model_class not in _BERT_ARCHS.values():
            _fail(where, f"a BERT checkpoint loads as BERT, BertForMaskedLM or "
                  f"BertForPreTraining, not {model_class.__name__}")
        config = _bert_config(cfg, where, dropout)
        arrays = None
    else:
        _fail(where, f"model_type {hf_type!r} is not supported (gpt2 and bert are)")
    # {name: LazyArray}: the header is read and checked, each tensor is read when loaded
    raw = open_file(w_path) if arrays is None else arrays
    dtype = _float_dtype(raw, dtype)
    kwargs = {}
    if model_class is BERT and not any(k.endswith("pooler.dense.weight") for k in raw):
        kwargs["add_pooling_layer"] = False          # e.g. the body of a BertForMaskedLM
    # no random initial weights: every one of them is overwritten by the file right below
    with backend.default_dtype_as(dtype), backend.default_device_as(device), skip_init():
        model = model_class(config, **kwargs)
    if hf_type == "bert":
        raw = _bert_state(raw, model, where)
    try:          # tensor by tensor, converted (float16 -> float32 ...) and transposed on the way
        model.load_state_dict({k: (a.astype(dtype) if a.dtype.kind == "f" else a)
                               for k, a in raw.items()})
    except (ValueError, StateDictError) as e:
        raise ValueError(f"{where}: the checkpoint's weights do not fit {model_class.__name__}"
                         f":\n{e}") from None
    model.eval()
    return model


# -- saving ------------------------------------------------------------------------------------
def _gpt2_export(model):
    c = model.config
    if not c.bias:
        raise ValueError("save_hf: Hugging Face's GPT-2 always has biases; this GPT was built "
                         "with bias=False")
    eps = {m.eps for name, m in model.named_modules() if hasattr(m, "eps")}
    if eps - {_GPT2_EPS}:
        raise ValueError(f"save_hf: GPT-2 uses layer_norm_epsilon=1e-5, the model has {eps}")
    cfg = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
           "vocab_size": c.vocab_size, "n_positions": c.block_size, "n_embd": c.n_embd,
           "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": None,
           "activation_function": "gelu_new", "resid_pdrop": c.dropout,
           "embd_pdrop": c.dropout, "attn_pdrop": c.dropout, "layer_norm_epsilon": _GPT2_EPS,
           "initializer_range": 0.02, "scale_attn_weights": True,
           "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
           "tie_word_embeddings": True, "use_cache": True,
           "bos_token_id": None, "eos_token_id": None}
    arrays = {"transformer." + k: v.numpy() for k, v in model.state_dict().items()}
    return cfg, arrays


def _bert_export(model):
    archs = {v: k for k, v in _BERT_ARCHS.items()}
    cfg = {"architectures": [archs[type(model)]], "model_type": "bert",
           **model.config.to_dict(), "position_embedding_type": "absolute",
           "is_decoder": False, "add_cross_attention": False, "tie_word_embeddings": True}
    arrays = {}
    for k, v in model.state_dict().items():
        a = v.numpy()
        arrays[k] = np.ascontiguousarray(a.T) if a.ndim == 2 and not _is_embedding(k) else a
    return cfg, arrays


def save_hf(model, directory):
    """Write ``model`` (GPT, BERT, BertForMaskedLM or BertForPreTraining) as a Hugging Face
    checkpoint: ``config.json`` (HF's keys) + ``model.safetensors``, replacing ``directory``
    atomically. ``transformers.AutoModel*.from_pretrained(directory)`` loads it."""
    if type(model) is GPT:
        cfg, arrays = _gpt2_export(model)
    elif type(model) in _BERT_ARCHS.values():
        cfg, arrays = _bert_export(model)
    else:
        raise TypeError(f"save_hf: {type(model).__name__} has no Hugging Face equivalent here; "
                        "GPT, BERT, BertForMaskedLM and BertForPreTraining do")
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(f".{directory.name}.tmp-", directory.parent)
    try:
        with open(tmp / "config.json", "w", encoding="utf-8") as f:
            json.dump(cfg, f, indent=2, ensure_ascii=False, default=json_default)
        save_file(arrays, tmp / HF_WEIGHTS_NAME, metadata={"format": "pt"})
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# -- tokenizers --------------------------------------------------------------------------------
_HF_SPECIAL_KEYS = {"pad_token": "pad", "unk_token": "unk", "bos_token": "bos",
                    "eos_token": "eos", "cls_token": "cls", "sep_token": "sep",
                    "mask_token": "mask"}


def _special_tokens(directory, vocab):
    """{minillm name: token} from tokenizer_config.json / special_tokens_map.json."""
    found = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        p = Path(directory) / name
        if p.is_file():
            with open(p, encoding="utf-8") as f:
                d = json.load(f)
            for hf_key, ours in _HF_SPECIAL_KEYS.items():
                tok = d.get(hf_key)
                if isinstance(tok, dict):
                    tok = tok.get("content")
                if isinstance(tok, str) and tok in vocab:
                    found.setdefault(ours, tok)
    return found or None


def load_hf_tokenizer(directory):
    """The minillm tokenizer for a Hugging Face tokenizer directory: GPT-2's byte-level BPE
    (``tokenizer.json`` with a BPE model, or ``vocab.json`` + ``merges.txt``) as a
    :class:`BPETokenizer`; BERT's WordPiece (``tokenizer.json`` with a WordPiece model, or
    ``vocab.txt``) as a :class:`WordPieceTokenizer`."""
    from ..data.tokenizers import BPETokenizer, WordPieceTokenizer
    d = Path(directory)
    tj = d / "tokenizer.json"
    if tj.is_file():
        with open(tj, encoding="utf-8") as f:
            spec = json.load(f)
        model = spec.get("model") or {}
        kind = model.get("type")
        vocab_map = model.get("vocab") or {}
        vocab = [None] * len(vocab_map)
        for tok, i in vocab_map.items():
            if not isinstance(i, int) or not 0 <= i < len(vocab) or vocab[i] is not None:
                raise ValueError(f"{tj}: vocabulary ids must be distinct integers 0..N-1")
            vocab[i] = tok
        for added in spec.get("added_tokens") or []:
            if added.get("id") == len(vocab):
                vocab.append(added["content"])
        specials = _special_tokens(d, set(vocab))
        if kind == "BPE":
            pre = spec.get("pre_tokenizer") or {}
            if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space", False):
                raise ValueError(f"{tj}: only GPT-2's byte-level BPE (pre_tokenizer ByteLevel, "
                                 f"add_prefix_space=false) is supported, got {pre}")
            merges = [m if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
            if specials is None:
                specials = {k: v for k, v in BPETokenizer.DEFAULT_SPECIAL_TOKENS.items()
                            if v in vocab}
            return BPETokenizer(vocab, merges, specials)
        if kind == "WordPiece":
            norm = spec.get("normalizer") or {}
            if norm.get("type") != "BertNormalizer":
                raise ValueError(f"{tj}: only BERT's WordPiece (normalizer BertNormalizer) is "
                                 f"supported, got normalizer {norm.get('type')!r}")
            lowercase = bool(norm.get("lowercase", True))
            strip = norm.get("strip_accents")
            if specials is None:
                specials = {k: v for k, v in WordPieceTokenizer.DEFAULT_SPECIAL_TOKENS.items()
                            if v in vocab}
            return WordPieceTokenizer(vocab, specials, lowercase=lowercase,
                                      strip_accents=None if strip is None else bool(strip),
                                      max_input_chars_per_word=model.get(
                                          "max_input_chars_per_word", 100))
        raise ValueError(f"{tj}: tokenizer model {kind!r} is not supported (BPE, WordPiece)")
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        tok = BPETokenizer.from_files(d / "vocab.json", d / "merges.txt")
        return tok
    if (d / "vocab.txt").is_file():
        lowercase = True
        p = d / "tokenizer_config.json"
        if p.is_file():
            with open(p, encoding="utf-8") as f:
                lowercase = bool(json.load(f).get("do_lower_case", True))
        return WordPieceTokenizer.from_vocab_txt(d / "vocab.txt", lowercase=lowercase)
    raise FileNotFoundError(f"{d}: no tokenizer.json, vocab.json + merges.txt or vocab.txt")
