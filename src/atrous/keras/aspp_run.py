"""The Keras ``ASPP`` layer's inference on atrous's kernels (torch backend, torch tensors).

Every conv's BatchNorm (running statistics) is folded into it in float64:
``scale = gamma / sqrt(var + eps)``, ``W' = W * scale``, ``b' = (b - mean) * scale + beta``
(``b = 0`` without a bias), so whatever mix of biases and BatchNorms the block has, atrous
sees convs with a bias followed by ReLU. The folded block then runs as atrous's fused ASPP
(``atrous.aspp`` with the matching ``AsppStructure``) when its branches are 1x1 / 3x3, or
else as a composition of the public ops with the pooling branch folded into the
projection's per-image bias.
"""

from __future__ import annotations

from typing import Any

import atrous
from atrous.keras import runtime

FUSED_KERNEL_SIZES = (1, 3)


def fold(conv: Any, bn: Any) -> tuple[Any, Any]:
    """(OIHW weight, bias) of a Keras Conv2D followed by an optional BatchNormalization,
    as float64 torch tensors."""
    import torch

    kernel = runtime.torch_value(conv.kernel).to(torch.float64)
    weight = kernel.permute(3, 2, 0, 1)
    if conv.use_bias:
        bias = runtime.torch_value(conv.bias).to(torch.float64)
    else:
        bias = torch.zeros(weight.shape[0], dtype=torch.float64, device=weight.device)
    if bn is None:
        return weight.contiguous(), bias
    gamma, beta, mean, var = (
        runtime.torch_value(v).to(torch.float64) if v is not None else None
        for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    scale = 1.0 / torch.sqrt(var + bn.epsilon)
    if gamma is not None:
        scale = scale * gamma
    bias = (bias - mean) * scale + (beta if beta is not None else 0.0)
    return (weight * scale[:, None, None, None]).contiguous(), bias


def _sources(layer: Any) -> list[Any]:
    return [runtime.torch_value(v) for v in layer.weights]


def composed(layer: Any, dtype: Any, device: Any) -> dict[str, Any]:
    """The folded block for :func:`compose`, in ``dtype`` on ``device``, cached until a
    weight changes: "branches" (OIHW weight, bias) pairs, "pool" the pooling conv as a
    (C, Cin) matrix and its bias (or None), "project" the projection's branch part (OIHW),
    "project_pool" its pooling part (C, C) (or None) and "project_bias"."""
    def build() -> dict[str, Any]:
        pairs = [(w.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
                 for w, b in (fold(conv, bn) for conv, bn in layer.layers_in_order())]
        nb, c = len(layer.branches), layer.filters
        wproj, bproj = pairs[-1]
        return {
            "branches": [(w.contiguous(), b.contiguous()) for w, b in pairs[:nb]],
            "pool": (pairs[nb][0][:, :, 0, 0].contiguous(), pairs[nb][1])
            if layer.pooling else None,
            "project": wproj[:, :nb * c].contiguous(),
            "project_pool": wproj[:, nb * c:, 0, 0].contiguous() if layer.pooling else None,
            "project_bias": bproj.contiguous(),
        }

    return layer._prepared.get("composed", _sources(layer), build, dtype, device)


def fusable(layer: Any) -> bool:
    """Whether atrous's fused ASPP runs this block (1x1 / 3x3 branches)."""
    return all(k in FUSED_KERNEL_SIZES for k, _ in layer.branches)


def _prepared_aspp(layer: Any, dtype: Any, device: Any) -> Any:
    """atrous's AsppWeights for the block (the fused engines' packed form), cached."""
    def build() -> Any:
        # float64 here: prepare_aspp casts once, after its own (here trivial) folding
        pairs = [(w.to(device=device), b.to(device=device))
                 for w, b in (fold(conv, bn) for conv, bn in layer.layers_in_order())]
        structure = atrous.AsppStructure(layer.branches, pooling=layer.pooling, bias=True,
                                         batch_norm=False)
        names = [lay.conv for lay in structure.layers()]
        params = {}
        for name, (w, b) in zip(names, pairs, strict=True):
            params[f"{name}.weight"], params[f"{name}.bias"] = w, b
        target = "cpu" if device.type == "cpu" else str(device)
        return atrous.prepare_aspp(params, structure, dtype=str(dtype).removeprefix("torch."),
                                   device=target)

    return layer._prepared.get("fused", _sources(layer), build, dtype, device)


def run(layer: Any, x: Any) -> Any:
    """The block's inference output for the torch tensor ``x`` (no autograd)."""
    layout = "NHWC" if layer.data_format == "channels_last" else "NCHW"
    if fusable(layer):
        weights = _prepared_aspp(layer, x.dtype, x.device)
        return atrous.aspp(x, weights, layout=layout, backend=layer.backend)
    return compose(layer, x, layout)


def compose(layer: Any, x: Any, layout: str) -> Any:
    """The block as atrous's public ops: each branch a dilated conv with bias and ReLU fused,
    the concatenation, the projection conv; the pooling branch is a (N, C) vector per image,
    so its share of the projection joins the projection's bias (no upsample, no slice)."""
    import torch

    plan = composed(layer, x.dtype, x.device)
    n, c = x.shape[0], layer.filters
    axis = 3 if layout == "NHWC" else 1
    outs = [atrous.dilated_conv2d(x, w, b, padding="same", dilation=rate, activation="relu",
                                  layout=layout, backend=layer.backend)
            for (w, b), (_, rate) in zip(plan["branches"], layer.branches, strict=True)]
    cat = outs[0] if len(outs) == 1 else torch.cat(outs, dim=axis)
    bias = plan["project_bias"].expand(n, c)
    if plan["pool"] is not None:
        wpool, bpool = plan["pool"]
        pooled = atrous.global_avg_pool(x, layout=layout, backend=layer.backend)  # (N, Cin)
        bias = bias + torch.relu(pooled @ wpool.T + bpool) @ plan["project_pool"].T
    y = atrous.dilated_conv2d(cat, plan["project"], None, layout=layout, backend=layer.backend)
    shape = (n, 1, 1, c) if layout == "NHWC" else (n, c, 1, 1)
    return torch.relu_(y.add_(bias.reshape(shape)))
