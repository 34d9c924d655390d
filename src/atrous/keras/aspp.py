"""``ASPP``: the Atrous Spatial Pyramid Pooling block as one Keras layer, fused by atrous.

The layer holds stock Keras sub-layers (``Conv2D``, ``BatchNormalization``), so its weights,
training and serialisation are Keras's own; only inference differs: the BatchNorms are
folded into the convs (once, cached until a weight changes) and the whole block runs as
atrous's fused ASPP (``atrous.aspp``: valid-tap and Winograd GEMMs into one concatenation
buffer, the pooling branch folded into the projection's per-image bias) or, for kernel
sizes the fused engines do not run, as a composition of atrous's public ops.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import keras

from atrous.keras import runtime

ops = keras.ops


def _check_branches(branches: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(branches, (str, bytes)) or not isinstance(branches, Sequence) or not branches:
        raise ValueError(f"branches must be a non-empty sequence of (kernel_size, rate) pairs,"
                         f" got {branches!r}")
    out = []
    for pair in branches:
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2 \
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                           and v >= 1 for v in pair):
            raise ValueError(f"branches must hold (kernel_size, rate) pairs of positive ints,"
                             f" got {pair!r} in {branches!r}")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


@keras.saving.register_keras_serializable(package="atrous")
class ASPP(keras.layers.Layer):
    """Atrous Spatial Pyramid Pooling, either common structure, as one Keras layer.

    Spatial branches ``Conv2D(filters, k, dilation_rate=rate, padding="same")`` [+ BN] +
    ReLU, one per ``branches`` entry; the pooling branch (global average pool -> 1x1 conv
    [+ BN] + ReLU -> bilinear upsample from 1x1, which is a broadcast); their concatenation
    (the pooling branch last); the 1x1 projection [+ BN] + ReLU [+ Dropout in training].

    - The Keras tutorial's block: :meth:`keras_tutorial` (3x3 at rates 1, 6, 12, 18, bias
      and ReLU, no BN).
    - torchvision's: :meth:`torchvision` (1x1 + 3x3 per rate, no bias, BN after each conv).

    Args:
        filters: channels of every branch and of the output.
        branches: (kernel_size, rate) per spatial branch, in concatenation order.
        pooling: whether the pooling branch is there.
        use_bias: whether the branch and projection convs have a bias.
        batch_norm: whether a BatchNormalization follows every conv.
        pool_use_bias: the pooling conv's bias; default ``use_bias`` (the DeepLabV3+
            tutorial on keras.io has no bias in the branches but one in the pooling conv).
        epsilon, momentum: the BatchNormalizations' (Keras's defaults 1e-3, 0.99;
            torchvision's eps is 1e-5).
        dropout: dropout rate after the projection, in training only (torchvision: 0.5).
        data_format: "channels_last" or "channels_first"; default Keras's image data format.
        backend: atrous's backend for the kernel path: "auto", "numba", "triton", "numpy".
        kernel_initializer: for every conv (Keras's default "glorot_uniform").
    """

    def __init__(self, filters: int = 256, branches: Sequence[Sequence[int]] = ((1, 1), (3, 6),
                 (3, 12), (3, 18)), *, pooling: bool = True, use_bias: bool = False,
                 batch_norm: bool = True, pool_use_bias: bool | None = None,
                 epsilon: float = 1e-3, momentum: float = 0.99, dropout: float = 0.0,
                 data_format: str | None = None, backend: str = "auto",
                 kernel_initializer: Any = "glorot_uniform", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters < 1:
            raise ValueError(f"filters must be a positive int, got {filters!r}")
        for name, flag in (("pooling", pooling), ("use_bias", use_bias),
                           ("batch_norm", batch_norm)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not float(epsilon) > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        self.filters = int(filters)
        self.branches = _check_branches(branches)
        self.pooling = pooling
        self.use_bias = use_bias
        self.batch_norm = batch_norm
        self.pool_use_bias = use_bias if pool_use_bias is None else bool(pool_use_bias)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        self.dropout = float(dropout)
        self.data_format = runtime.data_format(data_format)
        self.backend = backend
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self._axis = -1 if self.data_format == "channels_last" else 1
        self._prepared = runtime.WeightCache()

        def conv(k: int, rate: int, bias: bool, name: str) -> keras.layers.Conv2D:
            return keras.layers.Conv2D(self.filters, k, dilation_rate=rate, padding="same",
                                       use_bias=bias, data_format=self.data_format,
                                       kernel_initializer=self.kernel_initializer,
                                       name=name, dtype=self.dtype_policy)

        def bn(name: str) -> keras.layers.BatchNormalization | None:
            if not batch_norm:
                return None
            return keras.layers.BatchNormalization(axis=self._axis, epsilon=self.epsilon,
                                                   momentum=self.momentum, name=name,
                                                   dtype=self.dtype_policy)

        self.branch_convs = [conv(k, r, use_bias, f"branch{i}_conv")
                             for i, (k, r) in enumerate(self.branches)]
        # Keras tracks sub-layers through attributes: no None entries in its lists.
        self.branch_bns = [bn(f"branch{i}_bn") for i in range(len(self.branches))] \
            if batch_norm else []
        self.pool_conv = conv(1, 1, self.pool_use_bias, "pool_conv") if pooling else None
        self.pool_bn = bn("pool_bn") if pooling else None
        self.project_conv = conv(1, 1, use_bias, "project_conv")
        self.project_bn = bn("project_bn")
        self.project_dropout = keras.layers.Dropout(self.dropout) if self.dropout else None

    # ---- the two structures -------------------------------------------------------------

    @classmethod
    def keras_tutorial(cls, filters: int = 256, rates: Sequence[int] = (1, 6, 12, 18),
                       **kwargs: Any) -> ASPP:
        """The Keras tutorial's block: a 3x3 conv per rate (the first at rate 1), each with a
        bias and ReLU and no batch norm; the pooling branch; a 1x1 projection + bias + ReLU."""
        return cls(filters, [(3, r) for r in rates], use_bias=True, batch_norm=False, **kwargs)

    @classmethod
    def torchvision(cls, filters: int = 256, rates: Sequence[int] = (12, 24, 36), *,
                    epsilon: float = 1e-5, dropout: float = 0.5, **kwargs: Any) -> ASPP:
        """torchvision's structure: a 1x1 branch, a 3x3 branch per rate, the pooling branch,
        the projection; no biases, BatchNormalization after every conv, dropout 0.5."""
        return cls(filters, [(1, 1)] + [(3, r) for r in rates], use_bias=False,
                   batch_norm=True, epsilon=epsilon, dropout=dropout, **kwargs)

    # ---- Keras plumbing -----------------------------------------------------------------

    @property
    def width(self) -> int:
        """Channels of the concatenation the projection reads."""
        return self.filters * (len(self.branches) + int(self.pooling))

    def _shape(self, n: Any, h: Any, w: Any, c: Any) -> tuple[Any, ...]:
        return (n, h, w, c) if self.data_format == "channels_last" else (n, c, h, w)

    def build(self, input_shape: Sequence[Any]) -> None:
        if len(input_shape) != 4:
            raise ValueError(f"ASPP takes 4-D inputs, got shape {tuple(input_shape)}")
        if self.data_format == "channels_last":
            n, h, w, cin = input_shape
        else:
            n, cin, h, w = input_shape
        if cin is None:
            raise ValueError(f"ASPP needs a known channel count, got shape {tuple(input_shape)}")
        out = self._shape(n, h, w, self.filters)
        for conv, bn in self._branch_pairs():
            conv.build(tuple(input_shape))
            if bn is not None:
                bn.build(out)
        if self.pool_conv is not None:
            self.pool_conv.build(self._shape(n, 1, 1, cin))
            if self.pool_bn is not None:
                self.pool_bn.build(self._shape(n, 1, 1, self.filters))
        self.project_conv.build(self._shape(n, h, w, self.width))
        if self.project_bn is not None:
            self.project_bn.build(out)

    def compute_output_shape(self, input_shape: Sequence[Any]) -> tuple[Any, ...]:
        shape = list(input_shape)
        shape[self._axis] = self.filters
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters,
                "branches": [list(b) for b in self.branches], "pooling": self.pooling,
                "use_bias": self.use_bias, "batch_norm": self.batch_norm,
                "pool_use_bias": self.pool_use_bias, "epsilon": self.epsilon,
                "momentum": self.momentum, "dropout": self.dropout,
                "data_format": self.data_format, "backend": self.backend,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}

    def _branch_pairs(self) -> list[tuple[keras.layers.Conv2D, Any]]:
        bns = self.branch_bns or [None] * len(self.branch_convs)
        return list(zip(self.branch_convs, bns, strict=True))

    def layers_in_order(self) -> list[tuple[keras.layers.Conv2D, Any]]:
        """(conv, BatchNormalization or None) pairs: branches, pooling, projection."""
        pairs = self._branch_pairs()
        if self.pool_conv is not None:
            pairs.append((self.pool_conv, self.pool_bn))
        return [*pairs, (self.project_conv, self.project_bn)]

    # ---- the keras.ops form (training, other backends) ----------------------------------

    def _conv_bn_relu(self, x: Any, conv: Any, bn: Any, training: Any) -> Any:
        y = conv(x)
        if bn is not None:
            y = bn(y, training=training)
        return ops.relu(y)

    def call_ops(self, x: Any, training: Any = None) -> Any:
        """The block with Keras's own layers and ops (differentiable, every backend)."""
        outs = [self._conv_bn_relu(x, conv, bn, training)
                for conv, bn in self._branch_pairs()]
        if self.pool_conv is not None:
            spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
            pooled = ops.mean(x, axis=spatial, keepdims=True)
            pooled = self._conv_bn_relu(pooled, self.pool_conv, self.pool_bn, training)
            outs.append(pooled + ops.zeros_like(outs[0]))  # the upsample from 1x1
        y = self._conv_bn_relu(ops.concatenate(outs, axis=self._axis), self.project_conv,
                               self.project_bn, training)
        if self.project_dropout is not None:
            y = self.project_dropout(y, training=training)
        return y

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not runtime.use_kernels(inputs, training, self.weights):
            return self.call_ops(inputs, training)
        from atrous.keras import aspp_run

        return aspp_run.run(self, inputs.detach())
