"""``atrous.torch.convert(model)``: swap what atrous accelerates for atrous modules, in one call.

The walk visits every submodule once, parents first:

- a torchvision ``DeepLabHead`` (``Sequential(ASPP, Conv2d 3x3, BatchNorm2d, ReLU, Conv2d
  1x1)``) becomes :class:`atrous.torch.DeepLabHead` (the fused ASPP, Winograd 3x3 conv and
  classifier GEMM on the CPU); an ``ASPP`` elsewhere (torchvision's, or any structure
  :class:`~atrous.AsppStructure` expresses) becomes :class:`atrous.torch.ASPP`. Both load
  the original's state dict with ``strict=True``, so the weights are exactly the same.
- an ``nn.Conv2d`` with a dilation above 1 becomes :class:`atrous.torch.Conv2d` (atrous's
  convolution skips the taps that land in padding, which dilated convs have many of).
- any other ``nn.Conv2d`` is swapped only when the stored benchmark rows of this machine
  (``atrous bench``, beside the tuning database) say atrous's call beat PyTorch's on that
  convolution (``atrous.report.evidence``): the decision is read, never timed here.

Nothing is guessed silently: the returned :class:`Conversion` lists every module swapped
and every candidate kept, with the reason. Converting a converted model changes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from atrous.report.evidence import Evidence, signature
from atrous.torch.conv import Conv2d, unsupported
from atrous.torch.modules import ASPP, DeepLabHead

#: What ``convs=`` accepts: which plain convolutions are candidates.
CONV_MODES = ("auto", "dilated", "none")


@dataclass(frozen=True)
class Entry:
    """One module the conversion looked at: where (``path``, "" for the model itself),
    what it was, what it became (or "" when kept) and why."""

    path: str
    kind: str
    into: str
    reason: str


@dataclass
class Conversion:
    """The result of :func:`convert`: the converted ``model`` (the argument itself when
    ``inplace``), the ``swapped`` modules and the candidates ``kept`` as they were."""

    model: nn.Module
    swapped: list[Entry] = field(default_factory=list)
    kept: list[Entry] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Swapped modules by original kind, e.g. ``{"DeepLabHead": 1, "Conv2d": 12}``."""
        out: dict[str, int] = {}
        for e in self.swapped:
            out[e.kind] = out.get(e.kind, 0) + 1
        return out

    def __str__(self) -> str:
        lines = [f"atrous.torch.convert: {len(self.swapped)} swapped, {len(self.kept)} kept"]
        lines += [f"  swapped {e.path or '<model>'}: {e.kind} -> {e.into} ({e.reason})"
                  for e in self.swapped]
        lines += [f"  kept    {e.path or '<model>'}: {e.kind} ({e.reason})" for e in self.kept]
        return "\n".join(lines)


def convert(model: nn.Module, *, inplace: bool = False, convs: str = "auto",
            backend: str = "auto", tuning: str | Path | None = None) -> Conversion:
    """Swap the submodules of ``model`` that atrous accelerates for atrous modules.

    Args:
        model: a PyTorch model in eval mode (e.g. torchvision's ``deeplabv3_resnet50``).
        inplace: change ``model`` itself; by default a deep copy is converted and
            ``model`` is left as it was.
        convs: which ``nn.Conv2d`` to swap: "auto" (dilated ones, and the others the stored
            benchmark rows show faster with atrous on this machine), "dilated" (only
            dilated ones), "none" (only ASPP / DeepLabHead).
        backend: the atrous modules' backend ("auto": Numba/BLAS on the CPU, Triton on CUDA).
        tuning: the tuning database whose benchmark rows decide about non-dilated convs
            (default: the one atrous uses, ``atrous.use_tuning``).

    Returns:
        A :class:`Conversion`: ``.model`` and the report (``print(conversion)``).

    Raises:
        RuntimeError: ``model`` (or a submodule) is in training mode: atrous's modules are
            for inference (BatchNorm folded with running statistics); call ``model.eval()``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if convs not in CONV_MODES:
        raise ValueError(f"convs must be one of {CONV_MODES}, got {convs!r}")
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        raise RuntimeError(f"atrous.torch.convert needs a model in eval mode (atrous's modules"
                           f" are inference-only), but {training[0]} is in training mode"
                           f"{f' (and {len(training) - 1} more)' if len(training) > 1 else ''};"
                           f" call model.eval() first")
    if tuning is None:
        from atrous.api import tuning_path

        tuning = tuning_path()
    target = model if inplace else copy.deepcopy(model)
    walk = _Walk(convs, backend, None if tuning is None else Path(tuning))
    result = Conversion(target)
    new = walk.visit(target, "", result)
    result.model = new if new is not None else target
    return result


@dataclass
class _Walk:
    convs: str
    backend: str
    tuning: Path | None
    evidence: dict[str, Evidence] = field(default_factory=dict)

    def visit(self, module: nn.Module, path: str, result: Conversion) -> nn.Module | None:
        """The replacement of ``module`` (None to keep it), after converting its children."""
        kind = type(module).__name__
        if isinstance(module, (ASPP, DeepLabHead, Conv2d)):
            result.kept.append(Entry(path, kind, "", "already an atrous module"))
            return None
        for attempt in (self._head, self._aspp, self._conv):
            outcome = attempt(module)
            if outcome is None:
                continue
            new, reason = outcome
            if new is not None:
                result.swapped.append(Entry(path, kind, f"atrous.torch.{type(new).__name__}",
                                            reason))
                return new
            result.kept.append(Entry(path, kind, "", reason))
            break
        for name, child in list(module.named_children()):
            new = self.visit(child, f"{path}.{name}" if path else name, result)
            if new is not None:
                setattr(module, name, new)
        return None

    def _head(self, module: nn.Module) -> tuple[nn.Module | None, str] | None:
        if not (isinstance(module, nn.Sequential) and type(module).__name__ == "DeepLabHead"):
            return None
        try:
            new = DeepLabHead.from_module(module, backend=self.backend)
        except (TypeError, ValueError, RuntimeError) as exc:
            return None, f"not swapped as a whole: {exc}"
        return new, f"ASPP rates {new[0].atrous_rates}, BatchNorms folded; strict state"

    def _aspp(self, module: nn.Module) -> tuple[nn.Module | None, str] | None:
        if not (hasattr(module, "convs") and hasattr(module, "project")):
            return None
        try:
            new = ASPP.from_module(module, backend=self.backend)
        except (TypeError, ValueError, RuntimeError) as exc:
            return None, f"not swapped as a whole: {exc}"
        what = (f"torchvision structure, rates {new.atrous_rates}"
                if new.structure.is_torchvision else f"{new.structure}")
        return new, f"{what}; strict state"

    def _conv(self, module: nn.Module) -> tuple[nn.Module | None, str] | None:
        if not isinstance(module, nn.Conv2d):
            return None
        why = unsupported(module)
        if why is not None:
            return None, why
        if max(module.dilation) > 1:
            reason = f"dilation {tuple(module.dilation)}"
        elif self.convs != "auto":
            return None, f"not dilated (convs={self.convs!r})"
        else:
            m = module
            verdict = self._evidence(m).verdict(
                signature(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                          m.dilation, m.groups, m.bias is not None),
                str(m.weight.dtype).removeprefix("torch."))
            if not verdict.faster:
                return None, f"not dilated; {verdict.detail}"
            reason = f"stored benchmarks: {verdict.detail}"
        if self.convs == "none":
            return None, "convs='none'"
        return Conv2d.from_module(module, backend=self.backend), reason

    def _evidence(self, conv: nn.Conv2d) -> Evidence:
        device = conv.weight.device
        backend = self.backend if self.backend != "auto" else (
            "triton" if device.type == "cuda" else "numba")
        where = str(device) if device.type == "cuda" else "cpu"
        key = f"{backend}@{where}"
        if key not in self.evidence:
            self.evidence[key] = Evidence(self.tuning, backend, where)
        return self.evidence[key]
