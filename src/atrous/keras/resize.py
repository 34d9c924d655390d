"""``BilinearResize``: bilinear resizing in Keras's and TensorFlow's conventions, run by
atrous's upsample kernel at inference."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

import atrous
from atrous.keras import runtime

#: coordinate_mode -> what it reproduces.
MODES = {
    "half_pixel": "UpSampling2D(interpolation='bilinear'), keras.ops.image.resize,"
                  " tf.image.resize (TF2)",
    "asymmetric": "TF1 tf.compat.v1.image.resize_bilinear(align_corners=False)",
    "align_corners": "TF1 resize_bilinear(align_corners=True), PyTorch align_corners=True",
    "pytorch_half_pixel": "ONNX pytorch_half_pixel (half_pixel, but 0 for a size-1 output)",
}


def _positive_pair(name: str, value: Any) -> tuple[int, int]:
    items = (value, value) if isinstance(value, (int, np.integer)) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or len(items) != 2:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
        out.append(int(v))
    return out[0], out[1]


@functools.lru_cache(maxsize=64)
def interpolation_matrix(size_in: int, size_out: int, mode: str) -> np.ndarray:
    """The (size_out, size_in) float64 matrix of 1-D bilinear resizing in ``mode``: row o
    holds the weights of output o. Taken from atrous's float64 reference (resizing one-hot
    rows), so the fallback uses the one definition of every coordinate mode."""
    eye = np.eye(size_in)[None, :, :, None]  # NCHW: channel c is the one-hot row c
    rows = atrous.upsample_bilinear(eye, (size_out, 1), coordinate_mode=mode, backend="numpy")
    return np.ascontiguousarray(rows[0, :, :, 0].T)


def resize_ops(x: Any, size: tuple[int, int], mode: str, data_format: str) -> Any:
    """Bilinear resize of the 4-D ``x`` to ``size`` in ``mode`` with keras.ops only
    (differentiable on every backend): ``keras.ops.image.resize`` for half_pixel (Keras's
    own), else one :func:`interpolation_matrix` product per spatial axis."""
    ops = keras.ops
    if mode == "half_pixel":
        return ops.image.resize(x, size, interpolation="bilinear", antialias=False,
                                data_format=data_format)
    hw = (1, 2) if data_format == "channels_last" else (2, 3)
    rows = ops.convert_to_tensor(interpolation_matrix(int(x.shape[hw[0]]), size[0], mode),
                                 dtype=x.dtype)
    cols = ops.convert_to_tensor(interpolation_matrix(int(x.shape[hw[1]]), size[1], mode),
                                 dtype=x.dtype)
    if data_format == "channels_last":
        return ops.einsum("pw,nowc->nopc", cols, ops.einsum("oh,nhwc->nowc", rows, x))
    return ops.einsum("pw,ncow->ncop", cols, ops.einsum("oh,nchw->ncow", rows, x))


@keras.saving.register_keras_serializable(package="atrous")
class BilinearResize(keras.layers.Layer):
    """Bilinear resize of (N, H, W, C) / (N, C, H, W) images to a size or by integer factors.

    ==============================================================  ========================
    stock form                                                      BilinearResize
    ==============================================================  ========================
    ``UpSampling2D(size=f, interpolation="bilinear")``              ``scale=f``
    ``keras.ops.image.resize(x, size)``, ``tf.image.resize`` (TF2)  ``size=size``
    TF1 ``resize_bilinear(x, size)`` (align_corners=False)          ``coordinate_mode=
                                                                    "asymmetric"``
    TF1 ``resize_bilinear(..., align_corners=True)``                ``align_corners=True``
    ==============================================================  ========================

    No antialiasing when shrinking (Keras's resize default, ``antialias=False``). At
    inference under the torch backend it runs ``atrous.upsample_bilinear``; otherwise
    keras.ops (``atrous.keras.runtime``).

    Args:
        size: the output (height, width), or one int for both; exclusive with ``scale``.
        scale: integer factors (one int or a pair): output = input size * factor.
        coordinate_mode: "half_pixel" (default), "asymmetric", "align_corners" or
            "pytorch_half_pixel" (ONNX's names).
        align_corners: the flag spelling: True means "align_corners"; it must agree with
            ``coordinate_mode`` when both are given.
        data_format: "channels_last" or "channels_first"; default Keras's image data format.
        backend: atrous's backend for the kernel path: "auto", "numba", "triton", "numpy".
    """

    def __init__(self, size: Any = None, *, scale: Any = None, coordinate_mode: str | None = None,
                 align_corners: bool | None = None, data_format: str | None = None,
                 backend: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if (size is None) == (scale is None):
            raise ValueError(f"give exactly one of size and scale, got size={size!r},"
                             f" scale={scale!r}")
        self.size = None if size is None else _positive_pair("size", size)
        self.scale = None if scale is None else _positive_pair("scale", scale)
        if align_corners is not None and not isinstance(align_corners, bool):
            raise TypeError(f"align_corners must be None, True or False, got {align_corners!r}")
        if coordinate_mode is not None and coordinate_mode not in MODES:
            raise ValueError(f"coordinate_mode must be one of {tuple(MODES)},"
                             f" got {coordinate_mode!r}")
        if coordinate_mode is None:
            coordinate_mode = "align_corners" if align_corners else "half_pixel"
        elif align_corners is not None and align_corners != (coordinate_mode == "align_corners"):
            raise ValueError(f"align_corners={align_corners} contradicts"
                             f" coordinate_mode={coordinate_mode!r}")
        self.coordinate_mode = coordinate_mode
        self.data_format = runtime.data_format(data_format)
        self.backend = backend
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def output_size(self, height: int | None, width: int | None) -> tuple[Any, Any]:
        """The output (height, width) for an input of (height, width) (None stays None)."""
        if self.size is not None:
            return self.size
        return (None if height is None else height * self.scale[0],
                None if width is None else width * self.scale[1])

    def compute_output_shape(self, input_shape: Sequence[Any]) -> tuple[Any, ...]:
        if self.data_format == "channels_last":
            n, h, w, c = input_shape
            oh, ow = self.output_size(h, w)
            return (n, oh, ow, c)
        n, c, h, w = input_shape
        oh, ow = self.output_size(h, w)
        return (n, c, oh, ow)

    def call(self, inputs: Any, training: Any = None) -> Any:
        hw = (1, 2) if self.data_format == "channels_last" else (2, 3)
        size = self.output_size(int(inputs.shape[hw[0]]), int(inputs.shape[hw[1]]))
        if not runtime.use_kernels(inputs, training):
            return resize_ops(inputs, size, self.coordinate_mode, self.data_format)
        layout = "NHWC" if self.data_format == "channels_last" else "NCHW"
        return atrous.upsample_bilinear(inputs.detach(), size,
                                        coordinate_mode=self.coordinate_mode, layout=layout,
                                        backend=self.backend)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "scale": self.scale,
                "coordinate_mode": self.coordinate_mode, "data_format": self.data_format,
                "backend": self.backend}
