"""Batches for training: a DataLoader with seeded per-epoch shuffling, the default
collate function, and the two ways to cut a token stream for language models.

* :func:`random_windows` - nanoGPT's ``get_batch``: ``batch_size`` random windows of
  ``block_size`` tokens, ``y`` is ``x`` shifted by one.
* :func:`contiguous_stream` - the truncated-BPTT layout of Zaremba et al.: the stream is
  cut into ``batch_size`` rows and walked ``bptt`` steps at a time, so the hidden state of
  row ``b`` carries over from one batch to the next.

Everything is prepared on the host with NumPy and moved to the device once per batch as
``int64`` minillm tensors (on the default device unless ``device=`` says otherwise).
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Tensor, stack, tensor
from ..validation import check_int

__all__ = ["DataLoader", "default_collate", "random_windows", "contiguous_stream",
           "ContiguousStream"]


def _seed_from_global():
    """A seed drawn from minillm's CPU generator, so ``mm.manual_seed`` fixes it."""
    return int(backend.generator("cpu").integers(0, 2 ** 31 - 1, ()))


def _numeric_array(values):
    """``values`` as a rectangular numeric NumPy array, or ``None`` if it is not one."""
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):  # ragged nested lists
        return None
    return arr if arr.dtype.kind in "biuf" else None


def _to_tensor(arr, device):
    if arr.dtype.kind in "iu":
        return tensor(arr.astype(np.int64, copy=False), dtype=np.int64, device=device)
    if arr.dtype.kind == "f":
        return tensor(arr, dtype=backend.get_default_dtype(), device=device)
    return tensor(arr, dtype=np.bool_, device=device)


def collate_field(values, device=None, strict=True):
    """Collate one field of a batch: numbers and equal-length number lists -> a tensor
    (ints -> int64, floats -> the default dtype, bools -> bool); tensors are stacked;
    strings, ``None`` and other objects stay a list. Unequal-length number lists are an
    error when ``strict`` (pad them with a Collator), else they stay a list."""
    first = values[0]
    if isinstance(first, Tensor):
        return stack(list(values))
    if isinstance(first, (str, bytes)) or first is None:
        return list(values)
    if isinstance(first, (bool, int, float, np.generic, np.ndarray, list, tuple)):
        arr = _numeric_array(values)
        if arr is not None:
            return _to_tensor(arr, device)
        lengths = sorted({len(v) for v in values if hasattr(v, "__len__")})
        numeric = all(isinstance(x, (int, float, np.number)) for v in values
                      if isinstance(v, (list, tuple)) for x in v)
        if strict and numeric and len(lengths) > 1:
            raise ValueError(f"cannot stack sequences of different lengths {lengths} into one "
                             "tensor; pad them with minillm.data.collators.Collator(pad_id=...)"
                             " (or pad_collate) as the DataLoader's collate_fn")
    return list(values)


def default_collate(batch, device=None):
    """Turn a list of examples into a batch.

    Dict examples give a dict of collated fields, tuples a tuple; each field is handled
    by :func:`collate_field` (ints -> int64 tensor on the default device, strings -> list).
    """
    if not batch:
        raise ValueError("default_collate got an empty batch")
    first = batch[0]
    if isinstance(first, dict):
        keys = list(first)
        for i, ex in enumerate(batch):
            if set(ex) != set(keys):
                raise ValueError(f"example {i} of the batch has fields {sorted(ex)}, the first "
                                 f"has {sorted(keys)}; every example needs the same fields")
        return {k: collate_field([ex[k] for ex in batch], device) for k in keys}
    if isinstance(first, tuple):
        if any(len(ex) != len(first) for ex in batch):
            raise ValueError("tuple examples of different lengths in one batch")
        return tuple(collate_field(list(col), device) for col in zip(*batch))
    return collate_field(batch, device)


class DataLoader:
    """Iterate over a dataset in batches.

    ``dataset`` is anything with ``len()`` and ``[i]`` (a :class:`minillm.datasets.Dataset`,
    a list...). With ``shuffle=True`` every epoch has its own order, drawn from
    ``(seed, epoch)``: the same seed gives the same sequence of epochs, and
    ``set_epoch(k)`` replays epoch ``k`` (e.g. after resuming). Each ``iter(loader)``
    uses the current epoch and then advances it. ``seed=None`` draws a seed from
    minillm's generator (so ``mm.manual_seed`` makes it reproducible).

    ``lengths`` (with ``shuffle``): one length per example; each epoch then groups examples
    of similar length into the same batch (:func:`group_by_length`), so a batch padded to its
    longest example wastes little. The batches still come in a random order.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, seed=None, drop_last=False,
                 collate_fn=None, lengths=None):
        batch_size = check_int(batch_size, "batch_size", expected="a positive int")
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader needs a dataset with len() and [i], got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = (_seed_from_global() if seed is None else int(seed)) if shuffle else seed
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.epoch = 0
        if lengths is not None and len(lengths) != len(dataset):
            raise ValueError(f"DataLoader: {len(lengths)} lengths for {len(dataset)} examples; "
                             "give one length per example")
        self.lengths = None if lengths is None else np.asarray(lengths)

    def set_epoch(self, epoch):
        """Use epoch ``epoch``'s order for the next iteration."""
        self.epoch = int(epoch)

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch=None):
        """The example indices of an epoch (default: the next one) in visiting order."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        if self.lengths is None:
            return order
        return group_by_length(order, self.lengths, self.batch_size, rng)

    def __iter__(self):
        order = self.order()
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order):
        bs = self.batch_size
        stop = len(order) - len(order) % bs if self.drop_last else len(order)
        for start in range(0, stop, bs):
            yield self.collate_fn([self.dataset[int(i)] for i in order[start:start + bs]])

    def __repr__(self):
        return (f"DataLoader({len(self.dataset)} examples, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last}, "
                f"epoch={self.epoch})")


def group_by_length(order, lengths, batch_size, rng, window=50):
    """``order`` rearranged so that batches hold examples of similar length: each run of
    ``window`` batches' worth of examples is sorted by length (longest first), cut into
    batches, and the full batches are shuffled; a short last batch stays last (batches are
    consecutive slices of the order)."""
    size = window * batch_size
    runs = [order[i:i + size] for i in range(0, len(order), size)]
    ranked = np.concatenate([r[np.argsort(-lengths[r], kind="stable")] for r in runs])
    n_full = len(ranked) // batch_size
    batches = ranked[:n_full * batch_size].reshape(n_full, batch_size)[rng.permutation(n_full)]
    return np.concatenate([batches.reshape(-1), ranked[n_full * batch_size:]])


# -- language-model batches ---------------------------------------------------------------
def _host_ids(ids, what):
    """A 1-D int64 host array from a list, NumPy array or minillm tensor of token ids."""
    arr = ids.numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what} expects a 1-D sequence of integer token ids, got an array "
                         f"of shape {arr.shape} and dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _draw(rng, seed, high, size):
    if seed is not None:
        return np.random.default_rng(seed).integers(0, high, size=size)
    if rng is None:
        return backend.to_host(backend.generator("cpu").integers(0, high, (size,)))
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, high, size=size)
    raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def random_windows(ids, block_size, batch_size, rng=None, seed=None, device=None):
    """One batch of random training windows, like nanoGPT's ``get_batch``.

    Starts ``i`` are uniform in ``[0, len(ids) - block_size)``; ``x[b] = ids[i:i+block_size]``
    and ``y[b] = ids[i+1:i+1+block_size]``. Returns ``(x, y)``, int64 tensors of shape
    ``(batch_size, block_size)``. Randomness: ``seed`` (the same batch every call),
    ``rng`` (a ``numpy.random.Generator`` that advances), or minillm's CPU generator.
    A minillm tensor ``ids`` is indexed where it lives (no host round trip); pass NumPy
    arrays rather than long Python lists to avoid a conversion per call.
    """
    if block_size < 1 or batch_size < 1:
        raise ValueError(f"block_size and batch_size must be >= 1, got {block_size}, {batch_size}")
    n = ids.shape[0] if isinstance(ids, Tensor) else len(ids)
    if n <= block_size:
        raise ValueError(f"random_windows needs more than block_size={block_size} tokens, got {n}")
    starts = _draw(rng, seed, n - block_size, batch_size)
    offsets = starts[:, None] + np.arange(block_size)
    if isinstance(ids, Tensor):
        if ids.ndim != 1:
            raise ValueError(f"random_windows expects 1-D ids, got shape {ids.shape}")
        dev = ids.device if device is None else backend.device(device)
        idx = backend.to_device(offsets, ids.device)
        x, y = ids.data[idx], ids.data[idx + 1]
        return (tensor(x, dtype=np.int64, device=dev), tensor(y, dtype=np.int64, device=dev))
    data = _host_ids(ids, "random_windows")
    return (tensor(data[offsets], dtype=np.int64, device=device),
            tensor(data[offsets + 1], dtype=np.int64, device=device))


class ContiguousStream:
    """Truncated-BPTT batches over one token stream (see :func:`contiguous_stream`)."""

    def __init__(self, ids, batch_size, bptt, device=None, time_major=False, drop_last=True):
        if batch_size < 1 or bptt < 1:
            raise ValueError(f"batch_size and bptt must be >= 1, got {batch_size}, {bptt}")
        data = _host_ids(ids, "contiguous_stream")
        batch_len = len(data) // batch_size
        if batch_len < 2:
            raise ValueError(f"{len(data)} tokens are too few for batch_size={batch_size} "
                             "(each row needs at least 2 tokens)")
        self.batch_size, self.bptt, self.time_major = batch_size, bptt, time_major
        self.batch_len = batch_len
        # row b holds tokens [b * batch_len, (b + 1) * batch_len); the tail is dropped
        self.data = data[:batch_size * batch_len].reshape(batch_size, batch_len)
        self.device = backend.device(device)
        steps = batch_len - 1
        self.starts = list(range(0, steps - steps % bptt if drop_last else steps, bptt))
        if not self.starts:
            raise ValueError(f"rows of {batch_len} tokens are too short for bptt={bptt} "
                             "(pass drop_last=False to get a shorter last window)")

    def __len__(self):
        return len(self.starts)

    def __iter__(self):
        for i in self.starts:
            seq = min(self.bptt, self.batch_len - 1 - i)
            x, y = self.data[:, i:i + seq], self.data[:, i + 1:i + 1 + seq]
            if self.time_major:
                x, y = x.T, y.T
            yield (tensor(np.ascontiguousarray(x), dtype=np.int64, device=self.device),
                   tensor(np.ascontiguousarray(y), dtype=np.int64, device=self.device))


def contiguous_stream(ids, batch_size, bptt, device=None, time_major=False, drop_last=True):
    """Batches for truncated backpropagation through time (Zaremba et al., 2014).

    The stream is cut into ``batch_size`` contiguous rows of ``len(ids) // batch_size``
    tokens; step ``k`` yields ``x = rows[:, k*bptt:(k+1)*bptt]`` and ``y`` shifted by one,
    shape ``(batch_size, bptt)`` (``(bptt, batch_size)`` with ``time_major=True``). As in
    Zaremba's ``ptb_iterator`` there are ``(len(ids) // batch_size - 1) // bptt`` steps
    (``drop_last=False`` adds a shorter last one). Returns an iterable with ``len()``.
    """
    return ContiguousStream(ids, batch_size, bptt, device, time_major, drop_last)
