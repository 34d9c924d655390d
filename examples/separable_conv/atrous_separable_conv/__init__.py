"""atrous-separable-conv: DeepLabV3+'s depthwise-separable atrous convolution as an atrous op
defined outside atrous (spec, float64 reference, a Numba kernel generated from its config,
a Triton kernel), registered through atrous' ``atrous.ops`` entry-point group.

Importing this package imports no kernel: ``atrous_separable_conv.op.OP`` is the op, and
its backends are imported when they first run.
"""

__version__ = "0.1.0"
