"""Unstructured magnitude pruning of Linear layers.

Idea (Han et al., 2015, "Learning both Weights and Connections"): many weights of a trained
network are close to zero and contribute little, so set the smallest ones to zero and keep
them there. A 0/1 **mask** ``M`` of the weight's shape records which entries survive, and
the layer computes with the *effective weight* ``W ⊙ M``::

    y = x (W ⊙ M) + b
    dL/dW = M ⊙ (x^T dL/dy)          (the product rule: a pruned entry gets a zero gradient)

so pruned entries contribute nothing to the output and receive no gradient, and
fine-tuning after pruning cannot bring them back.

Which entries? The fraction ``sparsity`` of the weights with the smallest ``|w|``:

* ``scope="global"``: one threshold over all selected layers together. Layers whose weights
  are small overall (e.g. the residual projections ``c_proj``) lose more than the others.
* ``scope="layer"``: the same fraction in every layer.

Pruning is cumulative (iterative pruning: prune, fine-tune, prune more): a second call with a
higher sparsity ranks only the still-alive weights, so earlier pruned entries stay pruned and
the result has exactly ``round(sparsity * n)`` pruned weights (per layer for ``"layer"``).
Ties in ``|w|`` are broken by position (layer order of ``named_modules()``, then row-major
index), so the result is deterministic.

:class:`PrunedLinear` keeps the original layer's ``weight`` and ``bias`` Parameters (the same
objects: ``state_dict`` keys do not change and an optimizer built before pruning keeps
working) and adds the buffer ``weight_mask``. :func:`remove_pruning` makes the pruning
permanent (plain ``Linear`` layers with the zeros baked in).

Note: the weights stay dense arrays. Unstructured sparsity shows how many weights a network
can lose; it makes nothing faster or smaller here (that needs sparse kernels or storage).
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import functional as F
from ..autograd.function import no_grad
from ..autograd.tensor import ones_like
from ..nn import Linear, Module
from ..validation import check_number

__all__ = ["PrunedLinear", "magnitude_prune", "sparsity", "remove_pruning"]

SCOPES = ("global", "layer")


class PrunedLinear(Linear):
    """A Linear whose weight is multiplied by a 0/1 mask: ``y = x @ (weight * weight_mask) + bias``.

    ``weight`` and ``bias`` are ordinary Parameters (trained as usual); ``weight_mask`` is a
    buffer of the weight's shape and dtype (1 = kept, 0 = pruned), saved in ``state_dict``.
    Because the mask multiplies the weight inside the graph, pruned entries get a zero
    gradient. Build one from an existing layer with :meth:`from_linear` (it shares the
    layer's Parameters) or let :func:`magnitude_prune` do it.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.register_buffer("weight_mask", ones_like(self.weight))

    @classmethod
    def from_linear(cls, linear):
        """A PrunedLinear with all-ones mask that shares ``linear``'s weight and bias."""
        if type(linear) is not Linear:
            what = ("it is already a PrunedLinear" if isinstance(linear, PrunedLinear)
                    else f"got {type(linear).__name__}")
            raise TypeError(f"PrunedLinear.from_linear expects an nn.Linear; {what}")
        layer = cls.sharing(linear)         # no new (random) weights: the layer's are reused
        layer.register_buffer("weight_mask", ones_like(linear.weight))
        return layer

    def forward(self, x):
        return F.linear(x, self.weight * self.weight_mask, self.bias)

    def extra_repr(self):
        return super().extra_repr() + ", pruned"


# -- choosing and replacing layers (also used by quantize.py) -------------------------------------
def _check_model(model, who):
    if not isinstance(model, Module):
        raise TypeError(f"{who}: model must be an nn.Module, got {type(model).__name__}")


def _check_names(value, arg, who, allow_none):
    """``modules`` / ``skip``: a list or tuple of non-empty strings (or None where allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{who}: {arg} must be a list or tuple of layer names (dotted-name "
                        f"suffixes such as 'c_attn' or 'classifier'), got {value!r}"
                        + (f"; write {arg}=({value!r},)" if isinstance(value, str) else ""))
    for v in value:
        if not isinstance(v, str) or not v or v.startswith(".") or v.endswith("."):
            raise TypeError(f"{who}: every entry of {arg} must be a non-empty dotted name "
                            f"without a leading/trailing '.', got {v!r}")
    return tuple(value)


def _matches(name, suffix):
    """True when the dotted ``name`` ends with the whole components of ``suffix``
    ('h.0.attn.c_proj' matches 'c_proj' and 'attn.c_proj', not 'proj')."""
    return name == suffix or name.endswith("." + suffix)


def _linear_groups(model, kinds):
    """``[(name, layer, paths)]`` for every Linear (subclasses included) in ``model``;
    a layer reachable under several names (shared) appears once with all its paths."""
    groups = {}
    for path, m in model.named_modules(remove_duplicate=False):
        if isinstance(m, kinds):
            groups.setdefault(id(m), (path, m, []))[2].append(path)
    return list(groups.values())


def _select_linears(model, modules, skip, who, allowed=(Linear,), kinds=(Linear,)):
    """The layers ``who`` works on: every ``kinds`` layer of ``model`` (or those whose dotted
    name ends with an entry of ``modules``), minus those matching ``skip``.

    Every entry of ``modules`` and ``skip`` must match a layer (a typo is an error, not a
    silent no-op); a selected layer must be one of the exact types ``allowed`` (a Linear
    subclass with other state, e.g. an adapter, would lose it)."""
    _check_model(model, who)
    modules = _check_names(modules, "modules", who, allow_none=True)
    skip = _check_names(skip, "skip", who, allow_none=False)
    groups = _linear_groups(model, kinds)
    kind = "/".join(k.__name__ for k in kinds)
    if not groups:
        raise ValueError(f"{who}: {type(model).__name__} has no {kind} layers to work on")
    names = [n for n, _, _ in groups]
    for arg, entries in (("modules", modules or ()), ("skip", skip)):
        unmatched = [e for e in entries
                     if not any(_matches(p, e) for _, _, paths in groups for p in paths)]
        if unmatched:
            raise ValueError(f"{who}: {arg} entries {unmatched} match no {kind} layer; "
                             f"the {kind} layers are {names}")
    chosen = []
    for name, layer, paths in groups:
        if modules is not None and not any(_matches(p, e) for p in paths for e in modules):
            continue
        if any(_matches(p, e) for p in paths for e in skip):
            continue
        if type(layer) not in allowed:
            raise TypeError(f"{who}: layer {name!r} is a {type(layer).__name__}, a subclass of "
                            f"Linear with its own behaviour; {who} handles "
                            f"{[a.__name__ for a in allowed]}: convert or merge it first, or "
                            f"leave it out with skip=({name!r},)")
        if "" in paths:
            raise ValueError(f"{who}: the model itself is a {type(layer).__name__} and cannot "
                             "be replaced in place; wrap it, e.g. nn.Sequential(layer)")
        chosen.append((name, layer, paths))
    if not chosen:
        raise ValueError(f"{who}: every {kind} layer was left out (modules={modules}, "
                         f"skip={skip}); the layers are {names}")
    return chosen


def _set_submodule(model, path, new):
    """Put module ``new`` at the dotted ``path`` of ``model`` (the parent keeps its order)."""
    *parents, leaf = path.split(".")
    parent = model
    for part in parents:
        parent = parent._modules[part]
    parent._modules[leaf] = new


def _plain_linear(layer):
    """A plain Linear sharing ``layer``'s weight/bias Parameters (no new random weights)."""
    return Linear.sharing(layer)


def _one_device(layers, who):
    dev = layers[0][1].weight.device
    for name, layer, _ in layers:
        if layer.weight.device != dev:
            raise RuntimeError(f"{who}: the layers are on different devices ({dev} and "
                               f"{layer.weight.device} for {name!r}); move the model with "
                               "model.to(device) first")
    return dev


# -- pruning ----------------------------------------------------------------------------------
def _check_sparsity(value):
    return check_number(value, "sparsity", "magnitude_prune", 0, 1, high_open=True,
                        type_error=True, expected="in [0, 1) (the fraction of weights to "
                        "prune; 1 would remove every weight)")


def _count(fraction, n):
    """How many of ``n`` weights a fraction prunes: round half up."""
    return min(n, int(math.floor(fraction * n + 0.5)))


def _prune_order(scores, k, xp):
    """A 0/1 keep-vector: zero at the ``k`` smallest ``scores`` (stable: ties by position)."""
    keep = xp.ones(scores.shape, dtype=scores.dtype)
    if k:
        keep[xp.argsort(scores, kind="stable")[:k]] = 0
    return keep


def magnitude_prune(model, sparsity, scope="global", modules=None, skip=()):
    """Prune the fraction ``sparsity`` of the smallest-magnitude Linear weights, in place.

    ``model``: any Module; its Linear layers (or those whose dotted names end with an entry of
    ``modules``, minus those matching ``skip``, e.g. ``skip=("classifier",)``) become
    :class:`PrunedLinear` (sharing their Parameters). ``scope``: ``"global"`` (one threshold
    over all selected weights) or ``"layer"`` (the same fraction in each layer). The pruned
    weights are also set to zero. Cumulative: entries pruned by an earlier call stay pruned
    and count towards ``sparsity`` (asking for less than what is already pruned is an error).

    Returns ``{"sparsity": achieved fraction over the selected layers, "layers": {name:
    fraction}, "pruned": number of pruned weights, "total": number of weights}``.
    """
    who = "magnitude_prune"
    _check_model(model, who)
    target = _check_sparsity(sparsity)
    if scope not in SCOPES:
        raise ValueError(f"{who}: scope must be one of {list(SCOPES)}, got {scope!r}")
    layers = _select_linears(model, modules, skip, who, allowed=(Linear, PrunedLinear))
    xp = _one_device(layers, who).xp
    scores, sizes, dead = _prune_scores(layers, xp)
    if scope == "global":
        keeps = _global_keeps(scores, sizes, dead, target, xp, who)
    else:
        keeps = _layer_keeps(layers, scores, sizes, dead, target, xp, who)
    _apply_keep_masks(model, layers, keeps)
    return _prune_report(layers, sizes, keeps, xp)


def _prune_scores(layers, xp):
    """Per layer: the flat scores (|w|, -1 where already pruned), weight count, pruned count."""
    weights = [layer.weight.data for _, layer, _ in layers]
    old = [getattr(layer, "weight_mask", None) for _, layer, _ in layers]
    # score = |w| for alive weights and -1 for pruned ones: they rank first and stay pruned
    scores = [xp.abs(w).reshape(-1) if m is None else
              xp.where(m.data.reshape(-1) == 0, -1, xp.abs(w).reshape(-1))
              for w, m in zip(weights, old)]
    sizes = [int(w.size) for w in weights]
    dead = [0 if m is None else None for m in old]
    if any(d is None for d in dead):                 # one host read for all old masks
        flags = xp.stack([(m.data == 0).sum() for m in old if m is not None])
        counts = iter(backend.to_host(flags).tolist())
        dead = [d if d is not None else int(next(counts)) for d in dead]
    return scores, sizes, dead


def _refuse_revival(who, where, k_old, n, k, target):
    """Raise: ``sparsity=target`` would keep only ``k`` weights where ``k_old`` are pruned."""
    raise ValueError(f"{who}: {where} already has {k_old} of {n} weights pruned "
                     f"(sparsity {k_old / n:.4g}) and sparsity={target} would keep only "
                     f"{k}; pruning is cumulative and never revives weights: ask for "
                     f"sparsity >= {k_old / n:.4g}")


def _global_keeps(scores, sizes, dead, target, xp, who):
    """Keep masks (flat, per layer) from one threshold over all the selected weights."""
    total = sum(sizes)
    k = _count(target, total)
    if k < sum(dead):
        _refuse_revival(who, "the selected layers", sum(dead), total, k, target)
    keep = _prune_order(xp.concatenate(scores), k, xp)
    offsets = np.cumsum([0] + sizes)
    return [keep[offsets[i]:offsets[i + 1]] for i in range(len(sizes))]


def _layer_keeps(layers, scores, sizes, dead, target, xp, who):
    """Keep masks (flat, per layer) pruning the fraction ``target`` of each layer."""
    keeps = []
    for (name, _, _), s, n, d in zip(layers, scores, sizes, dead):
        k = _count(target, n)
        if k < d:
            _refuse_revival(who, f"layer {name!r}", d, n, k, target)
        keeps.append(_prune_order(s, k, xp))
    return keeps


def _apply_keep_masks(model, layers, keeps):
    """Make each layer a PrunedLinear (in ``model``) with its mask, and zero pruned weights."""
    with no_grad():
        for (name, layer, paths), keep in zip(layers, keeps):
            if type(layer) is Linear:
                layer = PrunedLinear.from_linear(layer)
                for p in paths:
                    _set_submodule(model, p, layer)
            mask = keep.reshape(layer.weight.shape).astype(layer.weight.dtype)
            layer.weight_mask.data[...] = mask
            layer.weight_mask.mark_modified()
            layer.weight.data *= mask                       # zero the pruned weights
            layer.weight.mark_modified()


def _prune_report(layers, sizes, keeps, xp):
    """The achieved sparsity overall and per layer, with the pruned and total counts."""
    total = sum(sizes)
    pruned = backend.to_host(xp.stack([(keep == 0).sum() for keep in keeps])).tolist()
    report_layers = {}
    for (name, _, _), n, k in zip(layers, sizes, pruned):
        report_layers[name] = k / n if n else 0.0
    return {"sparsity": sum(pruned) / total if total else 0.0, "layers": report_layers,
            "pruned": int(sum(pruned)), "total": int(total)}


def _pruned_groups(model, who):
    _check_model(model, who)
    return _linear_groups(model, (PrunedLinear,))


def sparsity(model):
    """The fraction of masked weights over all PrunedLinear layers of ``model`` (0.0 when it
    has none). Reads one number from the device."""
    groups = _pruned_groups(model, "sparsity")
    if not groups:
        return 0.0
    masks = [layer.weight_mask for _, layer, _ in groups]
    xp = masks[0].xp
    total = sum(int(m.size) for m in masks)
    pruned = backend.to_host(xp.stack([(m.data == 0).sum() for m in masks]).sum())
    return int(pruned) / total if total else 0.0


def remove_pruning(model):
    """Make pruning permanent: every PrunedLinear becomes a plain Linear (the same weight and
    bias Parameters) whose weight has the mask multiplied in. Returns the layers' names."""
    who = "remove_pruning"
    groups = _pruned_groups(model, who)
    if not groups:
        raise ValueError(f"remove_pruning: {type(model).__name__} has no PrunedLinear layers "
                         "(prune it first with magnitude_prune)")
    if any("" in paths for _, _, paths in groups):
        raise ValueError("remove_pruning: the model itself is a PrunedLinear and cannot be "
                         "replaced in place; use PrunedLinear inside a container")
    with no_grad():
        for _, layer, paths in groups:
            layer.weight.data *= layer.weight_mask.data
            layer.weight.mark_modified()
            plain = _plain_linear(layer)
            for p in paths:
                _set_submodule(model, p, plain)
    return [name for name, _, _ in groups]
