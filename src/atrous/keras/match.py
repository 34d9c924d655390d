"""Finding ASPP blocks made of stock Keras layers in a functional model's layer graph.

A block is a ``Concatenate`` (on the channel axis) whose inputs all come, through chains of
single-consumer layers, from one source tensor S:

- a spatial branch: ``Conv2D`` (square kernel, dilation, stride 1, "same"; its activation
  ReLU, or linear followed by an optional ``BatchNormalization`` and a ReLU);
- at most one pooling branch: ``GlobalAveragePooling2D`` (or ``AveragePooling2D`` over the
  whole map, or ``keras.ops.mean`` over H and W) [-> ``Reshape`` to 1x1] -> 1x1 ``Conv2D``
  [-> BN] -> ReLU -> a resize from 1x1 to the map's size (``UpSampling2D``, ``Resizing``,
  ``keras.ops.image.resize``, ``BilinearResize``: from one pixel any of them broadcasts);

then a 1x1 ``Conv2D`` projection [-> BN] -> ReLU [-> ``Dropout``]. ReLU may be the conv's
``activation="relu"``, an ``Activation("relu")``, a plain ``ReLU()`` layer or
``keras.ops.relu``/``keras.ops.nn.relu``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras

L = keras.layers


class NoMatch(ValueError):
    """The graph at this point is not an ASPP block the converter knows (with the reason)."""


@dataclass
class Conv:
    """One conv of the block, the BatchNormalization after it (or None)."""

    conv: Any
    bn: Any = None


@dataclass
class Block:
    """An ASPP block found in a graph.

    Attributes:
        source: the feature map every branch reads (a KerasTensor).
        output: the block's output tensor.
        branches: the spatial branches' convs, in concatenation order.
        pool: the pooling branch's conv (or None).
        pool_index: the pooling branch's position in the concatenation.
        project: the projection conv.
        dropout: the projection's dropout rate (0 when none).
        data_format: "channels_last" or "channels_first".
        nodes: ids of the graph nodes the block replaces (all but the source's).
    """

    source: Any
    output: Any
    branches: list[Conv]
    pool: Conv | None
    pool_index: int
    project: Conv
    dropout: float
    data_format: str
    nodes: set[int] = field(default_factory=set)


def producer(tensor: Any) -> tuple[Any, Any]:
    """(operation, node) that produced a KerasTensor."""
    op, node_index, _ = tensor._keras_history
    return op, op._inbound_nodes[node_index]


def _is_relu(op: Any) -> bool:
    if isinstance(op, L.ReLU):
        return op.max_value is None and not op.negative_slope and not op.threshold
    if isinstance(op, L.Activation):
        return op.activation is keras.activations.relu
    return type(op).__name__ == "Relu" and type(op).__module__.startswith("keras")


def _single_input(node: Any) -> Any:
    if len(node.input_tensors) != 1:
        raise NoMatch(f"{node.operation.name} takes {len(node.input_tensors)} inputs")
    return node.input_tensors[0]


class Graph:
    """A functional model's nodes, with each tensor's consumers, for the matchers."""

    def __init__(self, model: Any) -> None:
        if not hasattr(model, "_nodes_by_depth"):
            raise TypeError(f"expected a functional keras Model (built from keras.Input),"
                            f" got {type(model).__name__}")
        self.model = model
        self.nodes = [n for depth in sorted(model._nodes_by_depth, reverse=True)
                      for n in model._nodes_by_depth[depth]]
        self.consumers: dict[int, list[Any]] = {}
        for node in self.nodes:
            for t in node.input_tensors:
                self.consumers.setdefault(id(t), []).append(node)
        self.outputs = {id(t) for t in model.outputs}

    def only_consumer(self, tensor: Any) -> Any:
        """The one node reading ``tensor``; NoMatch when it is read elsewhere too."""
        users = self.consumers.get(id(tensor), [])
        if len(users) != 1 or id(tensor) in self.outputs:
            raise NoMatch(f"{tensor.name} is read by {len(users)} layers or is a model output")
        return users[0]

    def internal(self, tensor: Any) -> None:
        """Check a tensor inside the block is read by nothing outside it."""
        self.only_consumer(tensor)

    # ---- matching ---------------------------------------------------------------------

    def _conv_chain(self, tensor: Any, nodes: set[int]) -> tuple[Conv, Any]:
        """Backward from ``tensor`` over [ReLU] <- [BN] <- Conv2D: (Conv, the conv's input)."""
        op, node = producer(tensor)
        relu = _is_relu(op)
        if relu:
            nodes.add(id(node))
            tensor = _single_input(node)
            self.internal(tensor)
            op, node = producer(tensor)
        bn = None
        if isinstance(op, L.BatchNormalization):
            bn = op
            nodes.add(id(node))
            tensor = _single_input(node)
            self.internal(tensor)
            op, node = producer(tensor)
        if not isinstance(op, L.Conv2D):
            raise NoMatch(f"expected a Conv2D, found {type(op).__name__} {op.name!r}")
        act = op.activation
        if relu and act is not keras.activations.linear:
            raise NoMatch(f"{op.name!r} has an activation before the ReLU")
        if not relu and (bn is not None or act is not keras.activations.relu):
            raise NoMatch(f"no ReLU after {op.name!r}")
        _check_conv(op)
        nodes.add(id(node))
        return Conv(op, bn), _single_input(node)

    def _pool_chain(self, tensor: Any, nodes: set[int], size: tuple[int, int],
                    data_format: str) -> tuple[Conv, Any]:
        """Backward from a resize-from-1x1 to the pooled source: (Conv, the source)."""
        op, node = producer(tensor)
        if not _is_resize(op):
            raise NoMatch(f"{op.name!r} is not a resize")
        shape = node.output_tensors[0].shape
        got = (shape[1], shape[2]) if data_format == "channels_last" else (shape[2], shape[3])
        if tuple(got) != tuple(size):
            raise NoMatch(f"{op.name!r} resizes to {got}, the map is {size}")
        nodes.add(id(node))
        inner = _single_input(node)
        self.internal(inner)
        conv, pooled = self._conv_chain(inner, nodes)
        if tuple(conv.conv.kernel_size) != (1, 1):
            raise NoMatch(f"the pooling branch's conv {conv.conv.name!r} is not 1x1")
        self.internal(pooled)
        op, node = producer(pooled)
        if isinstance(op, L.Reshape):
            nodes.add(id(node))
            pooled = _single_input(node)
            self.internal(pooled)
            op, node = producer(pooled)
        source = _single_input(node)
        if not _is_global_pool(op, source, data_format):
            raise NoMatch(f"{op.name!r} is not a global average pooling")
        nodes.add(id(node))
        return conv, source

    def block_at(self, concat_node: Any) -> Block:
        """The ASPP block whose concatenation is ``concat_node`` (NoMatch when it is not)."""
        op = concat_node.operation
        if not isinstance(op, L.Concatenate):
            raise NoMatch(f"{op.name!r} is not a Concatenate")
        nodes = {id(concat_node)}
        out_shape = concat_node.output_tensors[0].shape
        rank = len(out_shape)
        axis = op.axis % rank
        data_format = {3: "channels_last", 1: "channels_first"}.get(axis)
        if rank != 4 or data_format is None:
            raise NoMatch(f"{op.name!r} does not concatenate 4-D maps on a channel axis")
        hw = (out_shape[1], out_shape[2]) if axis == 3 else (out_shape[2], out_shape[3])
        branches, pool, pool_index, sources = [], None, -1, set()
        source = None
        for i, t in enumerate(concat_node.input_tensors):
            self.internal(t)
            if _is_resize(producer(t)[0]):
                if pool is not None:
                    raise NoMatch("two pooling branches")
                pool, source = self._pool_chain(t, nodes, hw, data_format)
                pool_index = i
            else:
                conv, source = self._conv_chain(t, nodes)
                branches.append(conv)
            sources.add(id(source))
        if len(sources) != 1 or not branches:
            raise NoMatch("the branches do not all read one feature map")
        for c in branches:
            if c.conv.padding != "same" and tuple(c.conv.kernel_size) != (1, 1):
                raise NoMatch(f"{c.conv.name!r} has padding {c.conv.padding!r}, not 'same'")
        project, output, dropout = self._projection(concat_node.output_tensors[0], nodes)
        block = Block(source, output, branches, pool, pool_index, project, dropout,
                      data_format, nodes)
        _check_uniform(block)
        return block

    def _projection(self, tensor: Any, nodes: set[int]) -> tuple[Conv, Any, float]:
        node = self.only_consumer(tensor)
        op = node.operation
        if not isinstance(op, L.Conv2D) or tuple(op.kernel_size) != (1, 1):
            raise NoMatch(f"the concatenation feeds {op.name!r}, not a 1x1 Conv2D")
        _check_conv(op)
        nodes.add(id(node))
        conv, bn, relu = op, None, op.activation is keras.activations.relu
        if not relu and op.activation is not keras.activations.linear:
            raise NoMatch(f"{op.name!r} has an activation other than ReLU")
        tensor = node.output_tensors[0]
        if not relu:
            node = self.only_consumer(tensor)
            if isinstance(node.operation, L.BatchNormalization):
                bn = node.operation
                nodes.add(id(node))
                tensor = node.output_tensors[0]
                node = self.only_consumer(tensor)
            if not _is_relu(node.operation):
                raise NoMatch(f"no ReLU after the projection {op.name!r}")
            nodes.add(id(node))
            tensor = node.output_tensors[0]
        dropout = 0.0
        users = self.consumers.get(id(tensor), [])
        if len(users) == 1 and id(tensor) not in self.outputs \
                and isinstance(users[0].operation, L.Dropout):
            dropout = float(users[0].operation.rate)
            nodes.add(id(users[0]))
            tensor = users[0].output_tensors[0]
        return Conv(conv, bn), tensor, dropout

    def blocks(self) -> list[Block]:
        """Every ASPP block of the graph, in graph order."""
        found = []
        for node in self.nodes:
            if isinstance(node.operation, L.Concatenate):
                try:
                    found.append(self.block_at(node))
                except NoMatch:
                    continue
        return found


def _check_conv(op: Any) -> None:
    if tuple(op.strides) != (1, 1) or op.groups != 1:
        raise NoMatch(f"{op.name!r} has strides {op.strides} / groups {op.groups}")
    k = tuple(op.kernel_size)
    if k[0] != k[1] or op.dilation_rate[0] != op.dilation_rate[1]:
        raise NoMatch(f"{op.name!r} is not square: kernel {k}, dilation {op.dilation_rate}")


def _is_resize(op: Any) -> bool:
    """A resize that broadcasts a 1x1 map (every bilinear or nearest convention does)."""
    if isinstance(op, L.UpSampling2D | L.Resizing):
        return op.interpolation in ("bilinear", "nearest") and not getattr(
            op, "crop_to_aspect_ratio", False) and not getattr(op, "pad_to_aspect_ratio", False)
    if type(op).__name__ == "Resize" and type(op).__module__.startswith("keras"):
        return op.interpolation in ("bilinear", "nearest") and not op.crop_to_aspect_ratio \
            and not op.pad_to_aspect_ratio
    return type(op).__name__ == "BilinearResize"


def _is_global_pool(op: Any, source: Any, data_format: str) -> bool:
    hw = (1, 2) if data_format == "channels_last" else (2, 3)
    if isinstance(op, L.GlobalAveragePooling2D):
        return op.data_format == data_format
    if isinstance(op, L.AveragePooling2D):
        size = tuple(source.shape[a] for a in hw)
        return op.data_format == data_format and tuple(op.pool_size) == size \
            and op.padding == "valid"
    if type(op).__name__ == "Mean" and type(op).__module__.startswith("keras"):
        axes = op.axis if op.axis is not None else ()
        return sorted(a % 4 for a in axes) == list(hw)
    return False


def _check_uniform(block: Block) -> None:
    """What the ASPP layer expresses: one filter count, bias and BN choice for the branches
    and the projection (the pooling conv's bias may differ), one BN epsilon."""
    every = [*block.branches, block.project] + ([block.pool] if block.pool else [])
    filters = {c.conv.filters for c in every}
    if len(filters) != 1:
        raise NoMatch(f"the convs have different filter counts {sorted(filters)}")
    bias = {c.conv.use_bias for c in [*block.branches, block.project]}
    if len(bias) != 1:
        raise NoMatch("some branch/projection convs have a bias and some do not")
    bns = {c.bn is not None for c in every}
    if len(bns) != 1:
        raise NoMatch("some convs have a BatchNormalization and some do not")
    eps = {float(c.bn.epsilon) for c in every if c.bn is not None}
    if len(eps) > 1:
        raise NoMatch(f"the BatchNormalizations have different epsilons {sorted(eps)}")
    for c in every:
        if c.conv.data_format != block.data_format:
            raise NoMatch(f"{c.conv.name!r} is {c.conv.data_format}, the block"
                          f" {block.data_format}")
        axis = None if c.bn is None else c.bn.axis % 4
        if c.bn is not None and axis != (3 if block.data_format == "channels_last" else 1):
            raise NoMatch(f"{c.bn.name!r} normalises axis {c.bn.axis}, not the channels")
