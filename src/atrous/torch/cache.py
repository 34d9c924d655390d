"""Prepared (BatchNorm-folded) ASPP and head weights, cached per set of parameter tensors.

The ``atrous::aspp`` custom op receives the module's raw parameters on every call, so the
cache lives behind the op, where it works the same in eager mode and under torch.compile
(whose graphs pass the very same parameter tensors). It is the process's weight cache
(``atrous.weight_cache``): an entry is keyed by each tensor's identity, data pointer and
version counter, so ``load_state_dict``, optimizer steps and any other in-place update
(a bumped version), ``module.to()`` (moved data) and a freed tensor (a dead weak
reference) all make it stale, and its byte budget (``atrous.set_weight_cache_limit``)
bounds it. Writing through ``tensor.data`` bypasses the version counter: call
:func:`clear` after doing that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from atrous import weight_cache
from atrous.deeplab.head import HeadWeights, head_param_names, prepare_deeplab_head
from atrous.deeplab.weights import AsppStructure, AsppWeights, param_names, prepare_aspp

#: What can be prepared: the parameter names (torchvision order) and the folding function.
KINDS = {"aspp": (param_names, prepare_aspp), "head": (head_param_names, prepare_deeplab_head)}


def prepared(params: Sequence[torch.Tensor], rates: Any, eps: float, dtype: str,
             device: str, kind: str = "aspp") -> AsppWeights | HeadWeights:
    """The folded weights of ``params`` (state-dict order) of an ASPP or a DeepLabHead
    (``kind``), from the cache when still valid. ``rates``: torchvision's rates, or for an
    ASPP an AsppStructure."""
    names_of, prepare = KINDS[kind]
    names = names_of(rates if kind == "aspp" else len(rates))
    if len(params) != len(names):
        raise ValueError(f"atrous's {kind} op takes {len(names)} parameter tensors for"
                         f" {rates} (state-dict order), got {len(params)}")
    params = list(params)

    def build() -> AsppWeights | HeadWeights:
        return prepare(dict(zip(names, params, strict=True)), rates, eps=eps, dtype=dtype,
                       device=device)

    key = rates if isinstance(rates, AsppStructure) else tuple(rates)
    entry = weight_cache.lookup((kind, key, float(eps), dtype, device), params,
                                build, weight_cache.nbytes)
    return entry.value


def clear() -> None:
    """Drop every cached prepared weight set (the whole weight cache)."""
    weight_cache.clear()


def stats() -> dict[str, int]:
    """The weight cache's hits, misses, entries and bytes (for tests and curiosity)."""
    return weight_cache.info()
