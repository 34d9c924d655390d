"""Prepared forms of weights that plain calls have seen, kept until the weights change.

``atrous.dilated_conv2d(x, w)`` on the CPU packs ``w`` into the kernels' layout (and for
the Winograd variant transforms its filters); ``atrous.aspp(x, state_dict)`` and the torch
ops fold BatchNorms into the convs. Models call with the same weights again and again, so
the result is kept here, keyed by the weights' identity, and served while they are
provably unchanged:

* torch tensors: identity, data pointer and version counter. In-place updates
  (``load_state_dict``, optimizer steps, ``w.add_(1)``) bump the version and ``module.to()``
  moves the data. Writes that bypass the version counter (through ``tensor.data``, or
  through a NumPy array sharing the tensor's memory) are not seen: call
  :func:`clear` after those. Inference tensors have no version counter and are checked by
  content, like NumPy arrays.
* NumPy arrays (and inference tensors): identity, shape, strides, dtype, data pointer and a
  byte-exact comparison with a private copy taken when the entry was made. The comparison
  reads the weights and the copy once per call: about 3.5 ms for ASPP's 2048 -> 256 3x3
  (19 MB), measured on the 2-core development machine (see docs/weight-cache.md).

Entries hold weak references to the caller's arrays and never the arrays themselves: when
one is freed its entries go, and a new array at a reused address is never mistaken for it.
Memory is bounded by a byte budget (:data:`DEFAULT_LIMIT`, set with :func:`set_limit`,
public as ``atrous.set_weight_cache_limit``) counting the prepared forms and the private
copies; the least recently used entries go first, and a form larger than the whole budget
is used for its call and not kept. All of it is thread-safe: building and checking run
outside the lock, so threads with different weights do not wait for each other.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous.core.arrays import is_tensor

#: Default byte budget: one ASPP's three dilated 2048 -> 256 branches at 33x33 (packings,
#: Winograd filters, private copies: about 350 MB), with room to spare.
DEFAULT_LIMIT = 512 * 2**20

_UINTS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(eq=False)
class Entry:
    """One cached prepared form.

    Attributes:
        value: the prepared form (what ``build`` returned).
        uses: how many calls it served before this one (0: built for this call).
        nbytes: the bytes counted against the budget (value and private copies).
    """

    value: Any
    uses: int = 0
    nbytes: int = 0
    refs: tuple = ()
    marks: tuple = ()
    size: Callable[[Any], int] = field(default=lambda value: 0, repr=False)


_entries: OrderedDict[Hashable, Entry] = OrderedDict()
_lock = threading.Lock()
_dead: deque[tuple[Hashable, Entry]] = deque()  # freed while the lock was taken
_state = {"limit": DEFAULT_LIMIT, "bytes": 0, "hits": 0, "misses": 0}


def lookup(tag: Hashable, arrays: Sequence[Any], build: Callable[[], Any],
           size: Callable[[Any], int]) -> Entry:
    """The cached entry of ``build()`` for ``arrays`` under ``tag``, made now if missing or
    stale.

    Args:
        tag: what else the prepared form depends on (its kind, dtype, options), hashable.
        arrays: the weights it is made from (NumPy arrays or tensors; None allowed).
        build: makes the prepared form from ``arrays`` (must not keep references to them).
        size: the bytes of a prepared form (called again by :func:`grown`).

    Returns:
        The entry; ``entry.uses`` tells whether it was built for this call (0).
    """
    key = (tag, tuple(id(a) for a in arrays))
    with _lock:
        _purge()
        entry = _entries.get(key)
    if entry is not None and _valid(entry, arrays):
        size_now = _copies(entry) + entry.size(entry.value)  # it may have grown in use
        with _lock:
            entry.uses += 1
            _state["hits"] += 1
            if _entries.get(key) is entry:
                _entries.move_to_end(key)
                _state["bytes"] += size_now - entry.nbytes
                entry.nbytes = size_now
                _evict()
        return entry
    marks = tuple(_mark(a) for a in arrays)
    entry = Entry(build(), 0, 0, (), marks, size)
    entry.nbytes = _copies(entry) + size(entry.value)
    with _lock:
        _state["misses"] += 1
        _remove(key)
        if entry.nbytes <= _state["limit"]:
            entry.refs = tuple(None if a is None else weakref.ref(a, _on_free(key, entry))
                               for a in arrays)
            _entries[key] = entry
            _state["bytes"] += entry.nbytes
            _evict()
    return entry


def grown(entry: Entry) -> None:
    """Count ``entry`` again after its prepared form grew (Winograd filters made for a new
    map size), evicting to the budget; it may itself go."""
    with _lock:
        if not any(e is entry for e in _entries.values()):
            return
        new = _copies(entry) + entry.size(entry.value)
        _state["bytes"] += new - entry.nbytes
        entry.nbytes = new
        _evict()


def set_limit(nbytes: int) -> None:
    """Set the weight cache's byte budget (default :data:`DEFAULT_LIMIT`, 512 MiB) and
    evict the least recently used entries down to it; 0 turns the cache off.

    Public as ``atrous.set_weight_cache_limit``. The budget counts prepared forms
    (packings, Winograd filters, folded ASPP weights) and the private copies kept to
    check NumPy weights.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 0:
        raise ValueError(f"the weight cache limit must be an int >= 0 (bytes), got {nbytes!r}")
    with _lock:
        _state["limit"] = int(nbytes)
        _evict()


def clear() -> None:
    """Drop every cached prepared form (the counters of :func:`info` stay).

    Public as ``atrous.clear_weight_cache``: needed only after changing a tensor's data
    behind its version counter (``tensor.data``, a NumPy view of it), or to free memory.
    """
    with _lock:
        _entries.clear()
        _dead.clear()
        _state["bytes"] = 0


def info() -> dict[str, int]:
    """Public as ``atrous.weight_cache_info``: ``entries``, ``bytes`` held, the byte budget
    ``limit``, and ``hits`` and ``misses`` since the process started."""
    with _lock:
        _purge()
        return {"entries": len(_entries), **_state}


def nbytes(value: Any) -> int:
    """Bytes held by a prepared form: its NumPy arrays (each base buffer once), tensors'
    storages and those inside dicts, lists, tuples and dataclasses (a ``size`` for
    :func:`lookup`)."""
    seen: set[int] = set()
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if is_tensor(item):
            storage = item.untyped_storage()
            if id(storage) not in seen:
                seen.add(id(storage))
                total += storage.nbytes()
        elif isinstance(item, np.ndarray):
            base = item
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            stack.extend(getattr(item, f) for f in item.__dataclass_fields__)
    return total


def _copies(entry: Entry) -> int:
    """Bytes of the entry's private copies (of NumPy arrays and inference tensors)."""
    total = 0
    for m in entry.marks:
        if m is not None and m[0] == "content":
            copy = m[-1]
            total += copy.nbytes if isinstance(copy, np.ndarray) else \
                copy.untyped_storage().nbytes()
    return total


# ---- validity ----------------------------------------------------------------------------

def _has_version(t: Any) -> bool:
    try:
        t._version  # noqa: B018 - inference tensors raise here
    except RuntimeError:
        return False
    return True


def _mark(a: Any) -> tuple | None:
    """What must stay the same for ``a`` to be unchanged (taken before ``build`` runs)."""
    if a is None:
        return None
    if is_tensor(a) and _has_version(a):
        return ("version", a.data_ptr(), a._version, tuple(a.shape), tuple(a.stride()),
                a.dtype, a.device)
    if is_tensor(a):
        return ("content", a.data_ptr(), tuple(a.shape), tuple(a.stride()), a.dtype, a.device,
                a.detach().clone().contiguous())
    return ("content", a.ctypes.data, a.shape, a.strides, a.dtype, np.array(a, order="C"))


def _valid(entry: Entry, arrays: Sequence[Any]) -> bool:
    """Whether every array is the one the entry was made from (alive, the same object) and
    unchanged since."""
    for ref, mark, a in zip(entry.refs, entry.marks, arrays, strict=True):
        if mark is None or a is None:
            if mark is not None or a is not None:
                return False
            continue
        if ref is None or ref() is not a:
            return False
        if mark[0] == "version":
            if mark[1:] != (a.data_ptr(), a._version, tuple(a.shape), tuple(a.stride()),
                            a.dtype, a.device):
                return False
        elif not _same_content(mark, a):
            return False
    return True


def _same_content(mark: tuple, a: Any) -> bool:
    """Byte-exact equality of ``a`` with the private copy in ``mark`` (NaNs compare by
    their bits, and -0.0 differs from 0.0)."""
    copy = mark[-1]
    if is_tensor(a):
        import torch

        if mark[1:-1] != (a.data_ptr(), tuple(a.shape), tuple(a.stride()), a.dtype, a.device):
            return False
        got = a.detach().contiguous()
        return bool(torch.equal(got.reshape(-1).view(torch.uint8),
                                copy.reshape(-1).view(torch.uint8)))
    if mark[1:-1] != (a.ctypes.data, a.shape, a.strides, a.dtype):
        return False
    uint = _UINTS.get(a.dtype.itemsize)
    if uint is None or a.dtype.hasobject:
        return bool(np.array_equal(a, copy))
    return bool(np.array_equal(a.view(uint), copy.view(uint)))


# ---- bookkeeping (under the lock) ----------------------------------------------------------

def _on_free(key: Hashable, entry: Entry) -> Callable[[Any], None]:
    """A weak-reference callback dropping ``entry`` when one of its arrays is freed: now
    when the lock is free, else at the next cache operation (the callback may run inside
    one, on this very thread). It holds the entry weakly: entry -> weakref -> callback ->
    entry would be a cycle, keeping a dropped entry's memory until the garbage collector."""
    entry_ref = weakref.ref(entry)

    def callback(_: Any) -> None:
        dropped = entry_ref()
        if dropped is None:
            return
        if _lock.acquire(blocking=False):
            try:
                _remove(key, dropped)
            finally:
                _lock.release()
        else:
            _dead.append((key, dropped))
    return callback


def _purge() -> None:
    while _dead:
        _remove(*_dead.popleft())


def _remove(key: Hashable, entry: Entry | None = None) -> None:
    """Drop ``key``'s entry (only if it is ``entry``, when given)."""
    current = _entries.get(key)
    if current is not None and (entry is None or current is entry):
        del _entries[key]
        _state["bytes"] -= current.nbytes


def _evict() -> None:
    while _entries and _state["bytes"] > _state["limit"]:
        _, old = _entries.popitem(last=False)
        _state["bytes"] -= old.nbytes
