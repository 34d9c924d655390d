"""The compile check's matrix: which launches of which kernels, configs, dtypes, layouts and
flags get compiled. Every case is planned by the real launchers on meta tensors.

- Space sweeps: one representative DeepLabV3 problem per op, layout and dtype (TF32 counts
  as a dtype of the convolution), with the ASPP's flags (bias and ReLU on the conv), over
  the whole Triton Space (``full``) or a stratified sample of it in which every value of
  every parameter appears at least once.
- Defaults: the default config of every problem of the DeepLabV3 suite (batch 1 and 4).
- 64-bit offsets: one problem per op and layout past 2**31 elements, default config.
- The ASPP GPU path (fused and unfused), default configs, both geometries, batch 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from atrous.core.args import GPU_DTYPES, LAYOUTS, from_nchw
from atrous.core.space import Config, Space
from atrous.kernels.launch_plan import Launch

#: The dtype labels of the check: the GPU dtypes, and "tf32" (float32 with allow_tf32) for
#: the convolution.
CONV_DTYPES = ("float32", "tf32", "float16", "bfloat16")


@dataclass(frozen=True)
class Case:
    """One planned run: op, problem, dtype label, layout, flags, config, and how to plan it
    (a function returning the launches, called only when the case is compiled)."""

    op: str
    problem: str
    dtype: str
    layout: str
    flags: str
    config: Config
    default: bool
    plan: Callable[[], list[Launch]] = field(compare=False, repr=False)
    source: Any = field(default=None, compare=False, repr=False)  # the op's Problem

    @property
    def label(self) -> str:
        """Everything that names the case in a failure."""
        cfg = ",".join(f"{k}={v}" for k, v in self.config.items())
        return (f"{self.op} [{self.problem}] {self.dtype} {self.layout}"
                f"{' ' + self.flags if self.flags else ''} config {{{cfg}}}")


def stratified(space: Space) -> list[Config]:
    """A few configs of ``space`` in which every allowed value of every parameter appears
    at least once: greedily the config covering the most values not yet seen (stable)."""
    every = space.configs()
    wanted = {(k, v) for c in every for k, v in c.items()}
    chosen: list[Config] = []
    while wanted:
        best = max(every, key=lambda c: sum((k, v) in wanted for k, v in c.items()))
        chosen.append(best)
        wanted -= set(best.items())
    return chosen


def sample(space: Space, extra: Iterable[Config] = ()) -> list[Config]:
    """What the interpreter runs of a grown Space: the :func:`stratified` sample (every
    allowed value of every parameter at least once), the two corners (the allowed configs
    with the most parameters at their smallest, and at their largest, values: small tiles
    meet large splits and stage counts there), and ``extra`` (e.g. the default config)
    where allowed; no config twice, in that order."""
    every = space.configs()
    chosen = stratified(space)
    if every:
        for pick in (min, max):
            ends = {k: pick(v for v in vals if isinstance(v, (int, float)))
                    for k, vals in space.params.items()
                    if any(isinstance(v, (int, float)) for v in vals)}
            chosen.append(max(every, key=lambda c, e=ends: sum(c[k] == v for k, v in e.items())))
    chosen += [c for c in extra if space.allows(c)]
    unique: list[Config] = []
    for c in chosen:
        if c not in unique:
            unique.append(c)
    return unique


def _meta(shape: tuple[int, ...], dtype: str) -> Any:
    import torch

    return torch.empty(shape, dtype=getattr(torch, dtype), device="meta")


def _torch_dtype(label: str) -> str:
    return "float32" if label == "tf32" else label


def conv_case(shape: tuple[int, int, int, int, int, int, int], dtype: str, layout: str,
              config: Config | None, name: str, *, bias: bool = True, relu: bool = True,
              flags: str = "bias relu") -> Case:
    """A ``dilated_conv2d`` "same" conv (N, Cin, H, W, Cout, k, dilation) planned by its
    launcher; ``config`` None takes the default config."""
    from atrous.kernels.conv import spec
    from atrous.kernels.conv import triton_gpu as launcher

    n, cin, h, w, cout, k, d = shape
    tdt = _torch_dtype(dtype)
    p = spec.make_problem(from_nchw(n, cin, h, w, layout), (cout, cin, k, k),
                          (cout,) if bias else None, tdt, padding="same", dilation=d,
                          activation="relu" if relu else None, layout=layout,
                          allow_tf32=dtype == "tf32")
    cfg = config or spec.default_config(p, "triton")

    def plan() -> list[Launch]:
        return launcher.plan(p, cfg, _meta(p.out_shape, tdt), _meta(p.in_shape, tdt),
                             _meta(p.weight_shape, tdt), _meta((cout,), tdt) if bias else None)

    return Case(spec.OP, name, dtype, layout, flags, cfg, config is None, plan, p)


def gap_case(shape: tuple[int, int, int, int], dtype: str, layout: str,
             config: Config | None, name: str, flags: str = "") -> Case:
    """A ``global_avg_pool`` of an (N, C, H, W) input planned by its launcher."""
    from atrous.kernels.gap import spec
    from atrous.kernels.gap import triton_gpu as launcher

    p = spec.make_problem(from_nchw(*shape, layout), dtype, layout=layout)
    cfg = config or spec.default_config(p, "triton")

    def plan() -> list[Launch]:
        return launcher.plan(p, cfg, _meta(p.out_shape, dtype), _meta(p.in_shape, dtype))

    return Case(spec.OP, name, dtype, layout, flags, cfg, config is None, plan, p)


def upsample_case(shape: tuple[int, int, int, int], size: int, dtype: str, layout: str,
                  config: Config | None, name: str, flags: str = "") -> Case:
    """An ``upsample_bilinear`` of an (N, C, H, W) input to size x size (half_pixel)."""
    from atrous.kernels.upsample import spec
    from atrous.kernels.upsample import triton_gpu as launcher

    p = spec.make_problem(from_nchw(*shape, layout), dtype, (size, size), layout=layout)
    cfg = config or spec.default_config(p, "triton")

    def plan() -> list[Launch]:
        return launcher.plan(p, cfg, _meta(p.out_shape, dtype), _meta(p.in_shape, dtype))

    return Case(spec.OP, name, dtype, layout, flags, cfg, config is None, plan, p)


def aspp_case(feature: int, rates: tuple[int, ...], dtype: str, layout: str,
              fused: bool) -> Case:
    """The ASPP GPU path (``atrous.deeplab.gpu.plan``) of DeepLabV3 (2048 -> 256) at batch 1
    with default configs, fused (all fusions) or unfused."""
    from atrous.core.registry import op
    from atrous.deeplab import gpu
    from atrous.deeplab.fusions import Fusions

    c, cin, nb = 256, 2048, 1 + len(rates)

    def plan() -> list[Launch]:
        convs = [_meta((c, cin, 1, 1), dtype)] + [_meta((c, cin, 3, 3), dtype) for _ in rates]
        convs += [_meta((c, cin, 1, 1), dtype), _meta((c, (nb + 1) * c, 1, 1), dtype)]
        biases = [_meta((c,), dtype) for _ in convs]
        return gpu.plan(_meta(from_nchw(1, cin, feature, feature, layout), dtype), convs,
                        biases, rates, layout, Fusions() if fused else Fusions.none(),
                        _meta(from_nchw(1, c, feature, feature, layout), dtype),
                        choose=lambda p, _d: op(p.op).spec.default_config(p, "triton"))

    name = f"aspp {feature}x{feature} rates {'/'.join(map(str, rates))} b1"
    return Case("aspp", name, dtype, layout, "fused" if fused else "unfused", {}, True, plan)


# Representative problems of the Space sweeps: DeepLabV3 at output stride 16, batch 1.
_SWEEP_CONV = (1, 2048, 33, 33, 256, 3, 12)
_SWEEP_GAP = (1, 2048, 33, 33)
_SWEEP_UP = ((1, 21, 65, 65), 520)


def sweep(full: bool) -> Iterator[Case]:
    """Space configs of each op, layout and dtype on its representative problem: all of them
    with ``full``, else the stratified sample."""
    from atrous.kernels.conv.spec import triton_space as conv_space
    from atrous.kernels.gap.spec import triton_space as gap_space
    from atrous.kernels.upsample.spec import triton_space as up_space

    def pick(space: Space) -> list[Config]:
        return space.configs() if full else stratified(space)

    for layout in LAYOUTS:
        for dtype in CONV_DTYPES:
            probe = conv_case(_SWEEP_CONV, dtype, layout, None, "")
            for cfg in pick(conv_space(probe.source, resources=False)):
                yield conv_case(_SWEEP_CONV, dtype, layout, cfg, "conv3x3 d12 2048->256 33x33 b1")
        for dtype in GPU_DTYPES:
            probe = gap_case(_SWEEP_GAP, dtype, layout, None, "")
            for cfg in pick(gap_space(probe.source, resources=False)):
                yield gap_case(_SWEEP_GAP, dtype, layout, cfg, "gap 2048x33x33 b1")
            probe = upsample_case(*_SWEEP_UP, dtype, layout, None, "")
            for cfg in pick(up_space(probe.source, resources=False)):
                yield upsample_case(*_SWEEP_UP, dtype, layout, cfg, "upsample 21x65x65->520 b1")


def defaults() -> Iterator[Case]:
    """Default configs: every problem of the DeepLabV3 suite, 64-bit offsets, the ASPP path."""
    from atrous.jobs.suite import DEEPLABV3

    for layout in LAYOUTS:
        for g in DEEPLABV3:
            for n in (1, 4):
                tag = f"{g.feature}x{g.feature} b{n}"
                f = g.feature
                for dtype in CONV_DTYPES:
                    yield conv_case((n, 2048, f, f, 256, 1, 1), dtype, layout, None,
                                    f"conv1x1 2048->256 {tag}", bias=False, relu=False, flags="")
                    for r in g.rates:
                        yield conv_case((n, 2048, f, f, 256, 3, r), dtype, layout, None,
                                        f"conv3x3 d{r} 2048->256 {tag}", bias=False, relu=False,
                                        flags="")
                for dtype in GPU_DTYPES:
                    yield gap_case((n, 2048, f, f), dtype, layout, None, f"gap 2048x{tag}")
                    yield upsample_case((n, 256, 1, 1), f, dtype, layout, None,
                                        f"upsample 256x1x1->{f}x{f} b{n}")
                    yield upsample_case((n, 21, f, f), g.image, dtype, layout, None,
                                        f"upsample 21x{tag}->{g.image}")
        for dtype in CONV_DTYPES:
            yield conv_case((1, 256, 2900, 2900, 256, 3, 1), dtype, layout, None,
                            "conv3x3 256->256 2900x2900 b1", flags="bias relu int64")
        for dtype in GPU_DTYPES:
            yield gap_case((1, 256, 2900, 2900), dtype, layout, None, "gap 256x2900x2900 b1",
                           flags="int64")
            yield upsample_case((1, 21, 1000, 1000), 10200, dtype, layout, None,
                                "upsample 21x1000x1000->10200 b1", flags="int64")
            for g in DEEPLABV3:
                for fused in (True, False):
                    yield aspp_case(g.feature, g.rates, dtype, layout, fused)
