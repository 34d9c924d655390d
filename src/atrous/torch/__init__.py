"""PyTorch integration: torchvision-compatible ``ASPP`` / ``DeepLabHead`` and custom ops.

Imported only explicitly (``import atrous.torch``), since it imports torch and registers
``torch.ops.atrous.{global_avg_pool, dilated_conv2d, upsample_bilinear, aspp,
deeplab_head}``, which
``torch.compile`` treats as opaque ops with known output shapes.

>>> import atrous.torch
>>> head = atrous.torch.DeepLabHead(2048, 21)             # or DeepLabHead.from_module(tv_head)
>>> head.load_state_dict(torchvision_head.state_dict())  # strict: the keys are torchvision's
>>> with torch.no_grad():
...     logits = head(features, image_size=(513, 513))

Everything here is inference-only: calling with autograd needed raises a RuntimeError.
"""

from atrous.deeplab.head import head_param_names
from atrous.deeplab.structure import AsppStructure
from atrous.deeplab.weights import param_names
from atrous.torch.cache import clear as clear_cache
from atrous.torch.modules import ASPP, DeepLabHead
from atrous.torch.ops import (
    aspp,
    deeplab_head,
    dilated_conv2d,
    global_avg_pool,
    upsample_bilinear,
)

__all__ = ["ASPP", "AsppStructure", "DeepLabHead", "aspp", "clear_cache", "deeplab_head",
           "dilated_conv2d", "global_avg_pool", "head_param_names", "param_names",
           "upsample_bilinear"]
