"""atrous: generated, autotuned and validated kernels for DeepLabV3's ASPP module.

``import atrous`` stays light: NumPy only. Numba compiles kernels on first use; torch and
Triton are imported only when a tensor or the Triton backend is used. Ops defined in other
packages join with :func:`register_op` or the ``atrous.ops`` entry-point group (see
docs/architecture.md, "How to write an op").
"""

from atrous.api import (
    Explanation,
    call_op,
    dilated_conv2d,
    explain,
    global_avg_pool,
    upsample_bilinear,
    use_tuning,
)
from atrous.core.registry import register_op, unregister_op
from atrous.deeplab import (
    AsppStructure,
    AsppWeights,
    Fusions,
    HeadWeights,
    aspp,
    deeplab_head,
    prepare_aspp,
    prepare_deeplab_head,
)
from atrous.prepared import PreparedConv, prepare_conv
from atrous.weight_cache import clear as clear_weight_cache
from atrous.weight_cache import info as weight_cache_info
from atrous.weight_cache import set_limit as set_weight_cache_limit

__version__ = "0.1.0"
__all__ = ["AsppStructure", "AsppWeights", "Explanation", "Fusions", "HeadWeights",
           "PreparedConv", "__version__", "aspp", "call_op", "clear_weight_cache",
           "deeplab_head", "dilated_conv2d", "explain",
           "global_avg_pool", "prepare_aspp", "prepare_conv", "prepare_deeplab_head",
           "register_op", "set_weight_cache_limit", "unregister_op", "upsample_bilinear",
           "use_tuning", "weight_cache_info"]
