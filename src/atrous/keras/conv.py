"""``AtrousConv2D``: ``keras.layers.Conv2D`` run by atrous's dilated convolution at inference."""

from __future__ import annotations

from typing import Any

import keras

import atrous
from atrous.keras import runtime


@keras.saving.register_keras_serializable(package="atrous")
class AtrousConv2D(keras.layers.Conv2D):
    """A drop-in for ``keras.layers.Conv2D``: the same arguments, config and weights (an HWIO
    ``kernel`` of shape (kh, kw, Cin/groups, filters) and a (filters,) ``bias``), so
    ``set_weights(conv.get_weights())`` moves a stock layer's weights in and out.

    At inference under the torch backend it runs ``atrous.dilated_conv2d`` with the bias and
    (for ``activation="relu"``) the ReLU fused; any other activation is applied after it.
    ``padding="same"`` with strides > 1 pads like TensorFlow (the odd pixel at the bottom and
    right). Elsewhere (training, other backends, unsupported dtypes) it runs Keras's own
    ``Conv2D.call`` (``atrous.keras.runtime``).

    Args:
        filters, kernel_size, strides, padding, data_format, dilation_rate, groups,
            activation, use_bias, and the initializers, regularizers and constraints: as for
            ``keras.layers.Conv2D`` (``padding`` "valid" or "same").
        backend: atrous's backend for the kernel path: "auto", "numba", "triton" or "numpy".
    """

    def __init__(self, filters: int, kernel_size: Any, strides: Any = (1, 1),
                 padding: str = "valid", data_format: str | None = None,
                 dilation_rate: Any = (1, 1), groups: int = 1, activation: Any = None,
                 use_bias: bool = True, *, backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(filters, kernel_size, strides=strides, padding=padding,
                         data_format=data_format, dilation_rate=dilation_rate, groups=groups,
                         activation=activation, use_bias=use_bias, **kwargs)
        self.backend = backend
        self._prepared = runtime.WeightCache()

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not runtime.use_kernels(inputs, training, self.weights):
            return super().call(inputs)
        x = inputs.detach()
        layout = "NHWC" if self.data_format == "channels_last" else "NCHW"
        weight, bias = self.oihw(x.dtype, x.device)
        relu = self.activation is keras.activations.relu
        x, padding = self._pad(x, layout)
        y = atrous.dilated_conv2d(x, weight, bias, stride=self.strides, padding=padding,
                                  dilation=self.dilation_rate, groups=self.groups,
                                  activation="relu" if relu else None, layout=layout,
                                  backend=self.backend)
        if relu or self.activation is keras.activations.linear:
            return y
        return self.activation(y)

    def oihw(self, dtype: Any, device: Any) -> tuple[Any, Any]:
        """The kernel as an OIHW torch tensor and the bias (or None), in ``dtype`` on
        ``device``, contiguous; cached until a weight changes."""
        kernel = runtime.torch_value(self.kernel)
        bias = runtime.torch_value(self.bias) if self.use_bias else None

        def build() -> tuple[Any, Any]:
            w = kernel.permute(3, 2, 0, 1).to(device=device, dtype=dtype).contiguous()
            b = None if bias is None else bias.to(device=device, dtype=dtype).contiguous()
            return w, b

        sources = [kernel] if bias is None else [kernel, bias]
        return self._prepared.get("conv", sources, build, dtype, device)

    def _pad(self, x: Any, layout: str) -> tuple[Any, Any]:
        """(x, padding for atrous): "valid" as is; "same" at stride 1 as atrous's "same"
        (which splits like TensorFlow); "same" at a stride as symmetric padding when the
        total is even, else the input padded explicitly, extra pixel bottom/right."""
        if self.padding == "valid":
            return x, "valid"
        if all(s == 1 for s in self.strides):
            return x, "same"
        dims = (1, 2) if layout == "NHWC" else (2, 3)
        pads = []
        for axis, k, s, d in zip(dims, self.kernel_size, self.strides, self.dilation_rate,
                                 strict=True):
            size = int(x.shape[axis])
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        if all(a == b for a, b in pads):
            return x, (pads[0][0], pads[1][0])
        import torch.nn.functional as F

        (top, bottom), (left, right) = pads
        spec = (0, 0, left, right, top, bottom) if layout == "NHWC" else (left, right, top,
                                                                          bottom)
        return F.pad(x, spec), "valid"

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backend": self.backend}
