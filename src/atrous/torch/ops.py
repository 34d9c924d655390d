"""atrous's ops and the ASPP as torch custom ops (namespace ``atrous``), for torch.compile.

``torch.ops.atrous.{global_avg_pool, dilated_conv2d, upsample_bilinear, aspp}`` are opaque
to the compiler: a fake (meta) implementation gives the output's shape and dtype from the
op's spec, and at run time the op calls atrous's public function (Numba on the CPU, Triton
on CUDA). The Python wrappers below take the same arguments as ``atrous.*`` and check first
that no gradient is wanted: atrous is inference-only. An autograd registration repeats that
check for direct ``torch.ops.atrous`` calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

import atrous
from atrous.core.args import from_nchw, int_pair, to_nchw
from atrous.core.arrays import check_inference
from atrous.core.op import Problem
from atrous.core.registry import op
from atrous.deeplab.api import aspp as aspp_fn
from atrous.deeplab.head import deeplab_head as head_fn
from atrous.deeplab.head import head_param_names
from atrous.deeplab.structure import AsppStructure
from atrous.deeplab.weights import check_params, check_rates, param_names
from atrous.torch import cache


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


# The ops' declarations, looked up once here: torch.compile traces the wrappers and fake
# implementations below, and must not trace the registry's first load (it takes a lock).
_GAP, _CONV, _UPSAMPLE = (op(n) for n in ("global_avg_pool", "dilated_conv2d",
                                          "upsample_bilinear"))


def _problem(opdef: Any, arrays: Mapping[str, Tensor | None], options: Mapping[str, Any]
             ) -> Problem:
    """``opdef``'s Problem from tensors (real, fake or traced) and options."""
    shapes = {n: None if t is None else _shape(t) for n, t in arrays.items()}
    dtypes = {n: None if t is None else _dtype(t) for n, t in arrays.items()}
    return opdef.make_problem(shapes, dtypes, **options)


# ---- global_avg_pool -------------------------------------------------------------------

@torch.library.custom_op("atrous::global_avg_pool", mutates_args=())
def _gap_op(x: Tensor, layout: str, keepdims: bool, backend: str) -> Tensor:
    return atrous.global_avg_pool(x, layout=layout, keepdims=keepdims, backend=backend)


@_gap_op.register_fake
def _(x: Tensor, layout: str, keepdims: bool, backend: str) -> Tensor:
    problem = _problem(_GAP, {"x": x}, {"layout": layout, "keepdims": keepdims})
    return x.new_empty(problem.out_shape)


# ---- dilated_conv2d --------------------------------------------------------------------

def _conv_problem(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                  padding: list[int], same: bool, dilation: list[int], groups: int,
                  activation: str | None, layout: str) -> Problem:
    return _problem(
        _CONV, {"x": x, "weight": weight, "bias": bias},
        {"stride": tuple(stride), "padding": "same" if same else tuple(padding),
         "dilation": tuple(dilation), "groups": groups, "activation": activation,
         "layout": layout})


@torch.library.custom_op("atrous::dilated_conv2d", mutates_args=())
def _conv_op(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
             padding: list[int], same: bool, dilation: list[int], groups: int,
             activation: str | None, layout: str, backend: str) -> Tensor:
    return atrous.dilated_conv2d(x, weight, bias, stride=tuple(stride),
                                 padding="same" if same else tuple(padding),
                                 dilation=tuple(dilation), groups=groups, activation=activation,
                                 layout=layout, backend=backend)


@_conv_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], padding: list[int],
      same: bool, dilation: list[int], groups: int, activation: str | None, layout: str,
      backend: str) -> Tensor:
    problem = _conv_problem(x, weight, bias, stride, padding, same, dilation, groups,
                            activation, layout)
    return x.new_empty(problem.out_shape)


# ---- upsample_bilinear -----------------------------------------------------------------

@torch.library.custom_op("atrous::upsample_bilinear", mutates_args=())
def _upsample_op(x: Tensor, size: list[int] | None, scale_factor: list[float] | None,
                 coordinate_mode: str, layout: str, backend: str) -> Tensor:
    return atrous.upsample_bilinear(x, None if size is None else tuple(size),
                                    scale_factor=None if scale_factor is None else
                                    tuple(scale_factor), coordinate_mode=coordinate_mode,
                                    layout=layout, backend=backend)


@_upsample_op.register_fake
def _(x: Tensor, size: list[int] | None, scale_factor: list[float] | None,
      coordinate_mode: str, layout: str, backend: str) -> Tensor:
    problem = _problem(
        _UPSAMPLE, {"x": x}, {"size": None if size is None else tuple(size),
                   "scale_factor": None if scale_factor is None else tuple(scale_factor),
                   "coordinate_mode": coordinate_mode, "layout": layout})
    return x.new_empty(problem.out_shape)


# ---- aspp ------------------------------------------------------------------------------

def _structure_args(structure: AsppStructure) -> tuple[list[int], list[int], bool, bool,
                                                         bool]:
    """The op's spelling of a structure: kernel sizes, rates, pooling, bias, batch_norm."""
    return ([k for k, _ in structure.branches], [r for _, r in structure.branches],
            structure.pooling, structure.bias, structure.batch_norm)


def _op_structure(rates: list[int], kernel_sizes: list[int] | None, pooling: bool,
                  bias: bool, batch_norm: bool) -> AsppStructure:
    if kernel_sizes is None:  # torchvision's: ``rates`` are its atrous rates
        return AsppStructure.torchvision(tuple(rates))
    return AsppStructure(tuple(zip(kernel_sizes, rates, strict=True)), pooling=pooling,
                         bias=bias, batch_norm=batch_norm)


@torch.library.custom_op("atrous::aspp", mutates_args=())
def _aspp_op(x: Tensor, params: list[Tensor], rates: list[int], eps: float, layout: str,
             backend: str, kernel_sizes: list[int] | None = None, pooling: bool = True,
             bias: bool = False, batch_norm: bool = True) -> Tensor:
    device = str(x.device) if x.device.type == "cuda" else "cpu"
    structure = _op_structure(rates, kernel_sizes, pooling, bias, batch_norm)
    weights = cache.prepared(params, structure, eps, _dtype(x), device)
    return aspp_fn(x, weights, layout=layout, backend=backend)


@_aspp_op.register_fake
def _(x: Tensor, params: list[Tensor], rates: list[int], eps: float, layout: str,
      backend: str, kernel_sizes: list[int] | None = None, pooling: bool = True,
      bias: bool = False, batch_norm: bool = True) -> Tensor:
    n, _, h, w = to_nchw(_shape(x), layout)
    project = len(params) - (5 if batch_norm else 1) - (1 if bias else 0)
    return x.new_empty(from_nchw(n, int(params[project].shape[0]), h, w, layout))


# ---- deeplab_head -----------------------------------------------------------------------

@torch.library.custom_op("atrous::deeplab_head", mutates_args=())
def _head_op(x: Tensor, params: list[Tensor], rates: list[int], eps: float, layout: str,
             image_size: list[int] | None, backend: str) -> Tensor:
    device = str(x.device) if x.device.type == "cuda" else "cpu"
    weights = cache.prepared(params, tuple(rates), eps, _dtype(x), device, kind="head")
    return head_fn(x, weights, layout=layout, backend=backend,
                   image_size=None if image_size is None else tuple(image_size))


@_head_op.register_fake
def _(x: Tensor, params: list[Tensor], rates: list[int], eps: float, layout: str,
      image_size: list[int] | None, backend: str) -> Tensor:
    n, _, h, w = to_nchw(_shape(x), layout)
    if image_size is not None:
        h, w = image_size
    return x.new_empty(from_nchw(n, int(params[-1].shape[0]), h, w, layout))


def _no_backward(ctx: Any, inputs: tuple, output: Any) -> None:
    # Autograd calls this only when a gradient is wanted (with grad mode already off).
    raise RuntimeError("atrous is inference-only (its ops have no backward), but autograd is"
                       " enabled and an input requires grad; use torch.no_grad() or"
                       " torch.inference_mode()")


def _backward(ctx: Any, *grads: Any) -> None:  # pragma: no cover - _no_backward raises first
    raise RuntimeError("atrous is inference-only: its ops have no backward")


for _op in (_gap_op, _conv_op, _upsample_op, _aspp_op, _head_op):
    torch.library.register_autograd(_op, _backward, setup_context=_no_backward)


# ---- the Python wrappers: atrous's signatures, inference check, then the custom op -----

def global_avg_pool(x: Tensor, *, layout: str = "NCHW", keepdims: bool = False,
                    backend: str = "auto") -> Tensor:
    """:func:`atrous.global_avg_pool` as the custom op ``torch.ops.atrous.global_avg_pool``."""
    check_inference("atrous.torch.global_avg_pool", x=x)
    return torch.ops.atrous.global_avg_pool(x, layout, keepdims, backend)


def dilated_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, stride: Any = 1,
                   padding: Any = 0, dilation: Any = 1, groups: int = 1,
                   activation: str | None = None, layout: str = "NCHW",
                   backend: str = "auto") -> Tensor:
    """:func:`atrous.dilated_conv2d` as the custom op ``torch.ops.atrous.dilated_conv2d``."""
    check_inference("atrous.torch.dilated_conv2d", x=x, weight=weight, bias=bias)
    same = padding == "same"
    pad = (0, 0) if same or padding == "valid" else int_pair("padding", padding, 0)
    return torch.ops.atrous.dilated_conv2d(
        x, weight, bias, list(int_pair("stride", stride, 1)), list(pad), same,
        list(int_pair("dilation", dilation, 1)), groups, activation, layout, backend)


def upsample_bilinear(x: Tensor, size: Any = None, *, scale_factor: Any = None,
                      align_corners: bool | None = None, coordinate_mode: str | None = None,
                      layout: str = "NCHW", backend: str = "auto") -> Tensor:
    """:func:`atrous.upsample_bilinear` as the custom op ``torch.ops.atrous.upsample_bilinear``."""
    check_inference("atrous.torch.upsample_bilinear", x=x)
    # Resolve the mode and pairs once, here, so the op's schema stays simple.
    problem = _problem(_UPSAMPLE, {"x": x}, {
        "size": size, "scale_factor": scale_factor, "align_corners": align_corners,
        "coordinate_mode": coordinate_mode, "layout": layout})
    scale = None if scale_factor is None else [problem.scale_h, problem.scale_w]
    out_size = None if scale_factor is not None else [problem.oh, problem.ow]
    return torch.ops.atrous.upsample_bilinear(x, out_size, scale, problem.mode, layout, backend)


def aspp(x: Tensor, params: Mapping[str, Tensor] | Sequence[Tensor],
         rates: Sequence[int] | None = None, *, eps: float = 1e-5, layout: str = "NCHW",
         backend: str = "auto", structure: AsppStructure | None = None) -> Tensor:
    """The ASPP as the custom op ``torch.ops.atrous.aspp``.

    Args:
        x: (N, Cin, H, W) or (N, H, W, Cin) tensor, per ``layout``.
        params: the ASPP's state dict (torchvision's names), or its tensors in
            :func:`param_names` order (``num_batches_tracked`` excluded). Folded once and
            cached until a tensor changes.
        rates: torchvision's atrous rates (or None with ``structure``).
        eps: the BatchNorm epsilon.
        layout, backend: as in :func:`atrous.aspp`.
        structure: an :class:`~atrous.AsppStructure` other than torchvision's.
    """
    if (rates is None) == (structure is None):
        raise TypeError("atrous.torch.aspp takes rates (torchvision's structure) or"
                        " structure, one of them")
    if structure is None:
        structure = AsppStructure.torchvision(check_rates(rates))
    elif not isinstance(structure, AsppStructure):
        raise TypeError(f"structure must be atrous.AsppStructure, got"
                        f" {type(structure).__name__}")
    names = param_names(structure)
    if isinstance(params, Mapping):
        check_params(params, structure)
        params = [params[k] for k in names]
    params = list(params)
    if len(params) != len(names):
        raise ValueError(f"params: the ASPP takes {len(names)} tensors ({names[0]} ..."
                         f" {names[-1]}), got {len(params)}")
    check_inference("atrous.torch.aspp", x, *params)
    if structure.is_torchvision:  # the op's plain spelling
        return torch.ops.atrous.aspp(x, params, list(structure.rates), float(eps), layout,
                                     backend)
    kernel_sizes, rates, pooling, bias, batch_norm = _structure_args(structure)
    return torch.ops.atrous.aspp(x, params, rates, float(eps), layout, backend, kernel_sizes,
                                 pooling, bias, batch_norm)


def deeplab_head(x: Tensor, params: Mapping[str, Tensor] | Sequence[Tensor],
                 rates: Sequence[int], *, eps: float = 1e-5, layout: str = "NCHW",
                 image_size: Any = None, backend: str = "auto") -> Tensor:
    """DeepLabV3's head as the custom op ``torch.ops.atrous.deeplab_head``.

    Args:
        x, rates, eps, layout, backend: as in :func:`aspp`.
        params: a torchvision DeepLabHead state dict, or its tensors in
            ``head_param_names`` order. Folded once and cached until a tensor changes.
        image_size: (height, width) or one int to upsample the logits to, or None.
    """
    rates = check_rates(rates)
    names = head_param_names(len(rates))
    if isinstance(params, Mapping):
        missing = [k for k in names if k not in params]
        if missing:
            raise ValueError(f"params do not match a torchvision DeepLabHead with"
                             f" {len(rates)} rates: missing {missing[:6]}")
        params = [params[k] for k in names]
    params = list(params)
    check_inference("atrous.torch.deeplab_head", x, *params)
    size = None
    if image_size is not None:
        size = [int(image_size)] * 2 if isinstance(image_size, int) else \
            [int(s) for s in image_size]
    return torch.ops.atrous.deeplab_head(x, params, list(rates), float(eps), layout, size,
                                         backend)
