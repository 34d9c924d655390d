"""separable_conv2d: arguments -> SepConvProblem, costs, tuning key, config spaces.

DeepLabV3+'s depthwise-separable atrous convolution: a depthwise k x k dilated convolution
(one filter per channel, ``groups == C``, no bias) followed by a 1x1 pointwise convolution
from C to Cout channels with an optional bias and an optional fused ReLU. Batch norms of a
trained model fold into the pointwise weights and bias (the depthwise one into the
pointwise weights), so this is the whole block at inference time.

Everything both backends share lives here: argument checks, the output size, the valid
output rectangle of each tap (the dilated taps that land in the zero padding are skipped,
as the built-in convolution does), FLOP and byte counts, and the tuning key.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from functools import cached_property

from atrous.core.args import cores, thread_choices
from atrous.core.space import Config, Space

OP = "separable_conv2d"
#: The arrays of a call, in call order (bias may be None).
INPUTS = ("x", "dw_weight", "pw_weight", "bias")
LAYOUTS = ("NCHW", "NHWC")
DTYPES = ("float16", "bfloat16", "float32", "float64")
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
ACTIVATIONS = (None, "relu")


def _pair(name: str, value: object, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints as a pair, each at least ``minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif (isinstance(value, tuple | list) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair


def _shape(name: str, shape: object, ndim: int) -> tuple[int, ...]:
    """``shape`` as a tuple of ``ndim`` positive ints; ValueError naming ``name``."""
    try:
        dims = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must have a shape (a sequence of ints), got {shape!r}") from None
    if len(dims) != ndim or any(isinstance(d, bool) or not isinstance(d, numbers.Integral)
                                or d < 1 for d in dims):
        raise ValueError(f"{name} must have {ndim} positive sizes, got shape {dims}")
    return tuple(int(d) for d in dims)


@dataclass(frozen=True)
class SepConvProblem:
    """One depthwise-separable convolution: sizes, parameters, dtype and layout.

    ``padding`` is (top, bottom, left, right); ``k`` the depthwise kernel's size.
    """

    n: int
    c: int
    h: int
    w: int
    cout: int
    k: int
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    has_bias: bool
    activation: str | None
    dtype: str
    layout: str

    op = OP

    def __post_init__(self) -> None:
        # A Problem read back from a --shapes file or a database is as checked as one built
        # by make_problem: the kernels index memory with these numbers.
        for name in ("n", "c", "h", "w", "cout", "k"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"SepConvProblem.{name} must be a positive int, got {value!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"SepConvProblem.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"SepConvProblem.layout must be one of {LAYOUTS},"
                             f" got {self.layout!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SepConvProblem.activation must be None or 'relu',"
                             f" got {self.activation!r}")
        if self.oh < 1 or self.ow < 1:
            raise ValueError(f"the output would be empty: input {self.h}x{self.w}, kernel"
                             f" {self.k}, dilation {self.dilation}, padding {self.padding}")

    # ----------------------------------------------------------------- shapes

    @property
    def oh(self) -> int:
        pt, pb = self.padding[0], self.padding[1]
        return (self.h + pt + pb - self.dilation[0] * (self.k - 1) - 1) // self.stride[0] + 1

    @property
    def ow(self) -> int:
        pl, pr = self.padding[2], self.padding[3]
        return (self.w + pl + pr - self.dilation[1] * (self.k - 1) - 1) // self.stride[1] + 1

    def image(self, c: int, h: int, w: int) -> tuple[int, int, int, int]:
        """A 4-D shape of this batch in this problem's layout."""
        return (self.n, c, h, w) if self.layout == "NCHW" else (self.n, h, w, c)

    @property
    def in_shape(self) -> tuple[int, int, int, int]:
        return self.image(self.c, self.h, self.w)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return self.image(self.cout, self.oh, self.ow)

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...] | None]:
        """Each input's shape (None: the input is absent), in call order."""
        return {"x": self.in_shape, "dw_weight": (self.c, 1, self.k, self.k),
                "pw_weight": (self.cout, self.c, 1, 1),
                "bias": (self.cout,) if self.has_bias else None}

    # ----------------------------------------------------------------- work

    @cached_property
    def valid_taps(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """For each tap (ky, kx) whose input lands inside the image for some output pixel:
        ``(ky, kx, oy_lo, oy_hi, ox_lo, ox_hi)``, the half-open rectangle of those pixels.
        Taps wholly in the padding are left out."""
        def span(kk: int, d: int, s: int, pad: int, size: int, out: int) -> tuple[int, int]:
            # Output o reads input o*s + kk*d - pad, which must lie in [0, size).
            lo = max(0, -((kk * d - pad) // s))
            hi = min(out, (size - 1 - kk * d + pad) // s + 1)  # floor division: <= 0 if none
            return lo, max(lo, hi)

        taps = []
        for ky in range(self.k):
            ylo, yhi = span(ky, self.dilation[0], self.stride[0], self.padding[0], self.h,
                            self.oh)
            for kx in range(self.k):
                xlo, xhi = span(kx, self.dilation[1], self.stride[1], self.padding[2], self.w,
                                self.ow)
                if ylo < yhi and xlo < xhi:
                    taps.append((ky, kx, ylo, yhi, xlo, xhi))
        return tuple(taps)

    @property
    def flops(self) -> int:
        """Nominal FLOPs: every depthwise tap (padding included) and the pointwise GEMM."""
        pixels = self.n * self.oh * self.ow
        return 2 * pixels * self.c * (self.k * self.k + self.cout)

    @property
    def executed_flops(self) -> int:
        """FLOPs of the work done: taps in the padding skipped."""
        taps = sum((yhi - ylo) * (xhi - xlo) for _, _, ylo, yhi, xlo, xhi in self.valid_taps)
        return 2 * self.n * self.c * taps + 2 * self.n * self.oh * self.ow * self.c * self.cout

    @property
    def bytes(self) -> int:
        """Fewest bytes moved: input, both weights and bias read once, output written once."""
        elements = (self.n * self.c * self.h * self.w + self.c * self.k * self.k
                    + self.cout * self.c + self.cout * self.has_bias
                    + self.n * self.cout * self.oh * self.ow)
        return elements * ITEMSIZE[self.dtype]

    @property
    def key(self) -> str:
        """The tuning key: everything that can change the best config."""
        return (f"{OP}:{self.layout}:{self.dtype}:n{self.n}c{self.c}h{self.h}w{self.w}"
                f"o{self.cout}k{self.k}:s{self.stride[0]}x{self.stride[1]}"
                f":p{'x'.join(map(str, self.padding))}:d{self.dilation[0]}x{self.dilation[1]}"
                f":b{int(self.has_bias)}:{self.activation or 'linear'}")


def make_problem(x_shape: object, dw_shape: object, pw_shape: object,
                 bias_shape: object | None, dtype: str, *, stride: object = 1,
                 padding: object = "same", dilation: object = 1,
                 activation: str | None = None, layout: str = "NCHW") -> SepConvProblem:
    """Validate the arguments of ``separable_conv2d`` and return its Problem.

    Args:
        x_shape: the input's shape, (N, C, H, W) or (N, H, W, C) as ``layout`` says.
        dw_shape: the depthwise weight's shape, (C, 1, k, k).
        pw_shape: the pointwise weight's shape, (Cout, C, 1, 1).
        bias_shape: (Cout,), or None without a bias.
        dtype: the arrays' dtype name ("float32", ...).
        stride: int or pair.
        padding: int, pair, (top, bottom, left, right), "same" (stride 1) or "valid".
        dilation: int or pair: the atrous rate of the depthwise convolution.
        activation: None or "relu" (after the bias).
        layout: "NCHW" or "NHWC" (the output has the input's layout).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if dtype not in DTYPES:
        raise TypeError(f"x must be a floating array ({'/'.join(DTYPES)}), got {dtype}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    xs = _shape("x", x_shape, 4)
    n, c, h, w = xs if layout == "NCHW" else (xs[0], xs[3], xs[1], xs[2])
    dws = _shape("dw_weight", dw_shape, 4)
    if dws[0] != c or dws[1] != 1 or dws[2] != dws[3]:
        raise ValueError(f"dw_weight must have shape (C, 1, k, k) = ({c}, 1, k, k) for x of"
                         f" shape {xs} ({layout}), got {dws}")
    pws = _shape("pw_weight", pw_shape, 4)
    if pws[1:] != (c, 1, 1):
        raise ValueError(f"pw_weight must have shape (Cout, {c}, 1, 1), got {pws}")
    cout, k = pws[0], dws[2]
    if bias_shape is not None and _shape("bias", bias_shape, 1) != (cout,):
        raise ValueError(f"bias must have shape ({cout},), got {tuple(bias_shape)}")  # type: ignore[arg-type]
    stride_p = _pair("stride", stride, 1)
    dilation_p = _pair("dilation", dilation, 1)
    if padding == "same":
        if stride_p != (1, 1):
            raise ValueError(f"padding='same' needs stride 1, got stride {stride!r}")
        th, tw = dilation_p[0] * (k - 1), dilation_p[1] * (k - 1)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    elif padding == "valid":
        pads = (0, 0, 0, 0)
    elif isinstance(padding, tuple | list) and len(padding) == 4:
        if any(isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0
               for p in padding):
            raise ValueError(f"padding must hold non-negative ints, got {padding!r}")
        pads = tuple(int(p) for p in padding)  # type: ignore[assignment]
    else:
        ph, pw = _pair("padding", padding, 0)
        pads = (ph, ph, pw, pw)
    return SepConvProblem(n, c, h, w, cout, k, stride_p, pads, dilation_p,  # type: ignore[arg-type]
                          bias_shape is not None, activation, dtype, layout)


# --------------------------------------------------------------------------- configs


def numba_space(problem: SepConvProblem) -> Space:
    """Numba: PW, the pointwise step: "tile" fuses it into the row task as register tiles
    (BLOCK_OW pixels x BLOCK_CO output channels, baked into the generated source) walked in
    loop ORDER; "blas" runs every depthwise row first, then one BLAS product. And the
    thread count. 6 tile kernels a dtype: each takes ~3 s to compile once (then Numba's
    disk cache serves it)."""
    return Space({"PW": ("tile", "blas"), "BLOCK_OW": (2, 4), "BLOCK_CO": (4, 8),
                  "ORDER": ("co_outer", "ox_outer"), "threads": thread_choices(cores())},
                 ("BLOCK_OW * BLOCK_CO <= 16",  # 32 accumulators spill on AVX2
                  # "blas" has no tile: one config per thread count, not eight alike
                  "PW == 'tile' or (BLOCK_OW == 4 and BLOCK_CO == 4 and ORDER == 'co_outer')"))


def triton_space(problem: SepConvProblem) -> Space:
    """Triton: pixel x output-channel tiles, the input-channel slice of the fused depthwise
    step, warps and pipeline stages (tl.dot needs every block dimension >= 16)."""
    return Space({"BLOCK_M": (32, 64, 128), "BLOCK_N": (32, 64, 128), "BLOCK_K": (16, 32),
                  "num_warps": (4, 8), "num_stages": (2, 3)},
                 ("BLOCK_M * BLOCK_N <= 8192", "num_warps == 4 or BLOCK_M * BLOCK_N >= 4096"))


def space(problem: SepConvProblem, backend: str) -> Space:
    """The tunable configs of ``backend`` for ``problem`` (the reference has one, empty)."""
    if backend == "numba":
        return numba_space(problem)
    if backend == "triton":
        return triton_space(problem)
    return Space({})


def default_config(problem: SepConvProblem, backend: str) -> Config:
    """A config that is good without tuning: a 4 x 4 tile with weight rows held across
    pixel tiles on every core (the fastest or within 5% of it on three of the four
    DeepLabV3+ suite shapes/layouts on a 2-core Zen 4 VM), one thread for tiny problems;
    on the GPU 64 x 64 tiles."""
    if backend == "numba":
        # Below ~4 MFLOP a parallel region costs more than it saves.
        threads = 1 if problem.flops < 1 << 22 else cores()
        return {"PW": "tile", "BLOCK_OW": 4, "BLOCK_CO": 4, "ORDER": "co_outer",
                "threads": threads}
    if backend == "triton":
        return {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "num_warps": 4, "num_stages": 2}
    return {}
