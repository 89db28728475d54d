"""Random numbers: one :class:`Generator` per device, all seeded by :func:`manual_seed`.

cpu and fake draw NumPy's PCG64 stream. On CUDA every draw is made from a 64-bit key derived
from ``(seed, counter)`` by :meth:`Generator._next_key`, the one place a key is made.
"""
from __future__ import annotations

import os

import numpy as np

from . import cuda_kernels, dtypes
from .devices import device
from .strict import StrictArray

__all__ = ["Generator", "generator", "active_devices", "manual_seed"]


class Generator:
    """Random numbers for one device. cpu and fake draw the same stream for the same seed.

    On CUDA every draw is made by a counter-based kernel from a 64-bit key derived from
    ``(seed, counter)`` (counter = number of draws so far; cuRAND with
    ``MINILLM_CUDA_KERNELS=0``), so the state is two integers: saving and restoring it
    continues the exact sequence, which makes resumed GPU runs reproducible too.
    """

    def __init__(self, dev, seed):
        self.device = dev
        self.seed(seed)

    def seed(self, seed):
        self._seed = int(seed)
        self._counter = 0
        if self.device.type != "cuda":
            self._g = np.random.Generator(np.random.PCG64(self._seed))

    def _next_key(self):
        """The 64-bit key of the next CUDA draw (seed and counter mixed by a SeedSequence);
        advances the counter. Both CUDA paths (the kernels and cuRAND) take their key here."""
        key = int(np.random.SeedSequence([self._seed, self._counter]).generate_state(
            1, dtype=np.uint64)[0])
        self._counter += 1
        return key

    def _curand(self):
        """cuRAND's generator for the next draw (used when the kernels are switched off).
        It is seeded with the key's low 32 bits: the SeedSequence's first 32-bit word, the
        seed cuRAND has always been given here, so these runs reproduce earlier ones."""
        return self.device.xp.random.RandomState(self._next_key() & 0xFFFFFFFF)

    def _out(self, a):
        # the stand-in device draws with NumPy and wraps the result: it models a GPU's own
        # generator (cuRAND), so this is not counted as a host -> device transfer
        return StrictArray(a) if self.device.type == "fake" else a

    def _kernels(self):
        """The counter-based CUDA kernels (cuda_kernels.random_*) draw on CUDA unless the
        kill switch MINILLM_CUDA_KERNELS=0 is set; then CuPy's cuRAND does (another stream)."""
        return cuda_kernels if cuda_kernels.use(self.device.xp) else None

    def _floats(self, method, shape, dtype):
        """Draw with ``method`` ("random" or "standard_normal") in ``dtype``. NumPy's and
        CuPy's generators draw float32/float64 only: float16 is drawn as float32 and cast.
        A float16 uniform is first rounded down to a multiple of 2^-11 (exact in float16):
        rounding to nearest would turn the draws in [1 - 2^-12, 1) into 1.0, outside [0, 1)."""
        dtype = np.dtype(dtype or dtypes.get_default_dtype())
        draw = np.dtype(np.float32) if dtype == np.float16 else dtype
        if self.device.type == "cuda":
            with self.device:
                ck = self._kernels()
                if ck is not None:
                    fn = ck.random_uniform if method == "random" else ck.random_normal
                    a = fn(self._next_key(), shape, draw)
                else:
                    rs = self._curand()
                    a = (rs.random_sample if method == "random" else rs.standard_normal)(
                        shape, dtype=draw)
        else:
            a = getattr(self._g, method)(shape, dtype=draw)
        if draw != dtype:
            xp = self.device.xp if self.device.type == "cuda" else np
            if method == "random":
                a = xp.floor(a * 2048) * (1 / 2048)
            a = a.astype(dtype)
        return a if self.device.type == "cuda" else self._out(a)

    def random(self, shape, dtype=None):
        """Uniform on [0, 1)."""
        return self._floats("random", shape, dtype)

    def normal(self, shape, dtype=None):
        """Standard normal."""
        return self._floats("standard_normal", shape, dtype)

    def integers(self, low, high, shape, dtype=np.int64):
        """Uniform integers in [low, high)."""
        if self.device.type == "cuda":
            with self.device:
                ck = self._kernels()
                if ck is not None:
                    return ck.random_integers(self._next_key(), low, high, shape, dtype)
                return self._curand().randint(low, high, size=shape, dtype=dtype)
        return self._out(self._g.integers(low, high, size=shape, dtype=dtype))

    def dropout_mask(self, shape, dtype, p):
        """The inverted-dropout mask ``(random(shape, dtype) >= p) * 1/(1-p)``: ``1/(1-p)``
        with probability 1 - p, else 0. On CUDA (float32/float64) one fused kernel makes it
        from the same uniforms, instead of a draw, a comparison, a cast and a product."""
        dtype = np.dtype(dtype or dtypes.get_default_dtype())
        if self.device.type == "cuda" and dtype != np.float16:
            ck = self._kernels()
            if ck is not None:
                with self.device:
                    return ck.dropout_mask(self._next_key(), shape, dtype, p)
        r = self.random(shape, dtype)
        return (r >= p).astype(dtype) * (1.0 / (1.0 - p))      # a Python float keeps the dtype

    def get_state(self):
        """A JSON-serialisable state that :meth:`set_state` restores exactly (every device)."""
        if self.device.type == "cuda":
            return {"seed": self._seed, "counter": self._counter}
        return {"seed": self._seed, "bit_generator": self._g.bit_generator.state}

    def set_state(self, state):
        if self.device.type == "cuda":
            self._seed, self._counter = int(state["seed"]), int(state.get("counter", 0))
        elif "bit_generator" in state:
            self._seed = int(state["seed"])
            self._g.bit_generator.state = state["bit_generator"]
        else:
            self.seed(state["seed"])


_seed = int(os.environ.get("MINILLM_SEED", "0"))
_generators = {}


def generator(dev=None):
    """The random generator of a device (created on first use from the current seed)."""
    dev = device(dev)
    g = _generators.get(dev)
    if g is None:
        g = _generators[dev] = Generator(dev, _seed)
    return g


def active_devices():
    """The devices whose random generator has been used (so checkpoints can save their state)."""
    return [str(d) for d in _generators]


def manual_seed(seed):
    """Seed every device's generator (and those created later) with ``seed``."""
    global _seed
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed expects an int, got {type(seed).__name__}")
    _seed = int(seed)
    for g in _generators.values():
        g.seed(_seed)
