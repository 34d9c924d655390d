"""The unfused ASPP: a plain composition of the public ops, the reference for every fusion.

Each branch is one ``dilated_conv2d`` (BatchNorm folded into its weight) followed by a
separate bias add and ReLU; the pooling branch is ``global_avg_pool`` -> 1x1 conv -> bias ->
ReLU -> ``upsample_bilinear`` back to the map; the branches are concatenated and projected.
It runs on any backend of the ops, so it also checks the fused engines against the
generated Numba and Triton kernels, and ``backend="numpy"`` is the float64 reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atrous.api import dilated_conv2d, global_avg_pool, upsample_bilinear
from atrous.core.arrays import is_tensor
from atrous.deeplab.structure import as_structure


def run(x: Any, convs: list[Any], biases: list[Any], rates: Any, layout: str,
        backend: str) -> Any:
    """The ASPP of ``x`` from folded layers (branches, pooling, projection), on one backend
    of the ops; ``rates`` is torchvision's rates or an AsppStructure.

    ``convs`` and ``biases`` are arrays of ``x``'s kind (NumPy or torch, same device).
    """
    structure = as_structure(rates)
    torch_kind = is_tensor(x)
    channel_axis = 1 if layout == "NCHW" else 3
    size = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])

    def bias_relu(y: Any, bias: Any) -> Any:
        b = bias[:, None, None] if layout == "NCHW" else bias
        return (y + b).relu() if torch_kind else np.maximum(y + b, 0)

    def conv(inp: Any, i: int, dilation: int = 1) -> Any:
        y = dilated_conv2d(inp, convs[i], None, padding="same", dilation=dilation,
                           layout=layout, backend=backend)
        return bias_relu(y, biases[i])

    outs = [conv(x, i, r) for i, (_, r) in enumerate(structure.branches)]
    nb = structure.n_branches
    if structure.pooling:
        pooled = conv(global_avg_pool(x, layout=layout, keepdims=True, backend=backend), nb)
        # from a 1x1 map every coordinate mode is the same broadcast
        outs.append(upsample_bilinear(pooled, size, align_corners=False, layout=layout,
                                      backend=backend))
    if torch_kind:
        import torch

        joined = torch.cat(outs, dim=channel_axis)
    else:
        joined = np.concatenate(outs, axis=channel_axis)
    return conv(joined, len(convs) - 1)
