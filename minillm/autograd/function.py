"""Functions (graph nodes), grad mode, anomaly mode and the backward engine.

A :class:`Function` works on raw arrays: ``forward(*arrays) -> array`` and
``backward(grad) -> (grad per input, ...)``. ``Function.apply(*args)`` unwraps Tensor
arguments, runs ``forward``, and (when grad mode is on and an input requires grad)
links the output Tensor to the node, so ``loss.backward()`` can walk the graph back.

The engine (:func:`run_backward`) sorts the graph topologically with an explicit stack
(no recursion, so a 10,000-op chain works), visits every node once in reverse order
(linear time, also for a node used by thousands of branches), and accumulates
gradients like PyTorch: into ``.grad`` of leaves, summed over all uses.
"""
from __future__ import annotations

import functools
import traceback

from .. import backend

__all__ = ["Function", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
           "detect_anomaly", "is_anomaly_enabled", "run_backward"]

_state = {"grad": True, "anomaly": False}


def is_grad_enabled():
    return _state["grad"]


class set_grad_enabled:
    """Context manager / decorator that sets grad mode and restores the previous one."""

    def __init__(self, mode):
        self.mode = bool(mode)
        self._prev = []

    def __enter__(self):
        self._prev.append(_state["grad"])
        _state["grad"] = self.mode
        return self

    def __exit__(self, *exc):
        _state["grad"] = self._prev.pop()
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):     # a fresh context per call: safe to nest/recurse
                return fn(*args, **kwargs)
        return wrapper


class no_grad(set_grad_enabled):
    """``with mm.no_grad():`` ops record no graph (nestable; also a decorator)."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Turn grad mode back on inside a ``no_grad`` block."""

    def __init__(self):
        super().__init__(True)


def is_anomaly_enabled():
    return _state["anomaly"]


class detect_anomaly:
    """Check every op's output and every gradient for NaN/Inf and name the op that made it.

    Slow (one device synchronisation per op): a debugging tool. The error names the op,
    whether it happened in forward or backward, and where in your code the op was created.
    """

    def __init__(self, enabled=True):
        self.enabled = enabled
        self._prev = []

    def __enter__(self):
        self._prev.append(_state["anomaly"])
        _state["anomaly"] = self.enabled
        return self

    def __exit__(self, *exc):
        _state["anomaly"] = self._prev.pop()
        return False


class GraphError(RuntimeError):
    """Misuse of the graph: backward twice, in-place change of a saved tensor, ..."""


def _finite(xp, a):
    from ..backend import to_host
    return bool(to_host(xp.isfinite(a).all()))


def _describe(args):
    parts = []
    for a in args:
        if hasattr(a, "shape") and hasattr(a, "dtype"):
            parts.append(f"{tuple(a.shape)} {a.dtype}")
        else:
            parts.append(repr(a))
    return ", ".join(parts)


class Function:
    """Base class of differentiable operations.

    Subclasses implement ``forward(self, *arrays, **options)`` returning one array and
    ``backward(self, grad)`` returning one gradient per positional input (``None`` for
    inputs that are not differentiable). ``self.xp`` is the array module of the inputs'
    device; anything ``forward`` needs later is stored on ``self``.

    ``save_inputs``: set to False when ``backward`` never reads the input arrays (add,
    reshape, ...). When True the engine records the inputs' version counters and refuses
    to run ``backward`` if one was modified in place after the forward pass.
    """

    save_inputs = True

    @classmethod
    def apply(cls, *args, **options):
        from .tensor import Tensor
        dev = None
        arrays = []
        requires = False
        for a in args:
            if isinstance(a, Tensor):
                if dev is None:
                    dev = a._device
                elif a._device is not dev and a._device != dev:
                    devs = ", ".join(str(t._device) for t in args if isinstance(t, Tensor))
                    raise RuntimeError(
                        f"{cls.__name__}: all tensors must be on one device, got {devs}; "
                        "move them with tensor.to(device)")
                requires = requires or a.requires_grad
                arrays.append(a.data)
            else:
                arrays.append(a)
        if dev is None:
            raise TypeError(f"{cls.__name__}.apply needs at least one Tensor argument")
        fn = cls()
        fn.xp = dev.xp
        try:
            out = fn.forward(*arrays, **options)
        except (ValueError, IndexError) as e:
            if getattr(e, "_minillm", False):
                raise
            backend.flush_checks()           # a queued value check explains it better
            err = type(e)(f"{cls.__name__}: invalid input(s) [{_describe(args)}]"
                          f"{' with ' + repr(options) if options else ''}: {e}")
            err._minillm = True
            raise err from e
        anomaly = _state["anomaly"]
        if anomaly and out.dtype.kind == "f" and not _finite(fn.xp, out):
            raise FloatingPointError(
                f"detect_anomaly: {cls.__name__} produced NaN/Inf in forward "
                f"(inputs: {_describe(args)})")
        requires = requires and _state["grad"]
        result = Tensor._make(out, dev, requires)
        if requires:
            fn.inputs = args
            if cls.save_inputs:
                fn.versions = tuple(a._version if isinstance(a, Tensor) else None for a in args)
            if anomaly:
                fn.trace = "".join(traceback.format_stack(limit=12)[:-2])
            result._ctx = fn
        return result

    def forward(self, *args, **options):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    @property
    def name(self):
        return type(self).__name__


def _toposort(root_fn):
    """Nodes reachable from ``root_fn`` in topological order (inputs before users)."""
    if root_fn.inputs is None:
        raise GraphError(
            f"trying to backward through {root_fn.name} a second time: its saved values were "
            "freed after the first backward(); call backward(retain_graph=True) the first time "
            "if you need two passes")
    order = []
    seen = {id(root_fn)}
    stack = [(root_fn, 0)]
    while stack:
        fn, i = stack[-1]
        inputs = fn.inputs
        n = len(inputs)
        while i < n:
            t = inputs[i]
            i += 1
            ctx = getattr(t, "_ctx", None)
            if ctx is not None and id(ctx) not in seen:
                if ctx.inputs is None:
                    raise GraphError(
                        f"trying to backward through {ctx.name} a second time: its saved "
                        "values were freed after the first backward(); call "
                        "backward(retain_graph=True) the first time if you need two passes")
                seen.add(id(ctx))
                stack[-1] = (fn, i)
                stack.append((ctx, 0))
                break
        else:
            stack.pop()
            order.append(fn)
    return order


def _check_versions(fn):
    for i, (t, v) in enumerate(zip(fn.inputs, fn.versions)):
        if v is not None and t._version != v:
            raise GraphError(
                f"one of the tensors needed by {fn.name}.backward was modified by an in-place "
                f"operation after it was used: input {i} (shape {tuple(t.shape)}) is at version "
                f"{t._version}, expected version {v}. Make the change out of place "
                "(e.g. `x = x + 1` instead of `x += 1`) or do it after backward().")


def _accumulate_leaf(t, g, assigned):
    from .tensor import Tensor
    if t.grad is None:
        if getattr(g, "base", None) is not None or id(g) in assigned:
            g = g.copy()      # never hand out a view or an array another tensor also holds
        assigned.add(id(g))
        t.grad = Tensor._make(g, t._device, False)
    else:
        t.grad.data += g


def run_backward(root, grad, retain_graph=False):
    """Backpropagate ``grad`` (an array shaped like ``root``) through the graph of ``root``."""
    assigned = set()
    fn_root = root._ctx
    if fn_root is None:                     # a leaf: its gradient is the seed itself
        _accumulate_leaf(root, grad.copy(), assigned)
        return
    order = _toposort(fn_root)
    anomaly = _state["anomaly"]
    grads = {id(fn_root): grad}
    owned = set()
    for fn in reversed(order):
        g = grads.pop(id(fn), None)
        if g is None:
            continue
        retained = getattr(fn, "retained", None)
        if retained is not None:
            t = retained()
            if t is not None:
                _accumulate_leaf(t, g, assigned)
        if fn.save_inputs:
            _check_versions(fn)
        in_grads = fn.backward(g)
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        inputs = fn.inputs
        for t, gi in zip(inputs, in_grads):
            if gi is None or not getattr(t, "requires_grad", False):
                continue
            if gi.shape != t.shape or gi.dtype != t.dtype:
                raise RuntimeError(f"internal error: {fn.name}.backward returned a gradient of "
                                   f"shape {tuple(gi.shape)} {gi.dtype} for an input of shape "
                                   f"{t.shape} {t.dtype}")
            if anomaly and not _finite(fn.xp, gi):
                raise FloatingPointError(
                    f"detect_anomaly: {fn.name}.backward produced NaN/Inf in the gradient of "
                    f"its input of shape {tuple(t.shape)}. The op was created at:\n"
                    f"{getattr(fn, 'trace', '(trace not recorded)')}")
            ctx = t._ctx
            if ctx is None:
                _accumulate_leaf(t, gi, assigned)
                continue
            key = id(ctx)
            prev = grads.get(key)
            if prev is None:
                grads[key] = gi
            elif key in owned:
                prev += gi
            else:
                grads[key] = prev + gi
                owned.add(key)
        if not retain_graph:
            fn.__dict__.clear()
            fn.inputs = None
