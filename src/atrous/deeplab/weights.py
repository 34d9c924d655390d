"""ASPP parameters: torchvision's state-dict names and shapes, checks, and BatchNorm folding.

torchvision's ``ASPP(in_channels, atrous_rates, out_channels)`` (models/segmentation/
deeplabv3.py) holds, for R rates and C = out_channels:

- ``convs.0``: 1x1 conv (C, Cin, 1, 1) at ``.0``, BatchNorm at ``.1``;
- ``convs.i``, i = 1..R: 3x3 conv (C, Cin, 3, 3), dilation rates[i-1], at ``.0``, BN at ``.1``;
- ``convs.{R+1}``: the pooling branch, AdaptiveAvgPool at ``.0``, 1x1 conv (C, Cin, 1, 1) at
  ``.1``, BN at ``.2``;
- ``project``: 1x1 conv (C, (R+2)*C, 1, 1) at ``.0``, BN at ``.1`` (then ReLU and Dropout).

No conv has a bias, so folding BatchNorm (eval mode, running statistics) into the conv gives
``scale = gamma / sqrt(var + eps)``, ``W' = W * scale[:, None, None, None]``,
``b' = beta - mean * scale``. :func:`prepare_aspp` does this once, in float64, and returns an
:class:`AsppWeights` that every ASPP call reuses.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous.core.args import CPU_DTYPES, GPU_DTYPES
from atrous.core.arrays import dtype_name, is_tensor

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Layer:
    """One conv + BatchNorm pair: the key prefixes of both, and the conv's kernel size."""

    conv: str
    bn: str
    k: int


def layers(n_rates: int) -> list[Layer]:
    """The ASPP's conv+BN pairs in torchvision order: 1x1, one 3x3 per rate, pooling, project."""
    pool = n_rates + 1
    return ([Layer("convs.0.0", "convs.0.1", 1)]
            + [Layer(f"convs.{i}.0", f"convs.{i}.1", 3) for i in range(1, n_rates + 1)]
            + [Layer(f"convs.{pool}.1", f"convs.{pool}.2", 1), Layer("project.0", "project.1", 1)])


def param_names(n_rates: int) -> list[str]:
    """Every tensor key of a torchvision ASPP state dict but ``num_batches_tracked``, in order."""
    names = []
    for layer in layers(n_rates):
        names.append(f"{layer.conv}.weight")
        names += [f"{layer.bn}.{k}" for k in BN_KEYS]
    return names


def expected_shapes(in_channels: int, out_channels: int, n_rates: int) -> dict[str, tuple]:
    """key -> shape of a torchvision ASPP with these sizes."""
    c = out_channels
    shapes: dict[str, tuple] = {}
    for i, layer in enumerate(layers(n_rates)):
        cin = (n_rates + 2) * c if i == n_rates + 2 else in_channels
        shapes[f"{layer.conv}.weight"] = (c, cin, layer.k, layer.k)
        shapes.update({f"{layer.bn}.{k}": (c,) for k in BN_KEYS})
    return shapes


def check_rates(rates: object) -> tuple[int, ...]:
    """``rates`` as a tuple of positive ints; TypeError/ValueError naming what was given."""
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence):
        raise TypeError(f"rates must be a sequence of ints, got {rates!r}")
    out = []
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, numbers.Integral):
            raise TypeError(f"rates must be a sequence of ints, got {rates!r}")
        if r < 1:
            raise ValueError(f"rates must be >= 1, got {tuple(rates)!r}")
        out.append(int(r))
    return tuple(out)


def check_params(params: Mapping[str, Any], n_rates: int) -> tuple[int, int]:
    """Check ``params`` holds exactly a torchvision ASPP's tensors for ``n_rates`` rates.

    Returns (in_channels, out_channels). ``num_batches_tracked`` entries are allowed and
    ignored. Raises ValueError naming missing or unexpected keys and wrong shapes.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of torchvision ASPP state-dict names to"
                        f" arrays, got {type(params).__name__}")
    first = params.get("convs.0.0.weight")
    if first is None or len(first.shape) != 4:
        got = None if first is None else tuple(first.shape)
        raise ValueError(f"params['convs.0.0.weight'] must be the 1x1 branch's (C, Cin, 1, 1)"
                         f" weight, got {got}")
    out_channels, in_channels = int(first.shape[0]), int(first.shape[1])
    shapes = expected_shapes(in_channels, out_channels, n_rates)
    given = {k for k in params if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(shapes) - given), sorted(given - set(shapes))
    if missing or unexpected:
        hint = (f"; rates gives {n_rates} dilated branches (keys convs.1 .. convs.{n_rates}),"
                f" pooling at convs.{n_rates + 1}")
        raise ValueError(f"params do not match a torchvision ASPP: missing {missing[:6]},"
                         f" unexpected {unexpected[:6]}{hint}")
    for key, shape in shapes.items():
        got = tuple(int(s) for s in params[key].shape)
        if got != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape} (in_channels"
                             f" {in_channels}, out_channels {out_channels}), got {got}")
    return in_channels, out_channels


@dataclass(frozen=True, eq=False)
class CpuPack:
    """The CPU engine's contiguous NumPy matrices, laid out for ``pixels @ matrix`` GEMMs.

    B = 1 + len(rates) spatial branches, each C wide in the concatenation buffer.
    """

    centre: np.ndarray       # (Cin, B*C): the 1x1 branch, then each rate's centre tap
    taps: tuple[np.ndarray, ...]  # per rate (3, 3, Cin, C): tap (ky, kx) as a (Cin, C) matrix
    branch_bias: np.ndarray  # (B*C,)
    pool: np.ndarray         # (Cin, C)
    pool_bias: np.ndarray    # (C,)
    project: np.ndarray      # ((B+1)*C, C): rows follow the concatenation (branches, pooling)
    project_bias: np.ndarray  # (C,)
    #: Winograd-transformed filters, filled on first use: rate index -> filter rows -> matrix.
    filters: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True, eq=False)
class AsppWeights:
    """An ASPP's BatchNorm-folded weights, prepared once for one device and dtype.

    ``convs`` and ``biases`` list the folded layers in torchvision order (1x1, one 3x3 per
    rate, pooling 1x1, projection 1x1) as OIHW weights and (C,) biases. On the CPU they are
    NumPy views of ``pack``, the layout the fused CPU engine multiplies with; on a GPU they
    are contiguous torch tensors and ``pack`` is None.
    """

    rates: tuple[int, ...]
    in_channels: int
    out_channels: int
    dtype: str
    device: str
    convs: tuple[Any, ...]
    biases: tuple[Any, ...]
    pack: CpuPack | None

    @property
    def n_branches(self) -> int:
        """Spatial branches: the 1x1 and one per rate (the pooling branch is not counted)."""
        return 1 + len(self.rates)

    def __repr__(self) -> str:
        return (f"AsppWeights(in_channels={self.in_channels}, out_channels={self.out_channels},"
                f" rates={self.rates}, dtype={self.dtype}, device={self.device!r})")


def _device_of(params: Mapping[str, Any], device: Any) -> str:
    if device is not None:
        name = str(device)
        if not (name == "cpu" or name.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}")
        return "cuda:0" if name == "cuda" else name
    first = params["convs.0.0.weight"]
    return str(first.device) if is_tensor(first) and first.device.type == "cuda" else "cpu"


def prepare_aspp(params: Mapping[str, Any], rates: Sequence[int], *, eps: float = 1e-5,
                 dtype: str | None = None, device: Any = None) -> AsppWeights:
    """Fold an ASPP's BatchNorms into its convs, once, for one dtype and device.

    Args:
        params: a torchvision ASPP state dict (``module.state_dict()``), or any mapping of the
            same names to NumPy arrays or torch tensors (``num_batches_tracked`` is ignored).
        rates: the atrous rates, one per 3x3 branch (torchvision's ``atrous_rates``).
        eps: the BatchNorm epsilon (torchvision's default, 1e-5).
        dtype: the dtype to run in; default the weights' dtype. float32/float64 on the CPU
            (and float16, for the Triton interpreter), float16/bfloat16/float32 on a GPU.
        device: "cpu" (NumPy arrays, for NumPy inputs and CPU tensors) or a CUDA device;
            default where the weights are.

    Returns:
        AsppWeights for :func:`atrous.aspp`.
    """
    rates = check_rates(rates)
    cin, c = check_params(params, len(rates))
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    device = _device_of(params, device)
    dtype = dtype or dtype_name(params["convs.0.0.weight"])
    # float16 NumPy weights serve the Triton interpreter on CPU tensors (a debugging mode).
    allowed = (*CPU_DTYPES, "float16") if device == "cpu" else GPU_DTYPES
    if dtype not in allowed:
        raise TypeError(f"dtype must be one of {allowed} on {device}, got {dtype}")
    folded = [fold_layer(params, layer, float(eps), device) for layer in layers(len(rates))]
    if device == "cpu":
        return _cpu_weights(folded, rates, cin, c, dtype)
    import torch

    tdtype = getattr(torch, dtype)
    return AsppWeights(rates, cin, c, dtype, device,
                       tuple(w.to(tdtype).contiguous() for w, _ in folded),
                       tuple(b.to(tdtype).contiguous() for _, b in folded), None)


def fold_layer(params: Mapping[str, Any], layer: Layer, eps: float,
               device: str) -> tuple[Any, Any]:
    """(W', b') of one conv+BN in float64: NumPy for the CPU, torch on a GPU."""
    def get(key: str) -> Any:
        a = params[key]
        if device == "cpu":
            return (a.detach().to("cpu").double().numpy() if is_tensor(a)
                    else np.asarray(a, dtype=np.float64))
        import torch

        a = a.detach() if is_tensor(a) else torch.from_numpy(np.asarray(a))
        return a.to(device=device, dtype=torch.float64)

    weight = get(f"{layer.conv}.weight")
    gamma, beta, mean, var = (get(f"{layer.bn}.{k}") for k in BN_KEYS)
    scale = gamma / (var + eps) ** 0.5
    return weight * scale[:, None, None, None], beta - mean * scale


def _cpu_weights(folded: list[tuple[np.ndarray, np.ndarray]], rates: tuple[int, ...],
                 cin: int, c: int, dtype: str) -> AsppWeights:
    """Pack folded float64 layers into the CPU engine's matrices; OIHW views of them."""
    r = len(rates)
    (w1, b1), spatial, (wpool, bpool), (wproj, bproj) = folded[0], folded[1:r + 1], \
        folded[r + 1], folded[r + 2]
    taps = tuple(np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=dtype) for w, _ in spatial)
    centre = np.ascontiguousarray(
        np.concatenate([w1[:, :, 0, 0].T] + [t[1, 1] for t in taps], axis=1), dtype=dtype)
    pack = CpuPack(
        centre=centre, taps=taps,
        branch_bias=np.concatenate([b1] + [b for _, b in spatial]).astype(dtype),
        pool=np.ascontiguousarray(wpool[:, :, 0, 0].T, dtype=dtype), pool_bias=bpool.astype(dtype),
        project=np.ascontiguousarray(wproj[:, :, 0, 0].T, dtype=dtype),
        project_bias=bproj.astype(dtype))
    convs = (centre[:, :c].T[:, :, None, None], *(t.transpose(3, 2, 0, 1) for t in taps),
             pack.pool.T[:, :, None, None], pack.project.T[:, :, None, None])
    biases = (*(pack.branch_bias[i * c:(i + 1) * c] for i in range(r + 1)), pack.pool_bias,
              pack.project_bias)
    return AsppWeights(rates, cin, c, dtype, "cpu", convs, biases, pack)


def fold_cached(prepare: Callable[..., Any], params: Mapping[str, Any], rates: Sequence[int],
                **options: Any) -> Any:
    """``prepare(params, rates, **options)`` (:func:`prepare_aspp` or
    ``prepare_deeplab_head``) from the weight cache (``atrous.weight_cache``), so that a
    state dict passed on every call is folded once: keyed by its arrays (tensors by
    version counter, NumPy arrays checked byte for byte) and the options. Folded per call
    when a value is neither an array nor a tensor."""
    from atrous import weight_cache

    names = tuple(params)
    values = [params[k] for k in names]
    if not all(isinstance(v, np.ndarray) or is_tensor(v) for v in values):
        return prepare(params, rates, **options)
    rates = check_rates(rates)
    snapshot = dict(zip(names, values, strict=True))
    tag = (prepare.__qualname__, names, rates, tuple(sorted(options.items())))
    return weight_cache.lookup(tag, values, lambda: prepare(snapshot, rates, **options),
                               weight_cache.nbytes).value
