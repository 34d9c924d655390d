"""DeepLabV3's ASPP built from atrous's kernels: weights, fusions and the fused engines.

``atrous.aspp`` and ``atrous.prepare_aspp`` are the public entry points; the PyTorch modules
(``atrous.torch.ASPP``, ``atrous.torch.DeepLabHead``) are built on them.

| module | job |
|---|---|
| ``structure`` | ``AsppStructure``: branches, pooling, bias / BN; the parameter names |
| ``weights`` | parameter names and shapes, checks, BatchNorm folding |
| ``fusions`` | the fusion switches |
| ``api`` | ``aspp()``: checks, backend choice, the engine call |
| ``cpu`` | the fused CPU engine (valid-tap GEMMs into one concatenation buffer) |
| ``gpu`` | the fused Triton engine |
| ``head`` | DeepLabV3's head after the ASPP: weights, ``deeplab_head()`` |
| ``winograd`` | Winograd F(m, 3) tilings and transforms for the CPU engine |
| ``unfused`` | the composition of the public ops every fusion is tested against |
| ``reference`` | the float64 NumPy ASPP from raw, unfolded parameters |
"""

from atrous.deeplab.api import aspp
from atrous.deeplab.fusions import Fusions
from atrous.deeplab.head import HeadWeights, deeplab_head, head_param_names, prepare_deeplab_head
from atrous.deeplab.structure import AsppStructure
from atrous.deeplab.weights import AsppWeights, param_names, prepare_aspp

__all__ = ["AsppStructure", "AsppWeights", "Fusions", "HeadWeights", "aspp", "deeplab_head",
           "head_param_names", "param_names", "prepare_aspp", "prepare_deeplab_head"]
