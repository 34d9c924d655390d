"""``atrous.aspp``: argument checks, then the fused CPU or GPU engine (or the unfused path)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from atrous import dispatch
from atrous.core.args import check_dtype, check_layout, check_shape, from_nchw, to_nchw
from atrous.core.arrays import Kind, check_inference, dtype_name, is_tensor, kind_of, to_numpy
from atrous.deeplab import unfused
from atrous.deeplab.fusions import Fusions
from atrous.deeplab.structure import AsppStructure
from atrous.deeplab.weights import AsppWeights, check_rates, fold_cached, prepare_aspp

Array = Any  # numpy.ndarray or torch.Tensor


def aspp(x: Array, weights: AsppWeights | Mapping[str, Array], *,
         rates: Sequence[int] | None = None, structure: AsppStructure | None = None,
         eps: float = 1e-5, layout: str = "NCHW", backend: str = "auto",
         fusions: Fusions | None = None, out: Array | None = None) -> Array:
    """DeepLabV3's ASPP at inference, fused: torchvision's structure by default, or any
    :class:`~atrous.AsppStructure` (e.g. the Keras tutorial's).

    torchvision's: 1x1 branch, one 3x3 branch per atrous rate, pooling branch (GAP -> 1x1
    conv -> BN -> ReLU -> bilinear upsample, align_corners=False), concatenation, 1x1
    projection -> BN -> ReLU (dropout is the identity at inference). In general: the
    structure's branches ((kernel size, rate), each conv with a bias and/or BN, then ReLU),
    the optional pooling branch (its upsample from a 1x1 map is a broadcast in every
    coordinate mode), concatenation in order, the projection with ReLU. BatchNorm uses
    running statistics, folded into the convs by :func:`prepare_aspp`.

    Args:
        x: (N, Cin, H, W) for "NCHW" or (N, H, W, Cin) for "NHWC"; NumPy array or tensor.
        weights: :func:`prepare_aspp`'s result, or the ASPP's parameters by name (a
            torchvision ASPP state dict; then ``rates`` or ``structure`` is required),
            folded on its first call and kept in the weight cache until an array changes
            (NumPy arrays are compared byte for byte per call).
        rates: torchvision's atrous rates; must match ``weights.rates`` when given with
            AsppWeights.
        structure: the ASPP's structure when it is not torchvision's; must match
            ``weights.structure`` when given with AsppWeights. Not with ``rates``.
        eps: BatchNorm epsilon, used when ``weights`` is a state dict.
        layout: "NCHW" or "NHWC" for ``x`` and the output.
        backend: "auto" (the fused CPU engine for NumPy arrays and CPU tensors, Triton for
            CUDA tensors), "numba" (the CPU engine), "triton", or "numpy" (the float64
            reference: the unfused path on the reference ops, cast to x's dtype).
        fusions: which fusions to apply (default all); ``Fusions.none()`` runs the unfused
            composition of the public ops on the chosen backend.
        out: a C-contiguous buffer of the output's shape and dtype to write into.

    Returns:
        (N, C, H, W) or (N, H, W, C), of x's kind, device and dtype.
    """
    kind = kind_of(x=x)
    layout = check_layout(layout)
    dtype = check_dtype("x", dtype_name(x))
    n, cin, h, w = to_nchw(check_shape("x", tuple(x.shape), 4, layout), layout)
    if structure is not None and not isinstance(structure, AsppStructure):
        raise TypeError(f"structure must be atrous.AsppStructure, got"
                        f" {type(structure).__name__}")
    if structure is not None and rates is not None:
        raise TypeError("give rates (torchvision's structure) or structure, not both")
    if isinstance(weights, Mapping):
        if rates is None and structure is None:
            raise TypeError("rates is required when weights is a state dict (or structure,"
                            " for another structure than torchvision's; or pass"
                            " atrous.prepare_aspp(params, rates))")
        check_inference("atrous.aspp", x, *weights.values())
        device = str(x.device) if kind.name == "cuda" else "cpu"
        weights = fold_cached(prepare_aspp, weights, structure or rates, eps=eps,
                              dtype=dtype, device=device)
    elif isinstance(weights, AsppWeights):
        check_inference("atrous.aspp", x=x)
        if rates is not None and check_rates(rates) != weights.rates:
            raise ValueError(f"rates={tuple(rates)!r} but the weights were prepared for"
                             f" rates={weights.rates!r}")
        if structure is not None and structure != weights.structure:
            raise ValueError(f"structure={structure} but the weights were prepared for"
                             f" {weights.structure}")
    else:
        raise TypeError(f"weights must be AsppWeights (atrous.prepare_aspp) or a state dict,"
                        f" got {type(weights).__name__}")
    if cin != weights.in_channels:
        raise ValueError(f"x has {cin} channels (shape {tuple(x.shape)}, {layout}) but the ASPP"
                         f" weights expect in_channels={weights.in_channels}")
    fusions = Fusions() if fusions is None else fusions
    if not isinstance(fusions, Fusions):
        raise TypeError(f"fusions must be atrous.Fusions, got {type(fusions).__name__}")
    name = dispatch.resolve_backend(backend, kind, dtype)
    if name != "numpy" and weights.dtype != dtype:
        raise TypeError(f"x is {dtype} but the weights were prepared for {weights.dtype};"
                        f" use atrous.prepare_aspp(params, rates, dtype={dtype!r})")
    _check_device(weights, x, kind, name)
    shape = from_nchw(n, weights.out_channels, h, w, layout)
    if out is not None:
        _check_out(out, shape, dtype, kind, x)
    result = _run(x, weights, layout, name, fusions, kind, shape, out)
    if out is not None and result is not out:
        out[...] = result
        return out
    return result


def _run(x: Array, weights: AsppWeights, layout: str, backend: str, fusions: Fusions,
         kind: Kind, shape: tuple[int, ...], out: Array | None) -> Array:
    if backend == "numpy":  # float64 all the way, cast once at the end
        x64 = x.detach().cpu().double().numpy() if kind.torch else x.astype(np.float64)
        convs, biases = _arrays(weights, None, np.float64)
        y = unfused.run(x64, convs, biases, weights.structure, layout, "numpy")
        if not kind.torch:
            return y.astype(x.dtype)
        import torch

        return torch.from_numpy(y).to(device=x.device, dtype=x.dtype)
    if not fusions.any:
        convs, biases = _arrays(weights, x, None)
        return unfused.run(x, convs, biases, weights.structure, layout, backend)
    contiguous = x.contiguous() if kind.torch else np.ascontiguousarray(x)
    if out is None:
        if kind.torch:
            import torch

            out = torch.empty(shape, dtype=x.dtype, device=x.device)
        else:
            out = np.empty(shape, dtype=x.dtype)
    if backend == "numba":
        from atrous.deeplab import cpu

        cpu.run(to_numpy(contiguous), weights, layout, fusions, to_numpy(out))
    else:
        from atrous.deeplab import gpu

        convs, biases = _arrays(weights, x, None)
        gpu.run(contiguous, convs, biases, weights.structure, layout, fusions, out)
    return out


def _arrays(weights: AsppWeights, like: Array | None, dtype: Any) -> tuple[list, list]:
    """The folded layers as arrays of ``like``'s kind and device (NumPy when None),
    contiguous, cast to ``dtype`` when given."""
    layers = list(weights.convs) + list(weights.biases)
    if like is None or not is_tensor(like):
        host = [a.detach().cpu().numpy() if is_tensor(a) else a for a in layers]
        arrays = [np.ascontiguousarray(a, dtype=dtype) for a in host]
    elif weights.device == "cpu":
        import torch

        arrays = [torch.from_numpy(np.ascontiguousarray(a)).to(like.device) for a in layers]
    else:
        arrays = layers
    k = len(weights.convs)
    return arrays[:k], arrays[k:]


def _check_device(weights: AsppWeights, x: Array, kind: Kind, backend: str) -> None:
    where = str(x.device) if kind.name == "cuda" else "cpu"
    if backend == "numba" and weights.device != "cpu":
        raise ValueError(f"the weights were prepared on {weights.device} but x is on the CPU;"
                         " use atrous.prepare_aspp(params, rates, device='cpu')")
    if backend == "triton" and kind.name == "cuda" and weights.device != where:
        raise ValueError(f"the weights were prepared on {weights.device} but x is on {where};"
                         f" use atrous.prepare_aspp(params, rates, device={where!r})")


def _check_out(out: Array, shape: tuple[int, ...], dtype: str, kind: Kind, x: Array) -> None:
    dispatch.check_out(out, shape, dtype, kind, x, {"x": x})
