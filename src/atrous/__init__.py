"""atrous: generated, autotuned and validated kernels for DeepLabV3's ASPP module.

``import atrous`` stays light: NumPy only. Numba compiles kernels on first use; torch and
Triton are imported only when a tensor or the Triton backend is used.
"""

from atrous.api import dilated_conv2d, global_avg_pool, upsample_bilinear

__version__ = "0.1.0"
__all__ = ["__version__", "dilated_conv2d", "global_avg_pool", "upsample_bilinear"]
