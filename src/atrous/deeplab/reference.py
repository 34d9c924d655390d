"""The slow, obvious float64 ASPP from raw (unfolded) parameters.

Independent of the folding and of every fused engine: a conv's bias is added and BatchNorm
applied as written (``(y - mean) / sqrt(var + eps) * gamma + beta``), convolutions and the
upsample are the per-op NumPy references. Used by the tests as the oracle for NumPy inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from atrous.deeplab.structure import BN_KEYS, AsppStructure, as_structure
from atrous.deeplab.weights import check_params
from atrous.kernels.conv.reference import reference as conv_reference
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.upsample.reference import reference as upsample_reference
from atrous.kernels.upsample.spec import make_problem as upsample_problem


def reference(x: Any, params: Mapping[str, Any], rates: Sequence[int] | AsppStructure, *,
              eps: float = 1e-5, layout: str = "NCHW") -> np.ndarray:
    """The ASPP of ``x`` in float64 (NumPy), in ``layout``, from its parameters by name;
    ``rates``: torchvision's atrous rates or an AsppStructure."""
    structure = as_structure(rates)
    check_params(params, structure)

    def get(key: str) -> np.ndarray:
        a = params[key]
        return (a.detach().cpu().double().numpy() if hasattr(a, "detach")
                else np.asarray(a, dtype=np.float64))

    x = x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, np.float64)
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    h, w = x.shape[2:]
    layers = structure.layers()

    def conv_bn_relu(inp: np.ndarray, i: int) -> np.ndarray:
        layer = layers[i]
        weight = get(f"{layer.conv}.weight")
        problem = conv_problem(inp.shape, weight.shape, None, "float64", padding="same",
                               dilation=layer.rate)
        y = conv_reference(problem, inp, weight)
        if layer.bias:
            y = y + get(f"{layer.conv}.bias")[None, :, None, None]
        if layer.bn:
            gamma, beta, mean, var = (get(f"{layer.bn}.{k}")[None, :, None, None]
                                      for k in BN_KEYS)
            y = (y - mean) / np.sqrt(var + eps) * gamma + beta
        return np.maximum(y, 0)

    nb = structure.n_branches
    outs = [conv_bn_relu(x, i) for i in range(nb)]
    if structure.pooling:
        pooled = conv_bn_relu(x.mean(axis=(2, 3), keepdims=True), nb)
        up = upsample_problem(pooled.shape, "float64", (h, w), align_corners=False)
        outs.append(upsample_reference(up, pooled))
    y = conv_bn_relu(np.concatenate(outs, axis=1), len(layers) - 1)
    return y.transpose(0, 2, 3, 1) if layout == "NHWC" else y
