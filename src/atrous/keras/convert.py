"""Converting stock-layer Keras ASPP blocks to :class:`atrous.keras.ASPP`, weights and all.

>>> aspp = atrous.keras.convert_aspp(block)        # a functional model that is one ASPP
>>> fast, report = atrous.keras.convert(model)     # every ASPP block of a model swapped

The blocks are found in the layer graph (``atrous.keras.match``); weights are copied, the
projection's input rows reordered when the pooling branch is not last in the concatenation
(the ASPP layer concatenates it last), and BatchNormalizations without ``center`` /
``scale`` get beta = 0 / gamma = 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from atrous.keras.aspp import ASPP
from atrous.keras.match import Block, Graph, NoMatch, producer


@dataclass
class Report:
    """What :func:`convert` swapped: one line per block (and per sub-model), and why any
    Concatenate that looked like an ASPP's was left alone."""

    swapped: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"swapped: {s}" for s in self.swapped] + [f"kept: {s}" for s in self.skipped]
        return "\n".join(lines) if lines else "nothing to convert"


def aspp_from_block(block: Block, *, backend: str = "auto", name: str | None = None) -> ASPP:
    """A built :class:`ASPP` equal to the matched ``block``, with its weights copied."""
    first = block.branches[0].conv
    every = [*block.branches, block.project] + ([block.pool] if block.pool else [])
    bn = next((c.bn for c in every if c.bn is not None), None)
    layer = ASPP(
        first.filters,
        [(int(c.conv.kernel_size[0]), int(c.conv.dilation_rate[0])) for c in block.branches],
        pooling=block.pool is not None, use_bias=bool(first.use_bias),
        batch_norm=bn is not None,
        pool_use_bias=bool(block.pool.conv.use_bias) if block.pool else None,
        epsilon=float(bn.epsilon) if bn is not None else 1e-3,
        momentum=float(bn.momentum) if bn is not None else 0.99, dropout=block.dropout,
        data_format=block.data_format, backend=backend, name=name,
        dtype=first.dtype_policy)
    layer.build(tuple(block.source.shape))
    sources = list(block.branches) + ([block.pool] if block.pool else []) + [block.project]
    for (conv, bn_dst), src in zip(layer.layers_in_order(), sources, strict=True):
        weights = [np.asarray(keras.ops.convert_to_numpy(w)) for w in src.conv.get_weights()]
        if src is block.project and block.pool is not None:
            weights[0] = _pool_last(weights[0], block)
        conv.set_weights(weights)
        if bn_dst is not None:
            bn_dst.set_weights(_bn_weights(src.bn))
    return layer


def _pool_last(kernel: np.ndarray, block: Block) -> np.ndarray:
    """The projection's HWIO kernel with its input rows in the ASPP layer's order."""
    c = block.project.conv.filters
    n = len(block.branches) + 1
    order = [i for i in range(n) if i != block.pool_index] + [block.pool_index]
    return np.concatenate([kernel[:, :, i * c:(i + 1) * c] for i in order], axis=2)


def _bn_weights(bn: Any) -> list[np.ndarray]:
    def value(v: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(v))

    mean, var = value(bn.moving_mean), value(bn.moving_variance)
    gamma = value(bn.gamma) if bn.gamma is not None else np.ones_like(mean)
    beta = value(bn.beta) if bn.beta is not None else np.zeros_like(mean)
    return [gamma, beta, mean, var]


def convert_aspp(block: Any, *, backend: str = "auto", name: str | None = None) -> ASPP:
    """An atrous :class:`ASPP` (built, weights copied) from a Keras ASPP block of stock
    layers: either structure, found in the layer graph.

    Args:
        block: a functional ``keras.Model`` holding exactly one ASPP block (the block
            itself, built from ``keras.Input``, or a model with one inside).
        backend: atrous's backend for the new layer ("auto", "numba", "triton", "numpy").
        name: the new layer's name.

    Raises:
        ValueError: when the graph holds no ASPP block, or more than one (with the reasons
            each Concatenate was not one).
    """
    graph = Graph(block)
    found, reasons = [], []
    for node in graph.nodes:
        if isinstance(node.operation, keras.layers.Concatenate):
            try:
                found.append(graph.block_at(node))
            except NoMatch as e:
                reasons.append(f"{node.operation.name}: {e}")
    if len(found) != 1:
        why = f" ({'; '.join(reasons)})" if reasons else ""
        raise ValueError(f"block {block.name!r} holds {len(found)} ASPP blocks, expected"
                         f" one{why}")
    return aspp_from_block(found[0], backend=backend, name=name)


def convert(model: Any, *, backend: str = "auto") -> tuple[Any, Report]:
    """A copy of the functional ``model`` with every stock-layer ASPP block replaced by an
    atrous :class:`ASPP` (sub-models converted recursively); the other layers are shared
    with ``model`` (same weights).

    Args:
        model: a functional ``keras.Model``.
        backend: atrous's backend for the new ASPP layers.

    Returns:
        (the new model, a :class:`Report` of what was swapped and what was kept and why).
    """
    report = Report()
    new = _rebuild(model, backend, report, {})
    return new, report


def _rebuild(model: Any, backend: str, report: Report, done: dict[int, Any]) -> Any:
    """``model`` with its blocks swapped; ``done`` maps sub-models already converted (a
    shared sub-model stays shared) to their conversions."""
    graph = Graph(model)
    blocks = []
    for node in graph.nodes:
        if isinstance(node.operation, keras.layers.Concatenate):
            try:
                blocks.append(graph.block_at(node))
            except NoMatch as e:
                report.skipped.append(f"{model.name}/{node.operation.name}: {e}")
    inside = set().union(*(b.nodes for b in blocks)) if blocks else set()
    ends = {id(producer(b.output)[1]): b for b in blocks}
    values: dict[int, Any] = {}
    for old, t in zip(model.inputs, _inputs_like(model.inputs), strict=True):
        values[id(old)] = t
    for node in graph.nodes:
        if node.is_input:
            continue
        if id(node) in ends:
            block = ends[id(node)]
            layer = aspp_from_block(block, backend=backend)
            values[id(block.output)] = layer(values[id(block.source)])
            report.swapped.append(f"{model.name}: the ASPP ending at {node.operation.name!r}"
                                  f" -> atrous ASPP {layer.name!r} (branches {layer.branches},"
                                  f" pooling {layer.pooling}, BN {layer.batch_norm})")
            continue
        if id(node) in inside:
            continue
        op = node.operation
        if hasattr(op, "_nodes_by_depth"):  # a functional sub-model
            if id(op) not in done:
                sub = Report()
                converted = _rebuild(op, backend, sub, done)
                report.skipped += sub.skipped
                report.swapped += sub.swapped
                done[id(op)] = converted if sub.swapped else op
            op = done[id(op)]
        args, kwargs = node.arguments.fill_in(values)
        outputs = op(*args, **kwargs)
        for old, y in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
            values[id(old)] = y
    def new(t: Any) -> Any:
        return values[id(t)]

    return keras.Model(keras.tree.map_structure(new, model._inputs_struct),
                       keras.tree.map_structure(new, model._outputs_struct), name=model.name)


def _inputs_like(tensors: list[Any]) -> list[Any]:
    return [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t.name) for t in tensors]
