"""Mixed precision training: float16 compute, float32 master weights, dynamic loss scaling.

The recipe of Micikevicius et al., "Mixed Precision Training" (ICLR 2018), in three parts::

    from minillm.training import MixedPrecision
    model = mm.models.GPT(config)                      # built in float32, as usual
    optimizer = model.configure_optimizers(0.1, 3e-4)  # over the float32 parameters
    mp = MixedPrecision(model, optimizer)              # model -> float16; optimizer -> masters
    for x, y in batches:
        loss = model(x, y)[1]                          # forward in float16 (loss in float32)
        mp.backward(loss)                              # backward of loss * scale
        mp.step(max_grad_norm=1.0)                     # unscale, clip, step or skip, copy back
        scheduler.step()                               # schedulers work unchanged

Or simply ``TrainingArguments(..., fp16=True)`` with the :class:`~minillm.training.Trainer`.

**float16** has 1 sign bit, 5 exponent bits and 10 fraction bits: it holds numbers up to
65504, the smallest normal number is 2**-14 ~ 6.1e-5, the smallest subnormal 2**-24 ~ 6e-8,
and next to 1 its spacing is 2**-10 ~ 1e-3 (three decimal digits). Half the memory and, on
GPUs with tensor cores, several times the matmul speed of float32 -- but used naively, both
ends of that range hurt training:

1. **float32 master weights.** An update much smaller than the weight vanishes when added in
   float16: ``np.float16(1) + np.float16(1e-4) == 1`` (1e-4 is below half the spacing at 1).
   With a learning rate of 1e-4 most Adam updates are that small, so a float16 model would
   stop learning. Hence the optimizer steps a float32 copy of every weight (the *master*
   weights, :meth:`MixedPrecision.master_parameters`); there the small updates accumulate,
   and after each step the masters are rounded into the float16 model used for the next
   forward/backward. The optimizer state (Adam's moments) is float32 too.
2. **Loss scaling.** Many gradients (those of activations deep in the network especially)
   are smaller than float16's smallest subnormal ~6e-8 and would become 0. The chain rule is
   linear, so backpropagating ``loss * S`` gives every gradient multiplied by S (2**16 by
   default): the small ones now survive. The float16 gradients are converted to float32 and
   divided by S before clipping and the optimizer step (:class:`GradScaler`). S is a power
   of two, so scaling and unscaling are exact. *Dynamic* scaling: if some gradient overflowed
   (inf or NaN), the step is skipped and S halved; after ``growth_interval`` (2000) clean
   steps in a row S is doubled, to stay as large as possible.
3. **float32 where precision matters.** Matrix products run in float16 (on a GPU cuBLAS
   accumulates them in float32), but the reductions that need range or many digits are
   *float32 islands* inside :mod:`minillm.functional`: softmax, log-softmax, cross-entropy
   and layer norm convert their float16 input to float32, compute statistics, exp/log-sum-exp
   and normalisation there, and round the result to float16 once. Cross-entropy returns its
   loss as **float32** (the loss is summed over many tokens and then multiplied by S, which
   float16 cannot hold). The master weights, the optimizer state, gradient accumulation over
   micro-batches, clipping and the update are float32.

**bfloat16** (8 exponent bits, float32's range, so no loss scaling needed) is *not*
available: NumPy and CuPy have no bfloat16 dtype. Asking for it raises a ``ValueError``.

**Host reads.** Whether to skip a step is a decision the host has to make, so it needs one
value from the device: :meth:`GradScaler.unscale_` computes "is every gradient finite" on the
device as one boolean per device, and :meth:`GradScaler.step` reads it to the host -- *once
per step*, the one device->host transfer a mixed-precision step makes (PyTorch's
``torch.amp.GradScaler`` does the same: ``found_inf.item()`` in ``step``). Unscaling,
the check, clipping, the update and the copy into the float16 model stay on the device; the
scale itself lives on the host as a Python float, so scaling the loss needs no transfer.

On the CPU, NumPy has no BLAS for float16 and its float16 matmul is two orders of magnitude
slower than float32: mixed precision is for GPUs (and for learning how it works).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..nn.module import Module, Parameter, StateDictError, _source_array, copy_into
from ..optim import Optimizer, clip_grad_norm_
from ..validation import check_int, check_number

__all__ = ["GradScaler", "MixedPrecision", "half_dtype", "BFLOAT16_UNAVAILABLE"]

#: The message of the ValueError raised when bfloat16 is asked for.
BFLOAT16_UNAVAILABLE = (
    "bfloat16 is not available in minillm: NumPy and CuPy (its array libraries) have no "
    "bfloat16 dtype. Use float16 mixed precision instead (MixedPrecision(model, optimizer), "
    "or TrainingArguments(fp16=True)): float16 compute with float32 master weights and "
    "dynamic loss scaling, which makes up for float16's smaller exponent range")

_FP32 = np.dtype(np.float32)
_FP16 = np.dtype(np.float16)


def half_dtype(dtype="float16"):
    """The compute dtype of mixed precision: ``"float16"`` (also ``"fp16"``, ``"half"``,
    ``np.float16``). ``"bfloat16"``/``"bf16"`` raise a ValueError that explains why not."""
    if isinstance(dtype, str):
        name = dtype.strip().lower()
        if name in ("bfloat16", "bf16"):
            raise ValueError(BFLOAT16_UNAVAILABLE)
        if name in ("float16", "fp16", "half"):
            return _FP16
        raise ValueError(f"mixed precision: dtype must be 'float16', got {dtype!r}")
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"mixed precision: dtype must be 'float16', got {dtype!r}") from None
    if d == _FP16:
        return d
    if "bfloat16" in d.name:                  # e.g. ml_dtypes.bfloat16
        raise ValueError(BFLOAT16_UNAVAILABLE)
    raise ValueError(f"mixed precision: dtype must be float16, got {d} (the master weights "
                     "are float32; float32 training needs no MixedPrecision)")


def _positive(name, value, low=0.0, high=None):
    """A finite float strictly between ``low`` and ``high`` (the scale and its factors)."""
    return check_number(value, name, "GradScaler", low, high, low_open=True, high_open=True,
                        finite=True)


def _optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


# -- the loss scaler -----------------------------------------------------------------------------
class GradScaler:
    """Dynamic loss scaling with PyTorch's ``torch.amp.GradScaler`` semantics::

        scaler = GradScaler()
        scaler.scale(loss).backward()       # backward of loss * scale
        scaler.unscale_(optimizer)          # optional: grads / scale, e.g. before clipping
        clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)              # optimizer.step(), or nothing if a grad is inf/NaN
        scaler.update()                     # halve the scale after an overflow; double it
                                            # after growth_interval clean steps

    The optimizer must step float32 parameters (with a float16 model use
    :class:`MixedPrecision`, which gives it the float32 masters): unscaling float16
    gradients would make the small ones underflow again, so it raises, as in PyTorch.

    ``init_scale`` (2**16), ``growth_factor`` (2), ``backoff_factor`` (0.5) and
    ``growth_interval`` (2000) are PyTorch's defaults; with powers of two the scaling is
    exact. ``enabled=False`` turns every method into a pass-through (``scale`` returns the
    loss, ``step`` calls ``optimizer.step()``), so one loop serves both precisions.

    The scale lives on the host (a Python float); the inf/NaN check runs on the device and
    is read to the host once per step, in :meth:`step` (see the module docstring).
    ``skipped_steps`` counts the steps skipped so far; ``last_step_skipped`` tells whether
    the latest one was. :meth:`state_dict` is plain JSON-friendly numbers.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not isinstance(enabled, bool):
            raise TypeError(f"GradScaler: enabled must be a bool, got {enabled!r}")
        self._enabled = enabled
        self._scale = _positive("init_scale", init_scale)
        self.growth_factor = _positive("growth_factor", growth_factor, low=1.0)
        self.backoff_factor = _positive("backoff_factor", backoff_factor, high=1.0)
        self.growth_interval = check_int(growth_interval, "growth_interval", "GradScaler")
        self._growth_tracker = 0               # clean steps since the last change of scale
        self.skipped_steps = 0
        self.last_step_skipped = False
        self._per_optimizer = {}               # id(optimizer) -> this step's stage and flags

    # -- small accessors ----------------------------------------------------------------------
    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        """The current scale (a Python float; 1.0 when disabled)."""
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self):
        return self.growth_factor

    def get_backoff_factor(self):
        return self.backoff_factor

    def get_growth_interval(self):
        return self.growth_interval

    def _state(self, optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"GradScaler: expected a minillm Optimizer, got "
                            f"{type(optimizer).__name__}")
        st = self._per_optimizer.get(id(optimizer))
        if st is None:
            st = self._per_optimizer[id(optimizer)] = {
                "optimizer": optimizer, "stage": "ready", "flags": None, "found_inf": None}
        return st

    # -- the step -----------------------------------------------------------------------------
    def scale(self, loss):
        """``loss * scale``, to call ``.backward()`` on.

        A float16 loss is converted to float32 first (the scaled loss would not fit in
        float16). Its gradient, the scale itself, still flows back into float16 through that
        conversion, so a float16 loss overflows at the default scale 2**16 > 65504: the
        first step is skipped and the scale halved, after which training proceeds. Losses
        from :func:`~minillm.functional.cross_entropy` are float32 and have no such step.
        """
        if not isinstance(loss, Tensor):
            raise TypeError(f"GradScaler.scale expects a loss Tensor, got "
                            f"{type(loss).__name__}")
        if not self._enabled:
            return loss
        if loss.dtype == _FP16:
            loss = loss.astype(np.float32)
        return loss * self._scale

    def unscale_(self, optimizer):
        """Divide the gradients of ``optimizer``'s parameters by the scale, in place, and
        record on the device whether all of them are finite (one boolean per device).

        At most once per optimizer between two :meth:`update` calls; :meth:`step` calls it
        when you did not. Call it yourself to clip or inspect the true gradients.
        """
        if not self._enabled:
            return
        st = self._state(optimizer)
        if st["stage"] == "unscaled":
            raise RuntimeError("GradScaler.unscale_() has already been called on this "
                               "optimizer since the last update()")
        if st["stage"] == "stepped":
            raise RuntimeError("GradScaler.unscale_() is being called after step(); call "
                               "update() first")
        inv = 1.0 / self._scale                  # exact for a power-of-two scale
        flags = {}                               # device -> 0-d bool array: all finite?
        with no_grad():
            for i, p in enumerate(_optimizer_params(optimizer)):
                g = p.grad
                if g is None:
                    continue
                if g.dtype == _FP16:
                    raise ValueError(
                        f"GradScaler: attempting to unscale float16 gradients (parameter {i} "
                        f"of the optimizer, shape {p.shape}). The optimizer must step float32 "
                        "master weights: wrap the float32 model and its optimizer with "
                        "MixedPrecision(model, optimizer) instead of converting the model to "
                        "float16 yourself")
                dev, xp = g.device, g.xp
                with dev:
                    g.data *= inv
                    ok = xp.isfinite(g.data).all()
                    flags[dev] = ok if dev not in flags else xp.logical_and(flags[dev], ok)
                g.mark_modified()
        st["flags"], st["stage"] = flags, "unscaled"

    def _found_inf(self, st):
        """THE host read of a step: one boolean per device (one in the usual case)."""
        if st["found_inf"] is None:
            # one read per device, which also makes the step's queued input checks
            oks = backend.read_flags(list(st["flags"].values()))
            st["found_inf"] = not all(oks)
        return st["found_inf"]

    def step(self, optimizer, *args, **kwargs):
        """``optimizer.step()`` unless a gradient is inf/NaN (then the step is skipped and
        the parameters keep their values). Unscales first if :meth:`unscale_` was not called.
        Returns what ``optimizer.step`` returns (None when skipped)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs or args:
            raise RuntimeError("GradScaler.step does not support a closure: the gradients "
                               "must be scaled and checked before the optimizer uses them")
        st = self._state(optimizer)
        if st["stage"] == "stepped":
            raise RuntimeError("GradScaler.step() has already been called since the last "
                               "update()")
        if st["stage"] == "ready":
            self.unscale_(optimizer)
        found = self._found_inf(st)
        st["stage"] = "stepped"
        self.last_step_skipped = found
        if found:
            return None
        return optimizer.step()

    def update(self, new_scale=None):
        """Adjust the scale after the step: times ``backoff_factor`` if any gradient was
        inf/NaN (and count a skipped step), times ``growth_factor`` after
        ``growth_interval`` clean steps in a row. ``new_scale`` sets it explicitly instead."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = _positive("new_scale", new_scale)
            self._per_optimizer = {}
            return
        states = [st for st in self._per_optimizer.values() if st["flags"] is not None]
        if not states:
            raise RuntimeError("GradScaler.update(): no inf checks were recorded; call "
                               "step(optimizer) (or unscale_) after the backward first")
        found = any([self._found_inf(st) for st in states])
        if found:
            self._scale *= self.backoff_factor
            self._growth_tracker = 0
            self.skipped_steps += 1
        else:
            self._growth_tracker += 1
            if self._growth_tracker >= self.growth_interval:
                grown = self._scale * self.growth_factor
                if math.isfinite(grown):
                    self._scale = grown
                self._growth_tracker = 0
        self.last_step_skipped = found
        self._per_optimizer = {}

    # -- saving ---------------------------------------------------------------------------------
    def state_dict(self):
        """Plain numbers (JSON-serialisable): scale, factors, interval, growth tracker,
        skipped steps and whether the scaler is enabled."""
        return {"scale": self._scale, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self._growth_tracker, "skipped_steps": self.skipped_steps,
                "enabled": self._enabled}

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict` (e.g. read back from JSON)."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"GradScaler.load_state_dict expects a dict, got "
                            f"{type(state_dict).__name__}")
        missing = [k for k in ("scale", "growth_factor", "backoff_factor", "growth_interval",
                               "_growth_tracker") if k not in state_dict]
        if missing:
            raise ValueError(f"GradScaler.load_state_dict: the state dict lacks {missing}; "
                             "was it saved by GradScaler.state_dict()?")
        scale = _positive("scale", state_dict["scale"])
        growth = _positive("growth_factor", state_dict["growth_factor"], low=1.0)
        backoff = _positive("backoff_factor", state_dict["backoff_factor"], high=1.0)
        interval = check_int(state_dict["growth_interval"], "growth_interval", "GradScaler")
        who = "GradScaler.load_state_dict"
        tracker = check_int(state_dict["_growth_tracker"], "_growth_tracker", who, low=0)
        skipped = check_int(state_dict.get("skipped_steps", 0), "skipped_steps", who, low=0)
        self._scale, self.growth_factor, self.backoff_factor = scale, growth, backoff
        self.growth_interval, self._growth_tracker = interval, tracker
        self.skipped_steps = skipped
        self._enabled = bool(state_dict.get("enabled", self._enabled))
        self._per_optimizer = {}

    def __repr__(self):
        return (f"GradScaler(scale={self.get_scale()}, growth_factor={self.growth_factor}, "
                f"backoff_factor={self.backoff_factor}, growth_interval={self.growth_interval}"
                f", enabled={self._enabled})")


# -- master weights ------------------------------------------------------------------------------
class MixedPrecision:
    """float16 model, float32 master weights, dynamic loss scaling: one object drives it all.

    ``MixedPrecision(model, optimizer, scaler=None, dtype="float16")`` takes a **float32**
    model and an optimizer built over its parameters, and:

    * keeps a float32 copy of every parameter (the *masters*, :meth:`master_parameters`);
    * converts the model to float16 in place (``model.to(np.float16)``: the same Parameter
      objects, float16 arrays; floating buffers too) -- the model is now the float16
      *working copy* that runs forward and backward;
    * points the optimizer at the masters: in every ``optimizer.param_groups[i]["params"]``
      each model parameter is replaced by its master (and any optimizer state moves with
      it). The optimizer class, its options and LR schedulers are unchanged; they simply
      see float32 Parameters (this is how NVIDIA's apex "O2" mode did it).

    A step: :meth:`backward` (``scaler.scale(loss).backward()``, then the float16 gradients
    are converted to float32 and *added* to the masters' ``.grad``, so gradient accumulation
    over micro-batches happens in float32) and :meth:`step` (unscale, clip, optimizer step
    or skip, scale update, round the masters into the float16 model, clear the gradients).

    **Saving.** :meth:`state_dict` has the keys of ``model.state_dict()`` with float32
    values: the master weights (exact) and the buffers converted to float32. Write it
    wherever a float32 model's weights go, e.g. ``np.savez(path, **{k: v.numpy() for k, v in
    mp.state_dict().items()})``; or get a float32 model back with ``model.to(np.float32);
    model.load_state_dict(mp.state_dict())``. :meth:`load_state_dict` loads such a float32
    state into the masters and the float16 model. Training checkpoints
    (:func:`~minillm.training.save_checkpoint` with ``mixed_precision=mp``) store the masters
    as ``model.npz`` and the scaler state as ``scaler.json``.

    Move the model to its device *before* wrapping it (the masters are made on the
    parameters' device). bfloat16 is not available (NumPy/CuPy have no such dtype).
    """

    def __init__(self, model, optimizer, scaler=None, dtype="float16"):
        self.dtype = half_dtype(dtype)
        if not isinstance(model, Module):
            raise TypeError(f"MixedPrecision: model must be an nn.Module, got "
                            f"{type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"MixedPrecision: optimizer must be a minillm Optimizer, got "
                            f"{type(optimizer).__name__}")
        if scaler is None:
            scaler = GradScaler()
        if not isinstance(scaler, GradScaler):
            raise TypeError(f"MixedPrecision: scaler must be a GradScaler, got "
                            f"{type(scaler).__name__}")
        params = list(model.parameters())
        if not params:
            raise ValueError("MixedPrecision: the model has no parameters")
        dtypes = sorted({str(p.dtype) for p in params})
        if dtypes != ["float32"]:
            if "float16" in dtypes:
                hint = ("it is already (partly) float16: build or load the model in float32 "
                        "and let MixedPrecision make the float16 copy (it keeps the float32 "
                        "masters)")
            else:
                hint = ("mixed precision keeps float32 master weights and computes in "
                        "float16; convert the model with model.float() first, or train in "
                        f"{dtypes[-1]} without fp16")
            raise ValueError(f"MixedPrecision needs a float32 model, but its parameters are "
                             f"{', '.join(dtypes)}: {hint}")
        model_ids = {id(p) for p in params}
        opt_params = _optimizer_params(optimizer)
        if not any(id(p) in model_ids for p in opt_params):
            raise ValueError("MixedPrecision: the optimizer holds none of the model's "
                             "parameters; build it over model.parameters() (in float32) and "
                             "pass both")
        for i, p in enumerate(opt_params):
            if p.dtype != _FP32:
                raise ValueError(f"MixedPrecision: optimizer parameter {i} is {p.dtype}; the "
                                 "optimizer must hold the float32 parameters of the model")
        self.model, self.optimizer, self.scaler = model, optimizer, scaler

        model.zero_grad()
        masters = {}
        with no_grad():
            for p in params:
                with p.device:
                    copy = p.data.copy()
                masters[id(p)] = Parameter(Tensor.wrap(copy, p.device),
                                           requires_grad=p.requires_grad)
            model.to(dtype=self.dtype)           # in place: the same Parameters, float16 data
        self._pairs = [(p, masters[id(p)]) for p in params]     # (float16 working, master)
        self._masters = masters
        for group in optimizer.param_groups:
            group["params"] = [masters.get(id(p), p) for p in group["params"]]
        optimizer.state = {masters.get(id(p), p): s for p, s in optimizer.state.items()}
        optimizer._state_device = {masters.get(id(p), p): d
                                   for p, d in optimizer._state_device.items()}

    # -- access ---------------------------------------------------------------------------------
    def master_parameters(self):
        """The float32 master Parameters, in the order of ``model.parameters()``."""
        return [m for _, m in self._pairs]

    def master_of(self, param):
        """The float32 master of a (float16) model parameter."""
        m = self._masters.get(id(param))
        if m is None:
            raise KeyError("MixedPrecision.master_of: not a parameter of the wrapped model")
        return m

    @property
    def last_step_skipped(self):
        """True when the latest :meth:`step` was skipped (an inf/NaN gradient)."""
        return self.scaler.last_step_skipped

    @property
    def skipped_steps(self):
        return self.scaler.skipped_steps

    def get_scale(self):
        return self.scaler.get_scale()

    # -- the step -------------------------------------------------------------------------------
    def backward(self, loss):
        """Backpropagate ``loss * scale`` and add the float16 gradients, as float32, to the
        masters' ``.grad`` (the model's ``.grad`` are cleared). Call it once per
        micro-batch; the gradients accumulate in float32 until :meth:`step`.

        An overflow in this backward is expected now and then (that is what the dynamic
        scale probes for) and is handled by :meth:`step`, so NumPy's overflow warnings are
        silenced here."""
        with np.errstate(over="ignore", invalid="ignore"):
            self.scaler.scale(loss).backward()
            self._grads_to_masters()

    def _grads_to_masters(self):
        for w, m in self._pairs:
            g = w.grad
            if g is None:
                continue
            with w.device:
                g32 = g.data.astype(m.dtype)
                if m.grad is None:
                    m.grad = Tensor.wrap(g32, m.device)
                else:
                    m.grad.data += g32
                    m.grad.mark_modified()
            w.grad = None

    def step(self, max_grad_norm=None, norm_type=2.0):
        """One optimizer step on the masters; returns the gradient norm (before clipping, a
        0-d device Tensor) when ``max_grad_norm`` is given, else None.

        float16 grads -> float32 master grads -> unscale (and the device-side inf/NaN check)
        -> clip to ``max_grad_norm`` -> ``optimizer.step()``, or skip it if a gradient is
        inf/NaN (the one host read) -> ``scaler.update()`` -> round the masters into the
        float16 model -> clear all gradients. :attr:`last_step_skipped` tells whether the
        step was skipped (then also skip the LR scheduler's step, as Hugging Face does).
        """
        scaler, opt = self.scaler, self.optimizer
        with np.errstate(over="ignore", invalid="ignore"):     # inf/NaN grads: a skipped step
            self._grads_to_masters()             # grads of a backward not made by backward()
            if scaler.is_enabled() and scaler._state(opt)["stage"] == "ready":
                scaler.unscale_(opt)
            grad_norm = None
            if max_grad_norm is not None:
                grad_norm = clip_grad_norm_(_optimizer_params(opt), max_grad_norm, norm_type)
        scaler.step(opt)
        skipped = scaler.is_enabled() and scaler.last_step_skipped
        scaler.update()
        if not skipped:
            self._masters_to_model()
        self.zero_grad()
        return grad_norm

    def _masters_to_model(self):
        with no_grad():
            for w, m in self._pairs:
                with w.device:
                    w.data[...] = m.data             # float32 -> float16, rounded
                w.mark_modified()

    def zero_grad(self):
        """Clear the gradients of the float16 model, the masters and the optimizer."""
        for w, m in self._pairs:
            w.grad = None
            m.grad = None
        self.optimizer.zero_grad()

    # -- saving ---------------------------------------------------------------------------------
    def state_dict(self):
        """``model.state_dict()``'s keys with float32 values: the masters for parameters
        (shared memory, like ``Module.state_dict``), float16 buffers converted to float32."""
        params = dict(self.model.named_parameters(remove_duplicate=False))
        out = OrderedDict()
        for key, t in self.model.state_dict().items():
            p = params.get(key)
            if p is not None and id(p) in self._masters:
                out[key] = self._masters[id(p)].detach()
            elif t.dtype == self.dtype:
                out[key] = t.astype(_FP32)
            else:
                out[key] = t
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Load a float32 state dict (as :meth:`state_dict` or a float32 model writes it)
        into the masters (exactly) and, rounded to float16, into the model.

        Floating values must be float32 (no silent cast, as in ``Module.load_state_dict``);
        keys and shapes are checked by the model's ``load_state_dict`` before anything
        changes. Returns its ``IncompatibleKeys``.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"MixedPrecision.load_state_dict expects a mapping name -> "
                            f"Tensor/array, got {type(state_dict).__name__}")
        arrays = {k: _source_array(k, v) for k, v in state_dict.items()}
        bad = [f"{k!r} ({a.dtype})" for k, a in arrays.items()
               if a.dtype.kind == "f" and a.dtype != _FP32]
        if bad:
            raise StateDictError(
                "MixedPrecision.load_state_dict: the master weights are float32, but these "
                "values are not: " + ", ".join(bad) + " (convert them with "
                ".astype(np.float32) first)")
        half = {k: (a.astype(self.dtype) if a.dtype.kind == "f" else a)
                for k, a in arrays.items()}
        result = self.model.load_state_dict(half, strict=strict)
        params = dict(self.model.named_parameters(remove_duplicate=False))
        with no_grad():
            for key, a in arrays.items():
                p = params.get(key)
                if p is None or id(p) not in self._masters:
                    continue
                copy_into(self._masters[id(p)], a)
        return result

    def __repr__(self):
        n = sum(m.size for m in self.master_parameters())
        return (f"MixedPrecision(dtype={self.dtype}, master_parameters={len(self._pairs)} "
                f"({n} values, float32), {self.scaler!r})")
