"""atrous-separable-conv: DeepLabV3+'s depthwise-separable atrous convolution as an atrous op
defined outside atrous (spec, float64 reference, a Numba kernel generated from its config,
a Triton kernel), registered through atrous' ``atrous.ops`` entry-point group.

Importing this package imports no kernel: ``atrous_separable_conv.op.OP`` is the op, and
its backends are imported when they first run.
"""

__version__ = "0.1.0"

from typing import Any


def separable_conv2d(x: Any, dw_weight: Any, pw_weight: Any, bias: Any = None, *,
                     stride: Any = 1, padding: Any = "same", dilation: Any = 1,
                     activation: str | None = None, layout: str = "NCHW",
                     backend: str = "auto", config: dict | None = None, out: Any = None) -> Any:
    """Depthwise k x k dilated convolution, then 1x1 pointwise (+ bias, ReLU), tuned.

    Runs like atrous' own ops: NumPy arrays and CPU tensors on the Numba kernel, CUDA
    tensors on the Triton kernel, with the config the tuning database holds for this
    machine and shape (``atrous tune --op separable_conv2d``), else the default.

    Args:
        x: (N, C, H, W) or (N, H, W, C) as ``layout`` says.
        dw_weight: (C, 1, k, k). pw_weight: (Cout, C, 1, 1). bias: (Cout,) or None.
        stride, dilation: int or pair. padding: int, pair, "same" (default) or "valid".
        activation: None or "relu". layout: "NCHW" or "NHWC".
        backend: "auto", "numba", "triton" or "numpy" (the float64 reference).
        config: a (partial) config of the backend's Space, overriding the tuned one.
        out: an output array to write into.

    Returns:
        The output, of the input's kind, device and dtype.
    """
    import atrous
    from atrous.core.registry import OPS
    from atrous_separable_conv.op import OP

    if OP.name not in OPS:  # not installed (no entry point): register
        atrous.register_op(OP)
    return atrous.call_op(OP.name, x, dw_weight, pw_weight, bias, stride=stride,
                          padding=padding, dilation=dilation, activation=activation,
                          layout=layout, backend=backend, config=config, out=out)
