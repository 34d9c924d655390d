"""Prepared (BatchNorm-folded) ASPP weights, cached per set of parameter tensors.

The ``atrous::aspp`` custom op receives the module's raw parameters on every call, so the
cache lives here, behind the op, where it works the same in eager mode and under
torch.compile (whose graphs pass the very same parameter tensors). An entry is keyed by
each tensor's identity, data pointer and version counter: ``load_state_dict``, optimizer
steps and any other in-place update bump the version, ``module.to()`` moves the data, and a
freed tensor's weak reference dies, so a stale entry is never used. Writing through
``tensor.data`` bypasses the version counter: call :func:`clear` after doing that.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from atrous.deeplab.head import HeadWeights, head_param_names, prepare_deeplab_head
from atrous.deeplab.weights import AsppWeights, param_names, prepare_aspp

#: What can be prepared: the parameter names (torchvision order) and the folding function.
KINDS = {"aspp": (param_names, prepare_aspp), "head": (head_param_names, prepare_deeplab_head)}

#: How many prepared weight sets to keep (each is as large as the ASPP's parameters).
MAX_ENTRIES = 4

_entries: OrderedDict[tuple, tuple[list[weakref.ref], Any]] = OrderedDict()
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def _key(params: Sequence[torch.Tensor]) -> tuple | None:
    try:
        return tuple((id(t), t.data_ptr(), t._version) for t in params)
    except RuntimeError:  # inference tensors have no version counter: do not cache
        return None


def prepared(params: Sequence[torch.Tensor], rates: tuple[int, ...], eps: float, dtype: str,
             device: str, kind: str = "aspp") -> AsppWeights | HeadWeights:
    """The folded weights of ``params`` (torchvision order) of an ASPP or a DeepLabHead
    (``kind``), from the cache when still valid."""
    key = _key(params)
    full = None if key is None else (kind, key, rates, float(eps), dtype, device)
    with _lock:
        hit = _entries.get(full) if full is not None else None
        if hit is not None and all(ref() is t for ref, t in zip(hit[0], params, strict=True)):
            _entries.move_to_end(full)
            _stats["hits"] += 1
            return hit[1]
        _stats["misses"] += 1
    names_of, prepare = KINDS[kind]
    names = names_of(len(rates))
    if len(params) != len(names):
        raise ValueError(f"atrous's {kind} op takes {len(names)} parameter tensors for"
                         f" {len(rates)} rates (state-dict order), got {len(params)}")
    weights = prepare(dict(zip(names, params, strict=True)), rates, eps=eps, dtype=dtype,
                      device=device)
    if full is not None:
        with _lock:
            _entries[full] = ([weakref.ref(t) for t in params], weights)
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
    return weights


def clear() -> None:
    """Drop every cached prepared weight set."""
    with _lock:
        _entries.clear()


def stats() -> dict[str, int]:
    """Cache hits and misses since the process started (for tests and curiosity)."""
    with _lock:
        return {**_stats, "entries": len(_entries)}
