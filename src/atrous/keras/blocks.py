"""The two ASPP blocks as stock Keras layers (functional models), for conversion examples,
tests and benchmarks: what Keras code writes, before :func:`atrous.keras.convert_aspp`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from atrous.keras import runtime

L = keras.layers


def _geometry(input_shape: Sequence[Any], data_format: str) -> tuple[int, tuple[int, int]]:
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be 4-D (batch included), got {input_shape!r}")
    if data_format == "channels_last":
        return -1, (input_shape[1], input_shape[2])
    return 1, (input_shape[2], input_shape[3])


def keras_tutorial_block(input_shape: Sequence[Any], filters: int = 256,
                         rates: Sequence[int] = (1, 6, 12, 18), *,
                         data_format: str | None = None, name: str = "aspp") -> keras.Model:
    """The ASPP of the Keras tutorials: ``Conv2D(filters, 3, dilation_rate=r,
    padding="same", activation="relu")`` per rate; the pooling branch
    ``GlobalAveragePooling2D`` -> ``Reshape`` to 1x1 -> 1x1 ``Conv2D`` + ReLU ->
    ``UpSampling2D(size=(H, W), interpolation="bilinear")``; ``Concatenate``; a 1x1
    ``Conv2D`` + ReLU. ``input_shape`` includes the batch (None allowed) and needs H, W."""
    fmt = runtime.data_format(data_format)
    axis, (h, w) = _geometry(input_shape, fmt)
    inp = keras.Input(batch_shape=tuple(input_shape))
    conv = dict(padding="same", activation="relu", data_format=fmt)
    outs = [L.Conv2D(filters, 3, dilation_rate=r, **conv)(inp) for r in rates]
    p = L.GlobalAveragePooling2D(data_format=fmt)(inp)
    p = L.Reshape((1, 1, -1) if fmt == "channels_last" else (-1, 1, 1))(p)
    p = L.Conv2D(filters, 1, **conv)(p)
    outs.append(L.UpSampling2D((h, w), data_format=fmt, interpolation="bilinear")(p))
    y = L.Conv2D(filters, 1, **conv)(L.Concatenate(axis=axis)(outs))
    return keras.Model(inp, y, name=name)


def torchvision_block(input_shape: Sequence[Any], filters: int = 256,
                      rates: Sequence[int] = (12, 24, 36), *, epsilon: float = 1e-5,
                      dropout: float = 0.5, data_format: str | None = None,
                      name: str = "aspp") -> keras.Model:
    """torchvision's ASPP in Keras: a 1x1 and a 3x3-per-rate ``Conv2D`` (no bias), each
    followed by ``BatchNormalization`` and ``ReLU``; the pooling branch
    ``GlobalAveragePooling2D(keepdims=True)`` -> 1x1 conv -> BN -> ReLU ->
    ``keras.ops.image.resize`` to (H, W); ``Concatenate``; 1x1 conv -> BN -> ReLU ->
    ``Dropout``."""
    fmt = runtime.data_format(data_format)
    axis, (h, w) = _geometry(input_shape, fmt)
    inp = keras.Input(batch_shape=tuple(input_shape))

    def conv_bn_relu(x: Any, k: int, rate: int) -> Any:
        x = L.Conv2D(filters, k, dilation_rate=rate, padding="same", use_bias=False,
                     data_format=fmt)(x)
        return L.ReLU()(L.BatchNormalization(axis=axis, epsilon=epsilon)(x))

    outs = [conv_bn_relu(inp, 1, 1)] + [conv_bn_relu(inp, 3, r) for r in rates]
    p = conv_bn_relu(L.GlobalAveragePooling2D(data_format=fmt, keepdims=True)(inp), 1, 1)
    outs.append(keras.ops.image.resize(p, (h, w), data_format=fmt))
    y = conv_bn_relu(L.Concatenate(axis=axis)(outs), 1, 1)
    return keras.Model(inp, L.Dropout(dropout)(y), name=name)
