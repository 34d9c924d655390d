"""dilated_conv2d: arguments -> ConvProblem, output size, costs, tap geometry, spaces, defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass

from atrous.core.args import (
    ITEMSIZE,
    MAX_ELEMENTS,
    check_elements,
    check_fields,
    check_layout,
    check_shape,
    check_sizes,
    int_pair,
    same_dtype,
    thread_choices,
    to_nchw,
)
from atrous.core.space import Config, Space
from atrous.kernels.conv.schedule_cpu import VARIANT_KEYS, VariantSpace, tile_choices

OP = "dilated_conv2d"
#: The default config runs Winograd when its products are below this share of direct taps'
#: (its transforms and scatter cost about a tenth of the products they replace).
WINOGRAD_DEFAULT_GAIN = 0.9
#: ... and, for NCHW, when the input has at most this many elements (see _default_variant).
WINOGRAD_NCHW_ELEMENTS = 1 << 24
ACTIVATIONS = (None, "relu")


@dataclass(frozen=True)
class ConvProblem:
    """A 2-D convolution with stride, zero padding, dilation, groups, bias and activation.

    ``padding`` is (top, bottom, left, right): "same" may pad one side more than the other.
    """

    n: int
    cin: int
    h: int
    w: int
    cout: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    has_bias: bool
    activation: str | None
    dtype: str
    layout: str
    allow_tf32: bool = False

    op = OP

    def __post_init__(self) -> None:
        # Cheap (a few us): a Problem built by hand or from data is as valid as make_problem's.
        check_sizes("ConvProblem", ("n", "cin", "h", "w", "cout", "kh", "kw", "groups"),
                    (self.n, self.cin, self.h, self.w, self.cout, self.kh, self.kw, self.groups))
        check_fields("ConvProblem", self.dtype, self.layout)
        st, pad, dil = self.stride, self.padding, self.dilation
        if not (type(st) is tuple and type(dil) is tuple and type(pad) is tuple
                and len(st) == len(dil) == 2 and len(pad) == 4 and _ints_in(st + dil, 1)
                and _ints_in(pad, 0)):
            for name, value, length, low in (("stride", st, 2, 1), ("dilation", dil, 2, 1),
                                             ("padding", pad, 4, 0)):
                if type(value) is not tuple or len(value) != length or not _ints_in(value, low):
                    raise ValueError(f"ConvProblem.{name} must be a tuple of {length} ints"
                                     f" >= {low}, got {value!r}")
        if self.cin % self.groups or self.cout % self.groups:
            raise ValueError(f"ConvProblem.groups={self.groups} must divide cin={self.cin}"
                             f" and cout={self.cout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if type(self.has_bias) is not bool or type(self.allow_tf32) is not bool:
            raise ValueError(f"ConvProblem.has_bias and allow_tf32 must be bools, got"
                             f" {self.has_bias!r} and {self.allow_tf32!r}")
        oh = _out_size(self.h, pad[0] + pad[1], self.kh, dil[0], st[0])
        ow = _out_size(self.w, pad[2] + pad[3], self.kw, dil[1], st[1])
        if oh < 1 or ow < 1:
            raise ValueError(
                f"output would be empty: input {self.h}x{self.w}, padding {self.padding},"
                f" kernel {self.kh}x{self.kw}, dilation {self.dilation}, stride {self.stride}"
                f" give {oh}x{ow}")
        if max(self.cin * self.h * self.w, self.cout * oh * ow) * self.n > MAX_ELEMENTS or \
                self.cout * self.cin * self.kh * self.kw > MAX_ELEMENTS:
            check_elements("x", self.in_shape)
            check_elements("weight", self.weight_shape)
            check_elements("output (from padding, dilation and stride)", self.out_shape)

    @property
    def oh(self) -> int:
        return _out_size(self.h, self.padding[0] + self.padding[1], self.kh, self.dilation[0],
                         self.stride[0])

    @property
    def ow(self) -> int:
        return _out_size(self.w, self.padding[2] + self.padding[3], self.kw, self.dilation[1],
                         self.stride[1])

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.n, self.cin, self.h, self.w) if self.layout == "NCHW" else (
            self.n, self.h, self.w, self.cin)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.cout, self.cin // self.groups, self.kh, self.kw)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...] | None]:
        return {"x": self.in_shape, "weight": self.weight_shape,
                "bias": (self.cout,) if self.has_bias else None}

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.n, self.cout, self.oh, self.ow) if self.layout == "NCHW" else (
            self.n, self.oh, self.ow, self.cout)

    def tap_range(self, axis: int, k: int) -> tuple[int, int]:
        """Output indices [lo, hi) along ``axis`` (0 = rows, 1 = columns) whose input for
        kernel tap ``k`` lands inside the image, not in the padding. Empty when lo >= hi."""
        if axis == 0:
            size, pad, d, s, out = (self.h, self.padding[0], self.dilation[0], self.stride[0],
                                    self.oh)
        else:
            size, pad, d, s, out = (self.w, self.padding[2], self.dilation[1], self.stride[1],
                                    self.ow)
        offset = k * d - pad  # input index = o * s + offset
        lo = max(0, -(offset // s) if offset < 0 else 0)
        hi = min(out, (size - 1 - offset) // s + 1) if size - 1 - offset >= 0 else 0
        return lo, max(lo, hi)

    @property
    def valid_taps(self) -> list[tuple[int, int, int, int, int, int]]:
        """(ky, kx, oy_lo, oy_hi, ox_lo, ox_hi) for every tap that touches real input."""
        taps = []
        for ky in range(self.kh):
            ylo, yhi = self.tap_range(0, ky)
            for kx in range(self.kw):
                xlo, xhi = self.tap_range(1, kx)
                if ylo < yhi and xlo < xhi:
                    taps.append((ky, kx, ylo, yhi, xlo, xhi))
        return taps

    @property
    def flops(self) -> int:
        """Multiply-adds of the full kh x kw window (what a generic library does), times 2."""
        macs_per_output = (self.cin // self.groups) * self.kh * self.kw
        return 2 * self.n * self.oh * self.ow * self.cout * macs_per_output

    @property
    def valid_flops(self) -> int:
        """Multiply-adds whose input lies inside the image (padding skipped), times 2."""
        pixels = sum((t[3] - t[2]) * (t[5] - t[4]) for t in self.valid_taps)
        return 2 * self.n * pixels * self.cout * (self.cin // self.groups)

    @property
    def bytes(self) -> int:
        """Fewest bytes moved: input, weight and bias read once, output written once."""
        weights = self.cout * (self.cin // self.groups) * self.kh * self.kw
        elems = (self.n * self.cin * self.h * self.w + weights + self.cout * self.has_bias
                 + self.n * self.cout * self.oh * self.ow)
        return elems * ITEMSIZE[self.dtype]

    @property
    def key(self) -> str:
        """The tuning key: everything that can change the best config."""
        p = self.padding
        return (f"{OP}:{self.layout}:{self.dtype}{':tf32' if self.allow_tf32 else ''}"
                f":n{self.n}c{self.cin}h{self.h}w{self.w}:o{self.cout}k{self.kh}x{self.kw}"
                f":s{self.stride[0]}x{self.stride[1]}:d{self.dilation[0]}x{self.dilation[1]}"
                f":p{p[0]}.{p[1]}.{p[2]}.{p[3]}:g{self.groups}:b{int(self.has_bias)}"
                f":{self.activation or 'none'}")


def _ints_in(values: tuple, low: int) -> bool:
    """Whether every value is an int (not a bool) in [low, MAX_ELEMENTS]."""
    for v in values:  # noqa: SIM110 - faster than all() over a generator, per call
        if type(v) is not int or not low <= v <= MAX_ELEMENTS:
            return False
    return True


def _out_size(size: int, pad_total: int, k: int, d: int, s: int) -> int:
    return (size + pad_total - d * (k - 1) - 1) // s + 1


def _padding(padding: object, stride: tuple[int, int], dilation: tuple[int, int], kh: int,
             kw: int) -> tuple[int, int, int, int]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
        th, tw = dilation[0] * (kh - 1), dilation[1] * (kw - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    ph, pw = int_pair("padding", padding, 0)
    return (ph, ph, pw, pw)


def make_problem(x_shape: tuple[int, ...], weight_shape: tuple[int, ...],
                 bias_shape: tuple[int, ...] | None, dtype: str, *, stride: object = 1,
                 padding: object = 0, dilation: object = 1, groups: int = 1,
                 activation: str | None = None, layout: str = "NCHW",
                 allow_tf32: bool = False, weight_dtype: str | None = None,
                 bias_dtype: str | None = None) -> ConvProblem:
    """Validate the arguments of ``dilated_conv2d`` and return its Problem.

    Args:
        x_shape: input shape in ``layout`` order.
        weight_shape: (Cout, Cin/groups, kh, kw), always OIHW.
        bias_shape: (Cout,) or None.
        dtype: the input's dtype name; ``weight_dtype`` and ``bias_dtype`` must match it.
        stride, dilation: int or pair, each >= 1.
        padding: int or pair (>= 0), "same" (stride 1 only) or "valid".
        groups: divides Cin and Cout; Cin groups is depthwise.
        activation: None or "relu", fused after the bias.
        layout: "NCHW" or "NHWC" for input and output.
        allow_tf32: let float32 matrix products use TF32 on the GPU (part of the tuning key).
    """
    layout = check_layout(layout)
    dtype = same_dtype(x=dtype, weight=weight_dtype, bias=bias_dtype)
    x_shape = check_shape("x", x_shape, 4, layout)
    weight_shape = check_shape("weight", weight_shape, 4, "OIHW")
    n, cin, h, w = to_nchw(x_shape, layout)
    cout, cin_g, kh, kw = weight_shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if cin % groups or cout % groups:
        raise ValueError(f"groups={groups} must divide input channels ({cin}) and output"
                         f" channels ({cout}); x shape {x_shape}, weight shape {weight_shape}")
    if cin_g * groups != cin:
        raise ValueError(f"weight shape {weight_shape} expects {cin_g * groups} input channels"
                         f" (Cin/groups={cin_g}, groups={groups}) but x {x_shape} ({layout})"
                         f" has {cin}")
    if bias_shape is not None and tuple(bias_shape) != (cout,):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias_shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not isinstance(allow_tf32, bool):
        raise TypeError(f"allow_tf32 must be a bool, got {allow_tf32!r}")
    stride_p = int_pair("stride", stride, 1)
    dilation_p = int_pair("dilation", dilation, 1)
    pad = _padding(padding, stride_p, dilation_p, kh, kw)
    # ConvProblem checks the output size (empty, or too many elements) itself.
    return ConvProblem(n, cin, h, w, cout, kh, kw, stride_p, pad, dilation_p, groups,
                       bias_shape is not None, activation, dtype, layout, allow_tf32)


def gemm_supported(problem: ConvProblem) -> bool:
    """Whether the "gemm" CPU variant applies: stride 1 and one group, so every tap's input
    is a shifted rectangle of one (pixels, Cin) matrix."""
    return problem.stride == (1, 1) and problem.groups == 1


def winograd_supported(problem: ConvProblem) -> bool:
    """Whether the "winograd" CPU variant applies: a "same" 3x3, stride 1, one group, the
    same dilation on both axes (its tiles run along lines of positions congruent mod it)."""
    d = problem.dilation[0]
    return ((problem.kh, problem.kw) == (3, 3) and problem.stride == (1, 1)
            and problem.groups == 1 and problem.dilation == (d, d)
            and problem.padding == (d, d, d, d))


def cpu_variants(problem: ConvProblem) -> tuple[str, ...]:
    """The CPU variants that apply to ``problem``: "tile" (generated Numba register tiles,
    any convolution), "gemm" (a BLAS product per valid tap), "winograd" (F(m,3) tiles)."""
    return (("tile",) + (("gemm",) if gemm_supported(problem) else ())
            + (("winograd",) if winograd_supported(problem) else ()))


def numba_space(problem: ConvProblem) -> Space:
    """Numba (the CPU): the variant, its own keys, and the thread count for all of them.

    * "tile": a register tile of BLOCK_OW output pixels x BLOCK_CO output channels (one
      vector accumulator each, so at most 20 of the 32 vector registers); ``threads`` is
      Numba's thread count (set at launch, never recompiles).
    * "gemm": GEMM_BANDS output row bands per image x GEMM_SPLIT output channel blocks as
      tasks with one-thread BLAS (1 x 1: whole products in BLAS's own ``threads``), and
      GEMM_MERGE, the NHWC batch's whole-image tap as one product (where one exists).
    * "winograd": WINO_TILE, the largest F(m, 3) tile (only values giving different
      tilings), WINO_PARTS product tasks and WINO_BANDS scatter bands per worker,
      WINO_ORDER "rows" or "largest" first, on ``threads`` workers.

    A variant's keys are held at their defaults (``VARIANT_KEYS``) in the other variants'
    configs, so no two configs differ only in keys their variant ignores.
    """
    threads = thread_choices(os.cpu_count() or 1)
    variants = cpu_variants(problem)
    params: dict[str, tuple] = {"variant": variants, "BLOCK_CO": (4, 5), "BLOCK_OW": (3, 4, 5)}
    params["GEMM_BANDS"] = tuple(v for v in (1, 2, 4, 8) if v <= problem.oh)
    params["GEMM_SPLIT"] = tuple(v for v in (1, 2, 4) if v <= problem.cout)
    params["GEMM_MERGE"] = (1, 0)
    params["WINO_TILE"] = _winograd_tiles(problem)
    params["WINO_PARTS"] = (1, 2, 4)
    params["WINO_BANDS"] = (1, 2, 4)
    params["WINO_ORDER"] = ("rows", "largest")
    params["threads"] = threads
    constraints = ["BLOCK_OW * BLOCK_CO <= 20"]
    for variant, keys in VARIANT_KEYS.items():
        fixed = " and ".join(f"{k} == {v!r}" for k, v in keys.items())
        constraints.append(f"variant == {variant!r} or ({fixed})")
    from atrous.kernels.conv.gemm_cpu import mergeable  # imports NumPy only

    # merging applies to an unblocked NHWC batch with a whole-image tap
    constraints.append(f"GEMM_MERGE == 1 or ({mergeable(problem)} and GEMM_BANDS == 1"
                       " and GEMM_SPLIT == 1)")
    return VariantSpace(params, tuple(constraints))


def _winograd_tiles(problem: ConvProblem) -> tuple[int, ...]:
    """WINO_TILE's values for ``problem``: those giving different tilings (the default
    alone where Winograd does not apply)."""
    default = int(VARIANT_KEYS["winograd"]["WINO_TILE"])
    if not winograd_supported(problem):
        return (default,)
    return tile_choices(problem.h, problem.w, problem.dilation[0])


def complete_config(problem: ConvProblem, backend: str, given: Config) -> Config:
    """A partial config completed with defaults: on Numba, tile keys without a variant
    mean the "tile" variant (likewise gemm's and winograd's keys), and a variant's other
    keys take that variant's defaults."""
    if backend != "numba":
        return {**default_config(problem, backend), **given}
    implied = next((v for v, keys in VARIANT_KEYS.items() if set(keys) & set(given)), None)
    variant = given.get("variant", implied or ("tile" if "threads" in given else
                                               _default_variant(problem)))
    if not isinstance(variant, str):
        variant = "tile"  # Space.validate names the bad value
    return {**_numba_default(problem, variant), **given}


def seed_configs(problem: ConvProblem, backend: str) -> list[Config]:
    """Configs the tuner measures right after the default: each CPU variant's default."""
    if backend != "numba":
        return []
    return [_numba_default(problem, v) for v in cpu_variants(problem)]


def _numba_default(problem: ConvProblem, variant: str) -> Config:
    """The default config of a CPU variant, every thread: for "tile", the pixel tile that
    computes the fewest wasted slots on the taps' ragged edges; for "gemm" whole products
    in BLAS's threads (the batch merged); for "winograd" F(3, 3) tiles, two product tasks
    and two row bands per worker in row filter order."""
    threads = max(thread_choices(os.cpu_count() or 1))
    config: Config = {"variant": variant}
    for keys in VARIANT_KEYS.values():
        config.update(keys)
    config["threads"] = threads
    if variant == "tile":
        widths = [t[5] - t[4] for t in problem.valid_taps] or [problem.ow]
        block_ow = min((4, 3, 5), key=lambda b: sum(-(-w // b) * b for w in widths))
        cout_g = problem.cout // problem.groups
        block_co = 5 if cout_g % 4 and cout_g % 5 == 0 and block_ow < 5 else 4
        config.update(BLOCK_CO=block_co, BLOCK_OW=block_ow)
    return config


def _default_variant(problem: ConvProblem) -> str:
    """Winograd where it needs well under the direct taps' products, else one BLAS GEMM per
    tap where that applies, else the register tiles."""
    # Winograd reads whole pixels, so NCHW is transposed in and out; past about 64 MiB of
    # input that costs more than Winograd saves (measured: 2048x65x65 at batch 4).
    transposed = problem.layout == "NCHW" and problem.n * problem.cin * problem.h * \
        problem.w > WINOGRAD_NCHW_ELEMENTS
    if winograd_supported(problem) and not transposed:
        from atrous.kernels.conv.winograd_cpu import saving  # imports Numba: only when used

        if saving(problem.h, problem.w, problem.dilation[0]) < WINOGRAD_DEFAULT_GAIN:
            return "winograd"
    return "gemm" if gemm_supported(problem) else "tile"


#: The most shared memory per block of any GPU the compile check knows (sm_90, 227 KiB): a
#: config past it launches nowhere, so every conv Space leaves it out, target or not.
_MOST_SHARED = 227 * 1024


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def triton_space(problem: ConvProblem, target: str | None = None,
                 resources: bool = True) -> Space:
    """Triton: an implicit GEMM tile of BLOCK_M output pixels x BLOCK_N output channels,
    reducing BLOCK_K input channels a step in a ``num_stages`` software pipeline; SPLIT_K
    programs share each tap's channel blocks; GROUP_M > 1 orders the programs in groups of
    GROUP_M pixel tiles (all channel tiles of a group before the next: L2 reuse).

    What GPU autotuners search (blocks 32-256, BLOCK_K 16-128 (IEEE float32, on FMA units:
    16-64), 2-8 warps, 2-5 stages, split-K 1-8), pruned to what makes sense:
    - a block is at most the problem's size rounded up to a power of two (no tile of mostly
      masked lanes: BLOCK_M 32 covers a 1x1 map, BLOCK_N 32 eight output channels);
    - 16-128 float32 accumulator values per thread (fewer idles the warps, more spills);
    - SPLIT_K at most the input-channel blocks, and > 1 only with at least four of them;
    - GROUP_M 8 only where there are more than 8 pixel tiles and two channel tiles;
    - shared memory (:func:`triton_shared_bytes`) within the largest known limit (227 KiB,
      sm_90) always, and with ``resources`` within the per-block limit of ``target``
      ("sm_80"; None: the GPU present, none without one): TF32 128 x 128 x 64 tiles in 3
      stages need 128 KiB, more than sm_86 / sm_89 have.
    """
    from atrous.gpucheck.targets import resource_constraints

    wide = problem.dtype != "float32" or problem.allow_tf32
    cin_g, cout_g = problem.cin // problem.groups, problem.cout // problem.groups
    m = problem.n * problem.oh * problem.ow
    top_m, top_n, top_k = _pow2_at_least(m), _pow2_at_least(cout_g), _pow2_at_least(cin_g)
    params = {"BLOCK_M": tuple(b for b in (32, 64, 128, 256) if b <= max(32, top_m)),
              "BLOCK_N": tuple(b for b in (32, 64, 128, 256) if b <= max(32, top_n)),
              "BLOCK_K": tuple(b for b in ((16, 32, 64, 128) if wide else (16, 32, 64))
                               if b <= max(16, top_k)),
              "SPLIT_K": (1, 2, 4, 8), "num_warps": (2, 4, 8), "num_stages": (2, 3, 4, 5),
              "GROUP_M": (1, 8)}

    def shape_ok(c: Config) -> bool:
        per_thread = c["BLOCK_M"] * c["BLOCK_N"] // (32 * c["num_warps"])
        kblocks = -(-cin_g // c["BLOCK_K"])
        return (16 <= per_thread <= 128
                and (c["SPLIT_K"] == 1 or kblocks >= max(4, c["SPLIT_K"]))
                and (c["GROUP_M"] == 1 or (m > 8 * c["BLOCK_M"] and cout_g > c["BLOCK_N"]))
                and triton_shared_bytes(problem, c, 90) <= _MOST_SHARED)

    shape_ok.__doc__ = ("16-128 accumulator values per thread, SPLIT_K <= input-channel blocks"
                        " (>= 4), GROUP_M 8 only over > 8 pixel tiles and > 1 channel tile,"
                        " shared memory <= 227 KiB")
    extra = resource_constraints(lambda c, cap: triton_shared_bytes(problem, c, cap),
                                 target) if resources else ()
    return Space(params, (shape_ok, *extra))


def triton_shared_bytes(problem: ConvProblem, config: Config, capability: int) -> int:
    """An upper bound of the Triton conv kernel's shared memory per block on a GPU of
    ``capability`` (80, 90): the pipelined A and B tiles, ``num_stages - 1`` buffers before
    sm_90 and ``num_stages`` on sm_90 (wgmma reads its operands from shared memory), in the
    operands' dtype (float32 for TF32), or the float32 output tile the NCHW epilogue
    transposes through shared memory if larger. The compile check asserts it bounds what
    Triton allocates for every config."""
    size = ITEMSIZE[problem.dtype]
    buffers = config["num_stages"] - (1 if capability < 90 else 0)
    tiles = buffers * (config["BLOCK_M"] + config["BLOCK_N"]) * config["BLOCK_K"] * size
    return max(tiles, config["BLOCK_M"] * config["BLOCK_N"] * 4)


def space(problem: ConvProblem, backend: str) -> Space:
    """The tunable configs of ``backend`` for ``problem`` (the reference has one, empty)."""
    return {"numba": numba_space, "triton": triton_space}.get(backend, lambda p: Space({}))(problem)


def default_config(problem: ConvProblem, backend: str) -> Config:
    """A heuristic config that is good without tuning."""
    if backend == "numba":
        return _numba_default(problem, _default_variant(problem))
    if backend == "triton":
        # Tuned by hand for an H100 (132 SMs): 128 x 128 tiles when they give two waves, else
        # 64 x 128 (64 x 64 for narrow groups); split-K 4 when that still leaves under 100
        # tiles and K is long (batch-1 ASPP: 36 tiles of a 1089 x 256 x 18432 GEMM).
        cout_g = problem.cout // problem.groups
        m = problem.n * problem.oh * problem.ow

        def tiles(bm: int, bn: int) -> int:
            return -(-m // bm) * problem.groups * -(-cout_g // bn)

        # The compile check (triton 3.9, sm_80 and sm_90) keeps every default spill-free:
        # IEEE float32 (FMA units) takes 64 x 64 x 16 (64 x 128 x 32 spilled ~1 KB a thread
        # on sm_80, 64 x 128 x 16 8 B on sm_90); TF32 and 16-bit NCHW take BLOCK_K 32 (64
        # spilled 8-424 B); only 16-bit NHWC keeps BLOCK_K 64.
        wide = problem.dtype != "float32" or problem.allow_tf32
        nchw = problem.layout == "NCHW"
        if wide:
            # Triton 3.6 spilled 160-408 B on NCHW 128 x 128 (8 warps, sm_90): NCHW stays
            # at 64 x 128 on 8 warps (127-247 registers, none spilled, 3.6 and 3.9).
            big = tiles(128, 128) >= 264 and not nchw
            bm, bn = (128, 128) if big else (64, 128 if cout_g > 64 else 64)
        else:
            bm, bn = 64, 64
        # No block past the problem (the Space's rule): a 1 x 1 map (the pooling branch) takes
        # BLOCK_M 32, which also ends a 16 B stack frame of float32 64 x 64 tiles on sm_90.
        cin_g = problem.cin // problem.groups
        bm = min(bm, max(32, _pow2_at_least(m)))
        bn = min(bn, max(32, _pow2_at_least(cout_g)))
        long_k = problem.dtype != "float32" and problem.layout == "NHWC"
        bk = min((64 if long_k else 32) if wide else 16, max(16, _pow2_at_least(cin_g)))
        k_steps = problem.kh * problem.kw * -(-cin_g // 64)
        split = 4 if tiles(bm, bn) < 100 and k_steps >= 32 and -(-cin_g // bk) >= 4 else 1
        warps = 8 if bm * bn >= 16384 else 4 if bm * bn >= 2048 else 2
        if wide and nchw and bm * bn >= 8192:
            # Triton 3.6 (the GPU image's): 64 x 128 x 32 on 4 warps spills 8-40 B (TF32 on
            # sm_80 / sm_90, 16-bit on sm_80); on 8 warps 166-249 registers, none spilled.
            warps = 8
        if not wide and not nchw and bm * bn >= 4096:
            # Triton 3.6, sm_90: float32 NHWC 64 x 64 x 16 on 4 warps spilled 8 B; on 8
            # warps none (107-148 registers under 3.6 and 3.9). NCHW keeps 4 warps: on 8,
            # ptxas caps it at 128 registers and 3.9 spills 24 B on sm_90 (3.6 spills 16 B
            # on 4 warps there: tests/test_compile_check.py OLD_TRITON_SPILLS).
            warps = 8
        return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split,
                "num_warps": warps, "num_stages": 3, "GROUP_M": 1}
    return {}


def executed_flops(problem: ConvProblem, config: Config | None = None,
                   backend: str = "numba") -> int:
    """FLOPs (2 x multiply-adds) that ``config`` actually executes on ``problem``, for the
    roofline: ``problem.flops`` is the dense-equivalent work (every tap of the window),
    which Winograd and padding skipping beat, so a rate on it is an *effective* rate.

    - "tile" and "gemm" (and the Triton kernel, which skips padded taps too): the taps
      whose input lies inside the image, ``problem.valid_flops``.
    - "winograd": the multiplies of its GEMMs, one (Cin x Cout) product per pair of row
      and column components of its tilings, per image. The transforms' additions (a few
      per input and output element, against Cin or Cout products each) are not counted.
    - other backends (the NumPy reference): the dense work.
    """
    if backend == "triton":
        return problem.valid_flops
    if backend != "numba":
        return problem.flops
    variant = (config or {}).get("variant", "tile")
    if variant == "winograd" and winograd_supported(problem):
        from atrous.kernels.conv.winograd_cpu import plan  # imports Numba: only when used

        ay, ax = plan(problem.h, problem.w, problem.dilation[0])
        return 2 * problem.n * ay.products * ax.products * problem.cin * problem.cout
    return problem.valid_flops
