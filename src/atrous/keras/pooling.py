"""``GlobalAveragePooling2D``: Keras's layer, run by atrous's GAP kernel at inference."""

from __future__ import annotations

from typing import Any

import keras

import atrous
from atrous.keras import runtime


@keras.saving.register_keras_serializable(package="atrous")
class GlobalAveragePooling2D(keras.layers.GlobalAveragePooling2D):
    """A drop-in for ``keras.layers.GlobalAveragePooling2D`` (same arguments, config and
    outputs: ``data_format``, ``keepdims``).

    At inference under the torch backend it runs ``atrous.global_avg_pool`` (Numba on CPU
    tensors, Triton on CUDA tensors); otherwise Keras's own ``keras.ops.mean``
    (``atrous.keras.runtime``).

    Args:
        data_format: "channels_last" (N, H, W, C) or "channels_first" (N, C, H, W); default
            ``keras.config.image_data_format()``.
        keepdims: keep the spatial dimensions as size 1.
        backend: atrous's backend for the kernel path: "auto", "numba", "triton" or "numpy".
        **kwargs: as for any Keras layer (``name``, ``dtype``, ...).
    """

    def __init__(self, data_format: str | None = None, keepdims: bool = False, *,
                 backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(data_format=data_format, keepdims=keepdims, **kwargs)
        self.backend = backend

    def call(self, inputs: Any, training: Any = None) -> Any:
        if not runtime.use_kernels(inputs, training):
            return super().call(inputs)
        layout = "NHWC" if self.data_format == "channels_last" else "NCHW"
        return atrous.global_avg_pool(inputs.detach(), layout=layout, keepdims=self.keepdims,
                                      backend=self.backend)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backend": self.backend}
