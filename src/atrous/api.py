"""The public functions: validate arguments into a Problem, then dispatch to a backend; and
:func:`explain` / :func:`use_tuning`, which show and steer the tuned config a call runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from atrous import dispatch
from atrous.arrays import Kind, dtype_name, kind_of
from atrous.autotune.lookup import tuning_path, use_tuning
from atrous.kernels.conv import spec as conv_spec
from atrous.kernels.gap import spec as gap_spec
from atrous.kernels.upsample import spec as upsample_spec

__all__ = ["Explanation", "dilated_conv2d", "explain", "global_avg_pool", "upsample_bilinear",
           "use_tuning"]

Array = Any  # numpy.ndarray or torch.Tensor


def global_avg_pool(x: Array, *, layout: str = "NCHW", keepdims: bool = False,
                    backend: str = "auto", config: Mapping[str, Any] | None = None,
                    out: Array | None = None) -> Array:
    """Mean of ``x`` over its spatial dimensions.

    Args:
        x: (N, C, H, W) for layout "NCHW" or (N, H, W, C) for "NHWC"; NumPy array or tensor.
        layout: "NCHW" or "NHWC".
        keepdims: return (N, C, 1, 1) / (N, 1, 1, C) instead of (N, C).
        backend: "auto" (Numba on the CPU, Triton on CUDA), "numba", "triton" or "numpy".
        config: a kernel config from the backend's Space, overriding the tuned choice.
        out: a contiguous buffer of the output's shape and dtype to write into.

    Returns:
        The pooled array, of the input's kind (array or tensor), device and dtype.
    """
    problem, inputs, kind = _prepare_gap(x, layout=layout, keepdims=keepdims)
    return dispatch.run(problem, inputs, kind, backend=backend, config=config, out=out)


def dilated_conv2d(x: Array, weight: Array, bias: Array | None = None, *, stride: Any = 1,
                   padding: Any = 0, dilation: Any = 1, groups: int = 1,
                   activation: str | None = None, layout: str = "NCHW",
                   allow_tf32: bool = False, backend: str = "auto",
                   config: Mapping[str, Any] | None = None, out: Array | None = None) -> Array:
    """2-D convolution with dilation, groups, bias and an optional fused ReLU.

    Args:
        x: (N, Cin, H, W) for "NCHW" or (N, H, W, Cin) for "NHWC".
        weight: (Cout, Cin/groups, kh, kw) in every layout (a Keras HWIO kernel is
            ``w.transpose(3, 2, 0, 1)``).
        bias: (Cout,) or None.
        stride: int or (sh, sw), >= 1.
        padding: int or (ph, pw) >= 0, "same" (stride 1) or "valid".
        dilation: int or (dh, dw), >= 1.
        groups: number of channel groups; ``groups == Cin`` is depthwise.
        activation: None or "relu", applied after the bias.
        layout: "NCHW" or "NHWC" for ``x`` and the output.
        allow_tf32: let float32 products use TF32 on the GPU; off by default.
        backend, config, out: as in :func:`global_avg_pool`.

    Returns:
        The convolution output in ``layout``, of the input's kind, device and dtype.

    On the CPU the weights' packing (and Winograd filters, from the second call with the
    same weights) is kept in the weight cache (``atrous.set_weight_cache_limit``,
    ``atrous.clear_weight_cache``) until the weights change, so repeated calls cost what a
    :func:`atrous.prepare_conv` call does.
    """
    problem, inputs, kind = _prepare_conv(
        x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups,
        activation=activation, layout=layout, allow_tf32=allow_tf32)
    name = dispatch.resolve_backend(backend, kind, problem.dtype)
    if name == "numba":  # packed (and transformed) once per weights, from the weight cache
        from atrous.kernels.conv.weights_cpu import for_plain_call  # imports Numba

        dispatch.check_call(problem, inputs, kind, out)  # on the caller's weight, not its packing
        inputs["weight"], chosen = for_plain_call(problem, weight, config)
        return dispatch.launch(problem, inputs, kind, name, chosen, out)
    return dispatch.run(problem, inputs, kind, backend=name, config=config, out=out)


def upsample_bilinear(x: Array, size: Any = None, *, scale_factor: Any = None,
                      align_corners: bool | None = None, coordinate_mode: str | None = None,
                      layout: str = "NCHW", backend: str = "auto",
                      config: Mapping[str, Any] | None = None, out: Array | None = None) -> Array:
    """Bilinear resampling of the spatial dimensions (up or down, no antialiasing).

    Args:
        x: (N, C, H, W) for "NCHW" or (N, H, W, C) for "NHWC".
        size: output (OH, OW), or one int for both; exclusive with ``scale_factor``.
        scale_factor: number or pair; the output size is floor(input size * scale).
        align_corners: PyTorch's flag: True is "align_corners", False is "half_pixel".
        coordinate_mode: "half_pixel" (default; PyTorch align_corners=False, TF2 resize),
            "align_corners", "asymmetric" (TF1 resize_bilinear) or "pytorch_half_pixel".
        layout, backend, config, out: as in :func:`global_avg_pool`.

    Returns:
        The resampled array, of the input's kind, device and dtype.
    """
    problem, inputs, kind = _prepare_upsample(
        x, size, scale_factor=scale_factor, align_corners=align_corners,
        coordinate_mode=coordinate_mode, layout=layout)
    return dispatch.run(problem, inputs, kind, backend=backend, config=config, out=out)


Prepared = tuple[Any, dict[str, Any], Kind]  # (Problem, inputs by name, where they live)


def _prepare_gap(x: Array, *, layout: str = "NCHW", keepdims: bool = False) -> Prepared:
    kind = kind_of(x=x)
    problem = gap_spec.make_problem(tuple(x.shape), dtype_name(x), layout=layout, keepdims=keepdims)
    return problem, {"x": x}, kind


def _prepare_conv(x: Array, weight: Array, bias: Array | None = None, *, stride: Any = 1,
                  padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  activation: str | None = None, layout: str = "NCHW",
                  allow_tf32: bool = False) -> Prepared:
    kind = kind_of(x=x, weight=weight, bias=bias)
    problem = conv_spec.make_problem(
        tuple(x.shape), tuple(weight.shape), None if bias is None else tuple(bias.shape),
        dtype_name(x), stride=stride, padding=padding, dilation=dilation, groups=groups,
        activation=activation, layout=layout, allow_tf32=allow_tf32,
        weight_dtype=dtype_name(weight), bias_dtype=None if bias is None else dtype_name(bias))
    return problem, {"x": x, "weight": weight, "bias": bias}, kind


def _prepare_upsample(x: Array, size: Any = None, *, scale_factor: Any = None,
                      align_corners: bool | None = None, coordinate_mode: str | None = None,
                      layout: str = "NCHW") -> Prepared:
    kind = kind_of(x=x)
    problem = upsample_spec.make_problem(
        tuple(x.shape), dtype_name(x), size, scale_factor=scale_factor,
        align_corners=align_corners, coordinate_mode=coordinate_mode, layout=layout)
    return problem, {"x": x}, kind


_PREPARE = {"global_avg_pool": _prepare_gap, "dilated_conv2d": _prepare_conv,
            "upsample_bilinear": _prepare_upsample}


@dataclass(frozen=True)
class Explanation:
    """Which kernel config a call would run, and why (see :func:`explain`)."""

    op: str
    backend: str
    key: str
    source: str  # "given", "exact", "nearest", "family" or "default"
    config: dict[str, Any]
    detail: str
    tuning_file: str | None

    def __str__(self) -> str:
        return (f"{self.op} on {self.backend}: {self.source} config {self.config}\n"
                f"  why: {self.detail}\n  problem: {self.key}\n"
                f"  tuning file: {self.tuning_file or 'off'}")


def explain(op_name: str | Callable[..., Any], *args: Any, backend: str = "auto",
            config: Mapping[str, Any] | None = None, out: Array | None = None,
            **kwargs: Any) -> Explanation:
    """Say which config ``atrous.<op>(*args, **kwargs)`` would run and where it comes from
    (the tuning database's exact entry, the nearest tuned shape, the machine family, or the
    heuristic default), without running or timing anything.

    Args:
        op_name: "global_avg_pool", "dilated_conv2d", "upsample_bilinear", or the function.
        args, kwargs: the call's arguments (arrays or tensors, as for the op itself).
        backend, config: as for the op; ``out`` is accepted and ignored.

    Example:
        >>> print(atrous.explain("dilated_conv2d", x, w, padding="same", dilation=12))
    """
    name = op_name if isinstance(op_name, str) else getattr(op_name, "__name__", "")
    if name not in _PREPARE:
        raise ValueError(f"explain: unknown op {op_name!r}; known: {sorted(_PREPARE)}")
    problem, inputs, kind = _PREPARE[name](*args, **kwargs)
    chosen = dispatch.resolve_backend(backend, kind, problem.dtype)
    choice = dispatch.choose(problem, chosen, config, dispatch.device_of(inputs["x"]))
    path = tuning_path()
    return Explanation(name, chosen, problem.key, choice.source, dict(choice.config),
                       choice.detail, None if path is None else str(path))
