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
>>> conversion = atrous.torch.convert(torchvision_model.eval())  # or swap the modules yourself
>>> print(conversion)                                            # what was swapped, and why

The ASPP and head modules and the ops are inference-only: calling them with autograd
needed raises a RuntimeError. ``Conv2d`` (what ``convert`` puts in place of an
``nn.Conv2d``) runs ``nn.Conv2d``'s own forward when gradients are needed.
"""

from atrous.deeplab.head import head_param_names
from atrous.deeplab.structure import AsppStructure
from atrous.deeplab.weights import param_names
from atrous.torch.cache import clear as clear_cache
from atrous.torch.conv import Conv2d
from atrous.torch.convert import Conversion, convert
from atrous.torch.modules import ASPP, DeepLabHead
from atrous.torch.ops import (
    aspp,
    deeplab_head,
    dilated_conv2d,
    global_avg_pool,
    upsample_bilinear,
)

__all__ = ["ASPP", "AsppStructure", "Conv2d", "Conversion", "DeepLabHead", "aspp",
           "clear_cache", "convert", "deeplab_head",
           "dilated_conv2d", "global_avg_pool", "head_param_names", "param_names",
           "upsample_bilinear"]
