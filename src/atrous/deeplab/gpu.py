"""The fused ASPP on a GPU (Triton), for CUDA tensors (or CPU tensors under TRITON_INTERPRET=1).

1. Every spatial branch is one implicit-GEMM conv launch (padded taps skipped per tile)
   whose epilogue adds the folded BatchNorm bias and applies ReLU, storing straight into the
   branch's channel slice of the concatenation buffer (``launch_into`` with the slice's
   strides).
2. The pooling branch runs GAP and its 1x1 conv + bias + ReLU on (N, Cin, 1, 1), then one more
   1x1 conv turns it into the projection's per-image bias
   ``b_proj + W_proj[:, pool] @ pooled_branch``: no upsample, no concatenation slice.
3. The projection is a 1x1 conv over the B*C branch channels with that (N, C) bias and ReLU
   in its epilogue, written into the output.

Configs come from the tuning database (or the heuristic default) per conv problem, as for
the public ops. ``Fusions`` switches each step back to its unfused form for tests.
:func:`plan` lists the Triton launches of a run (on meta tensors: no GPU) for the compile
check (``atrous.gpucheck``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from atrous import dispatch
from atrous.core.args import from_nchw
from atrous.deeplab.fusions import Fusions
from atrous.deeplab.structure import as_structure
from atrous.kernels.conv import triton_gpu as conv_triton
from atrous.kernels.conv.spec import make_problem as conv_problem
from atrous.kernels.gap import triton_gpu as gap_triton
from atrous.kernels.gap.spec import make_problem as gap_problem
from atrous.kernels.launch_plan import Launch, run_all
from atrous.kernels.upsample import triton_gpu as upsample_triton
from atrous.kernels.upsample.spec import make_problem as upsample_problem


def _config(problem: Any, device: torch.device) -> dict[str, Any]:
    """The tuned config for ``problem`` on this GPU, else the heuristic default."""
    where = str(device) if device.type == "cuda" else "cpu"
    return dispatch.choose_config(problem, "triton", None, where)[0]


#: Where a run's launches go (``run_all`` runs them, :func:`plan` collects them) and how a
#: problem's config is chosen.
Sink = Callable[[list[Launch]], None]
Chooser = Callable[[Any, torch.device], dict[str, Any]]


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor,
          layout: str, sink: Sink, choose: Chooser, *, dilation: int = 1, relu: bool = True,
          bias_per_image: bool = False) -> torch.Tensor:
    """A "same" conv of ``x`` into the (possibly strided) view ``out``, bias and ReLU fused."""
    bias_shape = None if bias is None else (weight.shape[0],)
    problem = conv_problem(tuple(x.shape), tuple(weight.shape), bias_shape,
                           str(x.dtype).removeprefix("torch."), padding="same",
                           dilation=dilation, activation="relu" if relu else None,
                           layout=layout)
    sink(conv_triton.plan_into(problem, choose(problem, x.device), out, x, weight, bias,
                               bias_per_image=bias_per_image))
    return out


def _channels(t: torch.Tensor, start: int, stop: int, layout: str) -> torch.Tensor:
    return t[:, start:stop] if layout == "NCHW" else t[..., start:stop]


def run(x: torch.Tensor, convs: list[torch.Tensor], biases: list[torch.Tensor],
        rates: Any, layout: str, fusions: Fusions, out: torch.Tensor) -> None:
    """Write the ASPP of ``x`` into ``out`` with the Triton kernels.

    Args:
        x: contiguous (N, Cin, H, W) or (N, H, W, Cin) tensor.
        convs, biases: folded layers in order (branches, pooling, projection), contiguous,
            on x's device and dtype.
        rates: torchvision's atrous rates, or an AsppStructure.
        layout: "NCHW" or "NHWC" for ``x`` and ``out``.
        fusions: the fusions to apply (``shared_centre`` does not apply here).
        out: contiguous output (N, C, H, W) or (N, H, W, C).
    """
    _steps(x, convs, biases, rates, layout, fusions, out, run_all, _config)


def plan(x: torch.Tensor, convs: list[torch.Tensor], biases: list[torch.Tensor],
         rates: Any, layout: str, fusions: Fusions, out: torch.Tensor,
         choose: Chooser = _config) -> list[Launch]:
    """The Triton launches of :func:`run` (same arguments), in order, without running them;
    ``choose`` picks each problem's config (default: as :func:`run` does). Meant for meta
    tensors: the torch steps between launches (unfused paths) then do nothing."""
    launches: list[Launch] = []
    _steps(x, convs, biases, rates, layout, fusions, out, launches.extend, choose)
    return launches


def _steps(x: torch.Tensor, convs: list[torch.Tensor], biases: list[torch.Tensor],
           rates: Any, layout: str, fusions: Fusions, out: torch.Tensor,
           sink: Sink, choose: Chooser) -> None:
    """The body of :func:`run`: each kernel's launches go to ``sink`` as they come."""
    structure = as_structure(rates)
    n = x.shape[0]
    h, w = (x.shape[2], x.shape[3]) if layout == "NCHW" else (x.shape[1], x.shape[2])
    c, nb = convs[0].shape[0], structure.n_branches
    pool, proj = nb, len(convs) - 1
    co = convs[proj].shape[0]  # the projection's channels
    width = nb * c + (c if structure.pooling and not fusions.pool_into_bias else 0)
    cat = x.new_empty(from_nchw(n, width, h, w, layout))
    dilations = tuple(r for _, r in structure.branches)
    for b in range(nb):
        target = _channels(cat, b * c, (b + 1) * c, layout)
        dest = target if fusions.write_slices else x.new_empty(target.shape)
        if fusions.epilogue:
            _conv(x, convs[b], biases[b], dest, layout, sink, choose, dilation=dilations[b])
        else:
            _conv(x, convs[b], None, dest, layout, sink, choose, dilation=dilations[b],
                  relu=False)
            bias = biases[b][:, None, None] if layout == "NCHW" else biases[b]
            dest = (dest + bias).relu()
        if dest is not target:
            target.copy_(dest)
    if not structure.pooling:
        _conv(cat, convs[proj], biases[proj], out, layout, sink, choose)
        return

    gap = gap_problem(tuple(x.shape), str(x.dtype).removeprefix("torch."), layout=layout,
                      keepdims=True)
    pooled = x.new_empty(gap.out_shape)
    sink(gap_triton.plan(gap, choose(gap, x.device), pooled, x))
    branch = _conv(pooled, convs[pool], biases[pool], x.new_empty(from_nchw(n, c, 1, 1, layout)),
                   layout, sink, choose)
    if fusions.pool_into_bias:
        project = convs[proj][:, :nb * c].contiguous()
        folded = _conv(branch, convs[proj][:, nb * c:].contiguous(), biases[proj],
                       x.new_empty(from_nchw(n, co, 1, 1, layout)), layout, sink, choose,
                       relu=False)
        _conv(cat, project, folded.reshape(n, co), out, layout, sink, choose, bias_per_image=True)
        return
    up = upsample_problem(tuple(branch.shape), str(x.dtype).removeprefix("torch."), (h, w),
                          align_corners=False, layout=layout)
    upsampled = x.new_empty(up.out_shape)
    sink(upsample_triton.plan(up, choose(up, x.device), upsampled, branch))
    _channels(cat, nb * c, width, layout).copy_(upsampled)
    _conv(cat, convs[proj], biases[proj], out, layout, sink, choose)
