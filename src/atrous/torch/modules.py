"""``ASPP`` and ``DeepLabHead``: torchvision's modules, state dicts and all, run by atrous
(the ASPP also in any other :class:`~atrous.AsppStructure`).

The submodules are torchvision's (``convs.i`` Sequentials of Conv2d / BatchNorm2d / ReLU,
``project``), so ``state_dict()`` keys and shapes are exactly torchvision's and its
checkpoints load with ``strict=True``; only ``forward`` differs: it calls the fused
``atrous::aspp`` custom op (and the conv / upsample ops for the head), which folds the
BatchNorms once and caches the result until a parameter or buffer changes.

Both modules are inference-only: they are created in eval mode with ``requires_grad=False``
parameters; ``forward`` in training mode, or with autograd needed, raises. Channels-last
inputs run the NHWC kernels and come back channels-last; other inputs run NCHW.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from atrous.core.arrays import check_inference
from atrous.deeplab.structure import KERNEL_SIZES, AsppStructure
from atrous.torch import ops


def layout_of(x: Tensor) -> str:
    """"NHWC" for a channels-last (and not also contiguous) 4-D tensor, else "NCHW"."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous():
        return "NHWC"
    return "NCHW"


def view_in(x: Tensor, layout: str) -> Tensor:
    """``x`` as the kernels read it in ``layout``: NHWC-shaped for "NHWC"."""
    return x.permute(0, 2, 3, 1) if layout == "NHWC" else x  # a contiguous NHWC view


def view_back(y: Tensor, layout: str) -> Tensor:
    """A kernel output in ``layout`` back as an NCHW-shaped tensor."""
    return y.permute(0, 3, 1, 2) if layout == "NHWC" else y  # channels-last NCHW view


def _check_eval(module: nn.Module) -> None:
    if module.training:
        raise RuntimeError(f"atrous.torch.{type(module).__name__} is inference-only: BatchNorm"
                           " uses running statistics and dropout is off; call .eval()")


class ASPP(nn.Module):
    """torchvision's ``ASPP(in_channels, atrous_rates, out_channels)``, fused by atrous; or
    any other :class:`~atrous.AsppStructure` (e.g. the Keras tutorial's) with ``structure=``.

    Submodules follow torchvision's: ``convs.i`` = Sequential(Conv2d, [BatchNorm2d], ReLU)
    per branch, ``convs.{B}`` = Sequential(AdaptiveAvgPool2d, Conv2d, [BatchNorm2d], ReLU)
    for the pooling branch, ``project`` = Sequential(Conv2d, [BatchNorm2d], ReLU, Dropout),
    so for torchvision's structure the state dict is exactly torchvision's.

    Args:
        in_channels: channels of the backbone feature map (2048 for ResNet-50/101).
        atrous_rates: one dilation per 3x3 branch of torchvision's structure ((12, 24, 36)
            at output stride 8, (6, 12, 18) at 16); None when ``structure`` is given.
        out_channels: channels of every branch and of the output (256).
        structure: another structure than torchvision's (then ``atrous_rates`` is None).
        backend: "auto" (Numba/BLAS on the CPU, Triton on CUDA), "numba", "triton", "numpy".
    """

    def __init__(self, in_channels: int, atrous_rates: Sequence[int] | None = None,
                 out_channels: int = 256, *, structure: AsppStructure | None = None,
                 backend: str = "auto") -> None:
        super().__init__()
        if structure is None:
            if atrous_rates is None:
                raise TypeError("ASPP needs atrous_rates (torchvision's structure) or"
                                " structure=")
            structure = AsppStructure.torchvision(atrous_rates)
        elif not isinstance(structure, AsppStructure):
            raise TypeError(f"structure must be atrous.AsppStructure, got"
                            f" {type(structure).__name__}")
        elif atrous_rates is not None:
            raise TypeError("give atrous_rates (torchvision's structure) or structure, not both")
        self.structure = structure
        self.atrous_rates = structure.rates
        self.backend = backend
        c, bias, bn = out_channels, structure.bias, structure.batch_norm

        def norm() -> list[nn.Module]:
            return [nn.BatchNorm2d(c)] if bn else []

        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(in_channels, c, k, padding=r * (k - 1) // 2, dilation=r,
                                    bias=bias), *norm(), nn.ReLU())
            for k, r in structure.branches]
        if structure.pooling:
            branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                          nn.Conv2d(in_channels, c, 1, bias=bias), *norm(),
                                          nn.ReLU()))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2d(len(branches) * c, c, 1, bias=bias), *norm(),
                                     nn.ReLU(), nn.Dropout(0.5))
        self.requires_grad_(False)
        self.eval()

    def layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
        """(conv, BN or None) pairs in order: the branches, pooling, the projection."""
        nb = self.structure.n_branches
        bn = self.structure.batch_norm
        seqs = [(self.convs[i], 0) for i in range(nb)]
        if self.structure.pooling:
            seqs.append((self.convs[nb], 1))
        seqs.append((self.project, 0))
        return [(seq[at], seq[at + 1] if bn else None) for seq, at in seqs]

    def params(self) -> list[Tensor]:
        """The tensors ``atrous::aspp`` takes, in ``atrous.deeplab.param_names`` order."""
        out = []
        for conv, bn in self.layers():
            out.append(conv.weight)
            if conv.bias is not None:
                out.append(conv.bias)
            if bn is not None:
                out += [bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return out

    def eps(self) -> float:
        """The BatchNorms' epsilon (one for all; 1e-5 when there is no BatchNorm)."""
        values = {bn.eps for _, bn in self.layers() if bn is not None}
        if len(values) > 1:
            raise ValueError(f"every BatchNorm of the ASPP must have the same eps, got {values}")
        return values.pop() if values else 1e-5

    def run(self, x: Tensor, layout: str) -> Tensor:
        """The ASPP of ``x`` given in ``layout`` ("NCHW" or NHWC-shaped), in that layout."""
        _check_eval(self)
        params = self.params()
        check_inference("atrous.torch.ASPP", x, *params)
        return ops.aspp(x, params, eps=self.eps(), layout=layout, backend=self.backend,
                        structure=self.structure)

    def forward(self, x: Tensor) -> Tensor:
        """(N, Cin, H, W) -> (N, C, H, W); a channels-last input runs NHWC and stays so."""
        layout = layout_of(x)
        return view_back(self.run(view_in(x, layout), layout), layout)

    @classmethod
    def from_module(cls, module: nn.Module, *, backend: str = "auto") -> ASPP:
        """An atrous ASPP with the weights, eps, dtype and device of a torchvision-style one
        (``.convs`` of Sequential branches, ``.project``); its structure is read from the
        module. TypeError when the module is not an ASPP atrous runs exactly."""
        structure, in_channels, c = structure_of(module)
        if structure.is_torchvision:
            new = cls(in_channels, structure.rates, c, backend=backend)
        else:
            new = cls(in_channels, None, c, structure=structure, backend=backend)
        src = cls.layers(_Shim(module, structure))
        for (_, bn), (_, old) in zip(new.layers(), src, strict=True):
            if bn is not None:
                bn.eps = old.eps
        _copy_from(new, module)
        return new


class _Shim:
    """Lets :meth:`ASPP.layers` read another module's layers."""

    def __init__(self, module: nn.Module, structure: AsppStructure) -> None:
        self.convs, self.project, self.structure = module.convs, module.project, structure


def structure_of(module: nn.Module) -> tuple[AsppStructure, int, int]:
    """(structure, in_channels, channels) of a torchvision-style ASPP module; TypeError
    saying why when atrous cannot run it exactly (another layout of children, a strided,
    grouped or not-"same" conv, a BN without its conv, ...)."""
    convs, project = getattr(module, "convs", None), getattr(module, "project", None)
    name = type(module).__name__
    if not isinstance(convs, nn.ModuleList) or not isinstance(project, nn.Sequential) \
            or len(convs) < 1:
        raise TypeError(f"expected a torchvision-style ASPP (with .convs and .project),"
                        f" got {name}")
    seqs = list(convs)
    pooling = isinstance(seqs[-1], nn.Sequential) and len(seqs[-1]) > 0 \
        and isinstance(seqs[-1][0], nn.AdaptiveAvgPool2d)
    if pooling and seqs[-1][0].output_size not in (1, (1, 1)):
        raise TypeError(f"{name}: the pooling branch must pool to 1x1")
    branches, kinds = [], []
    for i, seq in enumerate(seqs):
        pool = pooling and i == len(seqs) - 1
        kinds.append(_conv_block(seq, pool, f"{name}.convs[{i}]"))
        if not pool:
            conv = kinds[-1][0]
            branches.append((conv.kernel_size[0], conv.dilation[0]))
    last = _conv_block(project, False, f"{name}.project", tail=True)
    kinds.append(last)
    biases = {conv.bias is not None for conv, _ in kinds}
    norms = {bn is not None for _, bn in kinds}
    if len(biases) > 1 or len(norms) > 1:
        raise TypeError(f"{name}: atrous runs an ASPP whose convs all have a bias or all have"
                        f" none, all a BatchNorm or all none")
    first = kinds[0][0]
    cin, c = first.in_channels, first.out_channels
    for conv, _ in kinds[:-1]:
        if (conv.in_channels, conv.out_channels) != (cin, c):
            raise TypeError(f"{name}: every branch must map {cin} to {c} channels")
    if last[0].in_channels != len(seqs) * c or last[0].out_channels != c:
        raise TypeError(f"{name}: the projection must map {len(seqs) * c} to {c} channels")
    structure = AsppStructure(tuple(branches), pooling=pooling, bias=biases.pop(),
                              batch_norm=norms.pop())
    return structure, cin, c


def _conv_block(seq: nn.Module, pool: bool, where: str,
                tail: bool = False) -> tuple[nn.Conv2d, nn.BatchNorm2d | None]:
    """The conv and BN of [AdaptiveAvgPool2d], Conv2d, [BatchNorm2d], ReLU[, Dropout]."""
    if not isinstance(seq, nn.Sequential):
        raise TypeError(f"{where} must be a Sequential, got {type(seq).__name__}")
    kids = list(seq)[1:] if pool else list(seq)
    if tail and kids and isinstance(kids[-1], nn.Dropout):
        kids = kids[:-1]
    bn = kids[1] if len(kids) == 3 and isinstance(kids[1], nn.BatchNorm2d) else None
    if len(kids) != (3 if bn is not None else 2) or not isinstance(kids[0], nn.Conv2d) \
            or not isinstance(kids[-1], nn.ReLU):
        raise TypeError(f"{where} must be [AdaptiveAvgPool2d,] Conv2d, [BatchNorm2d,] ReLU"
                        f"{', [Dropout]' if tail else ''}; got"
                        f" {[type(k).__name__ for k in seq]}")
    conv = kids[0]
    k, d = conv.kernel_size, conv.dilation
    if k[0] != k[1] or k[0] not in KERNEL_SIZES or d[0] != d[1] or conv.stride != (1, 1) \
            or conv.groups != 1 or conv.padding_mode != "zeros" \
            or conv.padding not in ((d[0] * (k[0] - 1) // 2,) * 2, "same") \
            or (k[0] == 1 and d[0] != 1):
        raise TypeError(f"{where}: atrous runs 'same' 1x1 and 3x3 convs (stride 1, groups 1,"
                        f" square dilation), got kernel {k}, dilation {d}, stride"
                        f" {conv.stride}, padding {conv.padding}, groups {conv.groups}")
    if bn is not None and (not bn.affine or not bn.track_running_stats):
        raise TypeError(f"{where}: the BatchNorm must be affine with running statistics")
    return conv, bn


def _copy_from(new: nn.Module, module: nn.Module) -> None:
    """Load ``module``'s state into ``new`` (strict), on its device and dtype."""
    p = next(module.parameters())
    new.to(device=p.device, dtype=p.dtype)
    new.load_state_dict(module.state_dict(), strict=True)


class DeepLabHead(nn.Sequential):
    """torchvision's ``DeepLabHead``: ASPP -> 3x3 conv -> BN -> ReLU -> 1x1 conv to classes.

    Children ``0``..``4`` and their state-dict keys are torchvision's. ``forward(x,
    image_size)`` also does DeepLabV3's final step when ``image_size`` is given: bilinear
    upsampling of the logits to the image (align_corners=False), as torchvision's
    ``DeepLabV3.forward`` does after the head.

    Args:
        in_channels: channels of the backbone feature map.
        num_classes: output classes (21 for Pascal VOC).
        atrous_rates: the ASPP's rates (torchvision's default (12, 24, 36)).
        backend: as in :class:`ASPP`.
    """

    def __init__(self, in_channels: int, num_classes: int,
                 atrous_rates: Sequence[int] = (12, 24, 36), *, backend: str = "auto") -> None:
        super().__init__(ASPP(in_channels, atrous_rates, backend=backend),
                         nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))
        self.backend = backend
        self.requires_grad_(False)
        self.eval()

    def params(self) -> list[Tensor]:
        """The tensors ``atrous::deeplab_head`` takes (``head_param_names`` order)."""
        bn = self[2]
        return [*self[0].params(), self[1].weight, bn.weight, bn.bias, bn.running_mean,
                bn.running_var, self[4].weight, self[4].bias]

    def forward(self, x: Tensor, image_size: Any = None) -> Tensor:
        """(N, Cin, H, W) -> logits (N, classes, H, W), or upsampled to ``image_size``
        ((height, width) or one int) when given."""
        _check_eval(self)
        params = self.params()
        check_inference("atrous.torch.DeepLabHead", x, *params)
        eps = self[0].eps()
        if self[2].eps != eps:
            raise ValueError(f"the head's BatchNorm eps ({self[2].eps}) must equal the ASPP's"
                             f" ({eps})")
        layout = layout_of(x)
        y = ops.deeplab_head(view_in(x, layout), params, self[0].atrous_rates, eps=eps,
                             layout=layout, image_size=image_size, backend=self.backend)
        return view_back(y, layout)

    @classmethod
    def from_module(cls, module: nn.Module, *, backend: str = "auto") -> DeepLabHead:
        """An atrous DeepLabHead with the weights, dtype and device of a torchvision one."""
        if not isinstance(module, nn.Sequential) or len(module) != 5:
            raise TypeError(f"expected a torchvision-style DeepLabHead (a 5-module Sequential),"
                            f" got {type(module).__name__}")
        conv, bn, relu, classifier = module[1], module[2], module[3], module[4]
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                and isinstance(relu, nn.ReLU) and isinstance(classifier, nn.Conv2d)):
            raise TypeError(f"expected DeepLabHead's ASPP, Conv2d, BatchNorm2d, ReLU, Conv2d;"
                            f" got {[type(m).__name__ for m in module]}")
        if (conv.kernel_size, conv.padding, conv.dilation, conv.stride, conv.groups) != \
                ((3, 3), (1, 1), (1, 1), (1, 1), 1) or conv.bias is not None \
                or conv.padding_mode != "zeros" or classifier.kernel_size != (1, 1) \
                or classifier.stride != (1, 1) or classifier.padding != (0, 0) \
                or classifier.groups != 1 or classifier.bias is None:
            raise TypeError("expected DeepLabHead's 3x3 conv (padding 1, no bias) and 1x1"
                            " classifier with a bias")
        aspp = ASPP.from_module(module[0], backend=backend)
        if not aspp.structure.is_torchvision:
            raise TypeError(f"a DeepLabHead's ASPP must have torchvision's structure, got"
                            f" {aspp.structure}")
        new = cls(aspp.convs[0][0].in_channels, module[4].out_channels, aspp.atrous_rates,
                  backend=backend)
        new[0] = aspp
        new[2].eps = module[2].eps
        _copy_from(new, module)
        return new
