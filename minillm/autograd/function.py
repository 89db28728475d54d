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


def run_backward(root, grad, retain_graph=False):
    """Backpropagate ``grad`` (dL/d``root``, an array shaped like ``root``) through the graph
    of ``root``: order the graph, walk it from ``root`` back to the leaves, and at each node
    apply the chain rule -- the node's ``backward`` turns dL/d(its output) into dL/d(each
    input) -- summing what reaches each tensor over all its uses."""
    grads = _Gradients()
    if root._ctx is None:                   # a leaf: its gradient is the seed itself
        grads.give_leaf(root, grad.copy())
        return
    order = _toposort(root._ctx)            # inputs before the nodes that use them
    grads.pending[id(root._ctx)] = grad
    for fn in reversed(order):              # so every user is done before its inputs
        g = grads.pending.pop(id(fn), None)
        if g is None:                       # nothing reached this node
            continue
        grads.give_retained(fn, g)
        for t, g_in in zip(fn.inputs, _node_backward(fn, g)):
            if g_in is not None and getattr(t, "requires_grad", False):
                _check_gradient(fn, t, g_in)
                grads.add(t, g_in)
        if not retain_graph:
            _free(fn)


def _node_backward(fn, g):
    """The gradients ``fn.backward(g)`` gives its inputs, as a tuple; first checks that no
    input it saved was changed in place since the forward pass."""
    if fn.save_inputs:
        _check_versions(fn)
    in_grads = fn.backward(g)
    return in_grads if type(in_grads) is tuple else (in_grads,)


class _Gradients:
    """Where the gradients go during one backward pass: ``pending`` (node id -> dL/d(node's
    output), summed over the node's users) until the node is visited, ``.grad`` for leaves.

    Bookkeeping that keeps memory low without copies: a sum is formed in place once this pass
    owns the array (``owned``); a leaf never receives a view or an array another leaf holds
    (``assigned``)."""

    def __init__(self):
        self.pending, self.owned, self.assigned = {}, set(), set()

    def add(self, t, g):
        """Add ``g`` to the gradient of tensor ``t`` (a leaf, or a node's output)."""
        if t._ctx is None:
            self.give_leaf(t, g)
            return
        key = id(t._ctx)
        prev = self.pending.get(key)
        if prev is None:
            self.pending[key] = g
        elif key in self.owned:
            prev += g
        else:
            self.pending[key] = prev + g
            self.owned.add(key)

    def give_leaf(self, t, g):
        if t.grad is None:
            if getattr(g, "base", None) is not None or id(g) in self.assigned:
                g = g.copy()    # never hand out a view or an array another tensor also holds
            self.assigned.add(id(g))
            from .tensor import Tensor
            t.grad = Tensor.wrap(g, t._device)
        else:
            t.grad.data += g

    def give_retained(self, fn, g):
        """``t.retain_grad()`` on the output of ``fn``: it gets its gradient too."""
        retained = getattr(fn, "retained", None)
        t = retained() if retained is not None else None
        if t is not None:
            self.give_leaf(t, g)


def _check_versions(fn):
    for i, (t, v) in enumerate(zip(fn.inputs, fn.versions)):
        if v is not None and t._version != v:
            raise GraphError(
                f"one of the tensors needed by {fn.name}.backward was modified by an in-place "
                f"operation after it was used: input {i} (shape {tuple(t.shape)}) is at version "
                f"{t._version}, expected version {v}. Make the change out of place "
                "(e.g. `x = x + 1` instead of `x += 1`) or do it after backward().")


def _check_gradient(fn, t, g):
    """An op's backward must return a gradient shaped like its input (an engine invariant),
    and under :class:`detect_anomaly` a finite one."""
    if g.shape != t.shape or g.dtype != t.dtype:
        raise RuntimeError(f"internal error: {fn.name}.backward returned a gradient of "
                           f"shape {tuple(g.shape)} {g.dtype} for an input of shape "
                           f"{t.shape} {t.dtype}")
    if _state["anomaly"] and not _finite(fn.xp, g):
        raise FloatingPointError(
            f"detect_anomaly: {fn.name}.backward produced NaN/Inf in the gradient of "
            f"its input of shape {tuple(t.shape)}. The op was created at:\n"
            f"{getattr(fn, 'trace', '(trace not recorded)')}")


def _free(fn):
    """Drop what ``fn`` saved for backward (a second backward through it is an error)."""
    fn.__dict__.clear()
    fn.inputs = None
