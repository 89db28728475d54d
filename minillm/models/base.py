"""What every minillm model shares: a JSON config, save/load as a directory, generation.

A model directory holds ``config.json`` (the config plus ``model_type``) and ``model.npz``
(the state dict as host arrays; loaded with ``allow_pickle=False``). ``save_pretrained``
writes a complete new directory next to the target and swaps it in with renames, so an
interrupted save never leaves a half-written model behind.

Generation (:meth:`PreTrainedModel.generate`) works for any causal LM: models that can
continue from a cache (GPT's keys/values, an LSTM's hidden state) implement
``init_cache``/``forward_step``; the others are recomputed on the whole (cropped) context.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from .. import backend
from .._fileio import make_temp_dir, replace_directory
from ..autograd import Tensor, no_grad, tensor
from ..lazyarray import open_npz
from ..nn import Module, Parameter
from ..nn.init import skip_init
from ..validation import check_int, check_number

__all__ = ["Config", "PreTrainedModel", "CONFIG_NAME", "WEIGHTS_NAME", "sample_next"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.npz"


@dataclasses.dataclass
class Config:
    """Base of model configs: a dataclass that round-trips through JSON with strict keys."""

    def to_dict(self):
        return dataclasses.asdict(self)

    # validation helpers for subclasses' __post_init__ (one wording for every model)
    def _require_ints(self, *names):
        for name in names:        # stored back as int: a NumPy int would not go into JSON
            setattr(self, name, check_int(getattr(self, name), name, type(self).__name__))

    def _require_divisible(self, name, by):
        a, b = getattr(self, name), getattr(self, by)
        if a % b:
            raise ValueError(f"{type(self).__name__}: {name} ({a}) must be divisible by {by} ({b})")

    def _require_probabilities(self, *names):
        for name in names:
            check_number(getattr(self, name), name, type(self).__name__, 0, 1, high_open=True,
                         type_error=True)

    @classmethod
    def from_dict(cls, d):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; known keys: "
                             f"{sorted(names)}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{cls.__name__}: missing required config keys {missing}")
        return cls(**d)


class PreTrainedModel(Module):
    """Base class of minillm's models: ``config``, save/load, ``generate``.

    Subclasses set ``config_class`` and ``model_type`` and build their layers from
    ``self.config`` in ``__init__``.
    """

    config_class = Config
    model_type = "base"

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects a {self.config_class.__name__}, got "
                            f"{type(config).__name__}")
        self.config = config

    def num_parameters(self, trainable_only=False):
        return sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only)

    def disable_dropout(self):
        """Dropout off for good, in training mode too: every ``Dropout`` layer, the attention
        dropout rates and the config's ``*dropout*`` fields become 0. Preference and RL
        fine-tuning need it: they compare the policy's log-probabilities with a reference's
        (DPO) or with the sampling policy's (GRPO), and dropout noise in one of the two
        passes makes those ratios random. Returns ``self``."""
        from ..nn import Dropout
        for m in self.modules():
            if isinstance(m, Dropout):
                m.p = 0.0
            for name in ("dropout", "dropout_p"):      # attention's rate, a plain float
                if isinstance(getattr(m, name, None), float):
                    setattr(m, name, 0.0)
        for field, value in self.config.to_dict().items():
            if "dropout" in field and isinstance(value, float):
                setattr(self.config, field, 0.0)
        return self

    # -- a larger vocabulary ------------------------------------------------------------------
    def get_input_embeddings(self):
        """The token-embedding Parameter ``E`` (V, H); models with token ids override it."""
        raise NotImplementedError(f"{type(self).__name__} has no token embeddings to resize")

    def resize_token_embeddings(self, new_num_tokens):
        """Grow the vocabulary to ``new_num_tokens`` (Hugging Face's name for it).

        The rows ``V .. new_num_tokens - 1`` of ``E`` are new tokens (characters a tokenizer
        learned from new text). Each starts at the mean of the old rows,

            E_new[v] = (1/V) sum_u E[u]        for v >= V,

        so a new token first looks like an average token and, through a tied output head
        (``logits = h E^T``), gets an average score instead of a random one that could
        dominate the softmax (Hewitt 2021, "Initializing new word embeddings"). Old rows,
        and so everything the model learned, are unchanged. Returns the model.
        """
        old = self.get_input_embeddings()
        v, h = old.shape
        new_num_tokens = check_int(new_num_tokens, "new_num_tokens", "resize_token_embeddings",
                                   low=v, expected=f"an int >= the current vocabulary ({v}) "
                                   "(shrinking would drop learned tokens)")
        module = next(m for m in self.modules() if getattr(m, "weight", None) is old)
        xp = old.device.xp
        rows = xp.broadcast_to(old.data.mean(axis=0), (new_num_tokens - v, h))
        module.weight = Parameter(tensor(xp.concatenate([old.data, rows.astype(old.dtype)]),
                                         device=old.device), requires_grad=old.requires_grad)
        module.num_embeddings = new_num_tokens
        self._resize_output_bias(new_num_tokens)
        self.config.vocab_size = new_num_tokens
        return self

    def _resize_output_bias(self, new_num_tokens):
        """Models whose LM head has a per-token bias grow it too (BERT's MLM head)."""

    # -- saving and loading ------------------------------------------------------------------
    def save_pretrained(self, directory):
        """Write ``config.json`` + ``model.npz`` into ``directory`` (replaced atomically)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temp_dir(f".{directory.name}.tmp-", directory.parent)
        try:
            cfg = {"model_type": self.model_type, **self.config.to_dict()}
            with open(tmp / CONFIG_NAME, "w", encoding="utf-8") as f:
                json.dump(cfg, f, indent=2, ensure_ascii=False)
            arrays = {k: v.numpy() for k, v in self.state_dict().items()}
            with open(tmp / WEIGHTS_NAME, "wb") as f:
                np.savez(f, **arrays)
            replace_directory(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    @classmethod
    def from_pretrained(cls, directory, device=None, dtype=None):
        """Rebuild a model saved with :meth:`save_pretrained` (weights keep their dtype
        unless ``dtype`` is given). A Hugging Face GPT-2/BERT checkpoint (``config.json`` +
        ``model.safetensors``) is read by :func:`minillm.models.hf.load_hf`."""
        directory = Path(directory)
        from .hf import is_hf_checkpoint, load_hf      # lazy: hf imports the model classes
        if is_hf_checkpoint(directory):                 # Hugging Face config.json + safetensors
            return load_hf(directory, model_class=cls, device=device, dtype=dtype)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"{cls.__name__}.from_pretrained: {p} is missing (a model "
                                        f"directory holds {CONFIG_NAME} and {WEIGHTS_NAME})")
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
        model_type = cfg.pop("model_type", None)
        if model_type != cls.model_type:
            raise ValueError(f"{directory} holds a {model_type!r} model, not {cls.model_type!r}; "
                             "load it with the matching class")
        config = cls.config_class.from_dict(cfg)
        arrays = _open_weights(w_path)
        if dtype is None:
            floats = [a.dtype for a in arrays.values() if a.dtype.kind == "f"]
            dtype = floats[0] if floats else None
        # no random initial weights: every one of them is overwritten by the file right below
        with backend.default_dtype_as(dtype), backend.default_device_as(device), skip_init():
            model = cls(config)
        try:          # tensor by tensor from the file into the parameters (converted if asked)
            model.load_state_dict({k: (a.astype(dtype) if dtype is not None and
                                       a.dtype.kind == "f" else a) for k, a in arrays.items()})
        except _READ_ERRORS as e:
            raise ValueError(f"{w_path} is not a readable weights file ({e})") from e
        return model

    # -- generation ---------------------------------------------------------------------------
    def init_cache(self, batch_size):
        """A fresh cache for :meth:`forward_step`, or None if the model has no cached path."""
        return None

    def forward_step(self, ids, cache):
        """Logits for ``ids`` (B, n) continuing from ``cache``; returns (logits, cache)."""
        raise NotImplementedError

    def _context_size(self):
        return getattr(self.config, "block_size", None)

    def generate(self, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 do_sample=True, eos_id=None, seed=None, use_cache=True):
        """Continue ``ids`` (B, T) by ``max_new_tokens`` tokens; returns (B, T + new).

        ``do_sample=False`` is greedy (argmax). Sampling divides the logits by
        ``temperature``, keeps the ``top_k`` largest and/or the smallest set whose
        probability reaches ``top_p`` (nucleus), and draws from the device's generator
        (a private one seeded with ``seed`` when given). Sequences that produce ``eos_id``
        keep producing it; generation stops when all have. With ``use_cache`` the model's
        cache (KV cache, recurrent state) is used; it gives the same tokens as recomputing.
        Past a model's context window (``config.block_size``) generation goes on like
        nanoGPT's: each new token is predicted from the last ``block_size`` tokens.
        """
        _check_sampling(max_new_tokens, temperature, top_k, top_p, do_sample)
        dev = next(iter(self.parameters())).device
        if not isinstance(ids, Tensor):
            ids = tensor(np.asarray(ids, dtype=np.int64), device=dev)
        if ids.ndim == 1:
            ids = ids.reshape(1, -1)
        if ids.dtype.kind not in "iu" or ids.ndim != 2:
            raise ValueError(f"generate: ids must be integer token ids of shape (B, T), got "
                             f"{ids.shape} {ids.dtype}")
        gen = backend.Generator(dev, seed) if seed is not None else backend.generator(dev)
        xp = dev.xp
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                cache = self.init_cache(ids.shape[0]) if use_cache else None
                out = ids.data
                finished = xp.zeros(ids.shape[0], dtype=bool)
                pending = out
                ctx = self._context_size()
                finite = xp.asarray(True)          # checked once at the end: no sync per token
                for _ in range(max_new_tokens):
                    if cache is not None and ctx is not None and out.shape[1] > ctx:
                        cache = None     # past the context window: recompute on the last ctx
                    if cache is not None:
                        logits, cache = self.forward_step(Tensor.wrap(pending, dev), cache)
                    else:
                        window = out if ctx is None else out[:, -ctx:]
                        logits = self(Tensor.wrap(window, dev))
                    last = logits.data[:, -1, :]
                    finite = finite & xp.isfinite(last).all()
                    nxt = sample_next(xp, last, gen, temperature, top_k, top_p, do_sample)
                    if eos_id is not None:
                        nxt = xp.where(finished, eos_id, nxt)
                        finished = finished | (nxt == eos_id)
                    out = xp.concatenate([out, nxt[:, None]], axis=1)
                    pending = nxt[:, None]
                    if eos_id is not None and bool(backend.to_host(finished.all())):
                        break
        finally:
            self.train(was_training)
        if not bool(backend.to_host(finite)):
            raise FloatingPointError("generate: the model's next-token logits are not finite "
                                     "(NaN or infinite), so no token can be sampled; its weights "
                                     "are probably NaN, e.g. from a diverged training run")
        return Tensor.wrap(out, dev)


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def _open_weights(path):
    """``{name: LazyArray}`` of a ``model.npz``: the headers are read, the values not yet."""
    try:
        return open_npz(path)
    except _READ_ERRORS as e:
        raise ValueError(f"{path} is not a readable weights file ({e})") from e


def _check_sampling(max_new_tokens, temperature, top_k, top_p, do_sample):
    """The arguments of :meth:`generate` (NaN is in no range)."""
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if do_sample and not 0 < temperature < float("inf"):
        raise ValueError(f"generate: temperature must be a finite number > 0 when sampling, "
                         f"got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"generate: top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p}")


def sample_next(xp, logits, gen, temperature=1.0, top_k=None, top_p=None, do_sample=True):
    """Pick one token per row of ``logits`` (B, V) on the device: argmax or a filtered sample."""
    if not do_sample:
        return logits.argmax(axis=-1).astype(np.int64)
    z = logits.astype(np.float64) / float(temperature)
    vocab = z.shape[-1]
    if top_k is not None and top_k < vocab:
        kth = xp.partition(z, vocab - top_k, axis=-1)[:, vocab - top_k][:, None]
        z = xp.where(z < kth, -xp.inf, z)
    p = xp.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        ps = -xp.sort(-p, axis=-1)                                  # probabilities, descending
        kept = (xp.cumsum(ps, axis=-1) - ps) < top_p                # the top token always stays
        threshold = xp.where(kept, ps, xp.inf).min(axis=-1, keepdims=True)
        p = xp.where(p < threshold, 0.0, p)
        p /= p.sum(axis=-1, keepdims=True)
    cdf = xp.cumsum(p, axis=-1)
    u = gen.random((p.shape[0], 1), np.float64) * cdf[:, -1:]
    idx = (cdf <= u).sum(axis=-1)
    return xp.minimum(idx, vocab - 1).astype(np.int64)
