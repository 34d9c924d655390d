"""atrous: generated, autotuned and validated kernels for DeepLabV3's ASPP module.

``import atrous`` stays light: NumPy only. Numba compiles kernels on first use; torch and
Triton are imported only when a tensor or the Triton backend is used.
"""

from atrous.api import (
    Explanation,
    dilated_conv2d,
    explain,
    global_avg_pool,
    upsample_bilinear,
    use_tuning,
)
from atrous.deeplab import AsppWeights, Fusions, aspp, prepare_aspp

__version__ = "0.1.0"
__all__ = ["AsppWeights", "Explanation", "Fusions", "__version__", "aspp", "dilated_conv2d",
           "explain", "global_avg_pool", "prepare_aspp", "upsample_bilinear", "use_tuning"]
