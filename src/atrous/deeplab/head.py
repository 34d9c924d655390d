"""DeepLabV3's head: the ASPP, then 3x3 conv -> BN -> ReLU -> 1x1 conv to the classes, and
(optionally) DeepLabV3's bilinear upsampling of the logits to the image.

torchvision's ``DeepLabHead`` is ``Sequential(ASPP, Conv2d(256, 256, 3, padding=1),
BatchNorm2d, ReLU, Conv2d(256, classes, 1))``, so its state-dict keys are the ASPP's under
``0.``, then ``1.weight``, ``2.*`` (BN) and ``4.weight`` / ``4.bias``. On the CPU the 3x3 conv
runs through the ASPP engine's Winograd tiles and the classifier is one GEMM; elsewhere the
head is the public ops on the ASPP's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous import dispatch
from atrous.api import dilated_conv2d, upsample_bilinear
from atrous.core.args import check_layout
from atrous.core.arrays import check_inference, dtype_name, is_tensor, kind_of
from atrous.deeplab.api import aspp
from atrous.deeplab.fusions import Fusions
from atrous.deeplab.weights import (
    BN_KEYS,
    AsppWeights,
    Layer,
    check_rates,
    fold_cached,
    fold_layer,
    param_names,
    prepare_aspp,
)

Array = Any


def head_param_names(n_rates: int) -> list[str]:
    """Every tensor key of a torchvision DeepLabHead state dict but ``num_batches_tracked``."""
    return ([f"0.{k}" for k in param_names(n_rates)] + ["1.weight"]
            + [f"2.{k}" for k in BN_KEYS] + ["4.weight", "4.bias"])


@dataclass(frozen=True, eq=False)
class HeadWeights:
    """A DeepLabHead's folded weights: the ASPP's, the 3x3 conv's (BN folded) and the
    classifier's, as arrays of the ASPP weights' kind (NumPy on the CPU, else tensors)."""

    aspp: AsppWeights
    conv: Any             # (C, C, 3, 3) OIHW
    conv_bias: Any        # (C,)
    classifier: Any       # (classes, C, 1, 1)
    classifier_bias: Any  # (classes,)
    #: CPU: the 3x3 conv as (3, 3, C, C) taps and its Winograd filter cache.
    taps: np.ndarray | None = None
    filters: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.classifier.shape[0])


def prepare_deeplab_head(params: Mapping[str, Any], rates: Sequence[int], *,
                         eps: float = 1e-5, dtype: str | None = None,
                         device: Any = None) -> HeadWeights:
    """Fold a torchvision DeepLabHead state dict once (see :func:`prepare_aspp`)."""
    rates = check_rates(rates)
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a DeepLabHead state dict, got {type(params).__name__}")
    aspp_params = {k[2:]: v for k, v in params.items() if k.startswith("0.")}
    weights = prepare_aspp(aspp_params, rates, eps=eps, dtype=dtype, device=device)
    c = weights.out_channels
    names = head_param_names(len(rates))
    given = {k for k in params if not k.startswith("0.") and not k.endswith("batches_tracked")}
    missing, unexpected = sorted(set(names[-7:]) - given), sorted(given - set(names))
    if missing or unexpected:
        raise ValueError(f"params do not match a torchvision DeepLabHead: missing {missing},"
                         f" unexpected {unexpected[:6]}")
    classes = int(params["4.weight"].shape[0])
    shapes = {"1.weight": (c, c, 3, 3), "4.weight": (classes, c, 1, 1), "4.bias": (classes,)}
    shapes.update({f"2.{k}": (c,) for k in BN_KEYS})
    for key, shape in shapes.items():
        got = tuple(int(s) for s in params[key].shape)
        if got != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape}, got {got}")
    conv, conv_bias = fold_layer(params, Layer("1", "2", 3), float(eps), weights.device)
    host = weights.device == "cpu"

    def cast(a: Any) -> Any:
        if is_tensor(a):
            a = a.detach()
        if host:
            a = a.cpu().double().numpy() if is_tensor(a) else np.asarray(a, np.float64)
            return np.array(a, dtype=weights.dtype, order="C")  # a copy: holds no caller's
        import torch

        a = a if is_tensor(a) else torch.from_numpy(np.asarray(a))
        return a.to(device=weights.device, dtype=getattr(torch, weights.dtype),
                    memory_format=torch.contiguous_format, copy=True)

    classifier, classifier_bias = cast(params["4.weight"]), cast(params["4.bias"])
    taps = np.ascontiguousarray(conv.transpose(2, 3, 1, 0), dtype=weights.dtype) if host \
        else None
    return HeadWeights(weights, cast(conv), cast(conv_bias), classifier, classifier_bias, taps)


def deeplab_head(x: Array, weights: HeadWeights | Mapping[str, Array], *,
                 rates: Sequence[int] | None = None, eps: float = 1e-5, layout: str = "NCHW",
                 image_size: Any = None, backend: str = "auto",
                 fusions: Fusions | None = None) -> Array:
    """DeepLabV3's head at inference: ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv to classes,
    then, when ``image_size`` ((height, width) or one int) is given, bilinear upsampling of
    the logits to it (align_corners=False), as torchvision's ``DeepLabV3.forward`` does.

    Arguments as in :func:`atrous.aspp`; ``weights`` is :func:`prepare_deeplab_head`'s result
    or a torchvision DeepLabHead state dict (then ``rates`` is required).
    """
    layout = check_layout(layout)
    kind = kind_of(x=x)
    if isinstance(weights, Mapping):
        if rates is None:
            raise TypeError("rates is required when weights is a state dict")
        check_inference("atrous.deeplab_head", x, *weights.values())
        weights = fold_cached(prepare_deeplab_head, weights, rates, eps=eps,
                              dtype=dtype_name(x),
                              device=str(x.device) if kind.name == "cuda" else "cpu")
    elif not isinstance(weights, HeadWeights):
        raise TypeError(f"weights must be HeadWeights (atrous.prepare_deeplab_head) or a"
                        f" state dict, got {type(weights).__name__}")
    y = aspp(x, weights.aspp, rates=rates, layout=layout, backend=backend, fusions=fusions)
    name = dispatch.resolve_backend(backend, kind, dtype_name(x))
    if name == "numba" and (fusions is None or fusions.any):
        logits = _cpu_tail(y, weights, layout)
    else:
        logits = _ops_tail(y, weights, layout, name)
    if image_size is None:
        return logits
    return upsample_bilinear(logits, image_size, align_corners=False, layout=layout,
                             backend=name)


def _cpu_tail(y: Array, weights: HeadWeights, layout: str) -> Array:
    """The 3x3 conv (Winograd) + bias + ReLU and the classifier GEMM on the CPU engine."""
    from atrous.core.arrays import to_numpy
    from atrous.deeplab import cpu
    from atrous.kernels.workers_cpu import task_runner

    a = to_numpy(y)
    a = np.ascontiguousarray(a.transpose(0, 2, 3, 1) if layout == "NCHW" else a)
    z = np.empty_like(a)
    # single-threaded BLAS throughout (tasks on every core inside the Winograd conv): a
    # multi-threaded product would leave BLAS's workers spinning into the upsample
    with task_runner():
        cpu.conv3x3(a, weights.taps, 1, z, weights.filters)
        z += weights.conv_bias
        np.maximum(z, 0, out=z)
        n, h, w, c = z.shape
        logits = z.reshape(-1, c) @ weights.classifier[:, :, 0, 0].T + weights.classifier_bias
    logits = logits.reshape(n, h, w, -1)
    if layout == "NCHW":
        logits = np.ascontiguousarray(logits.transpose(0, 3, 1, 2))
    if not is_tensor(y):
        return logits
    import torch

    return torch.from_numpy(logits)


def _ops_tail(y: Array, weights: HeadWeights, layout: str, backend: str) -> Array:
    """The same with the public ops (Triton on a GPU, Numba unfused, or the reference)."""
    def like(a: Any) -> Any:
        if is_tensor(y) and not is_tensor(a):
            import torch

            return torch.from_numpy(a).to(y.device)
        return a

    z = dilated_conv2d(y, like(weights.conv), like(weights.conv_bias), padding=1,
                       activation="relu", layout=layout, backend=backend)
    return dilated_conv2d(z, like(weights.classifier), like(weights.classifier_bias),
                          layout=layout, backend=backend)
