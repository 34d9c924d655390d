"""ASPP parameters: names and shapes, checks, and BatchNorm folding.

torchvision's ``ASPP(in_channels, atrous_rates, out_channels)`` (models/segmentation/
deeplabv3.py) holds, for R rates and C = out_channels:

- ``convs.0``: 1x1 conv (C, Cin, 1, 1) at ``.0``, BatchNorm at ``.1``;
- ``convs.i``, i = 1..R: 3x3 conv (C, Cin, 3, 3), dilation rates[i-1], at ``.0``, BN at ``.1``;
- ``convs.{R+1}``: the pooling branch, AdaptiveAvgPool at ``.0``, 1x1 conv (C, Cin, 1, 1) at
  ``.1``, BN at ``.2``;
- ``project``: 1x1 conv (C, (R+2)*C, 1, 1) at ``.0``, BN at ``.1`` (then ReLU and Dropout).

Other structures (:class:`~atrous.deeplab.structure.AsppStructure`: branches as (kernel
size, rate), convs with a bias and/or BN, an optional pooling branch) use the same scheme.
Folding BatchNorm (running statistics) into a conv gives ``scale = gamma / sqrt(var + eps)``,
``W' = W * scale[:, None, None, None]``, ``b' = (b - mean) * scale + beta`` (b = 0 without a
bias); without BN the conv's own weight and bias (or zero) are used. :func:`prepare_aspp`
does this once, in float64, and returns an :class:`AsppWeights` that every ASPP call reuses.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atrous.core.args import CPU_DTYPES, GPU_DTYPES
from atrous.core.arrays import dtype_name, is_tensor
from atrous.deeplab.structure import BN_KEYS, AsppStructure, Layer, as_structure, check_rates

__all__ = ["BN_KEYS", "AsppStructure", "AsppWeights", "CpuPack", "Layer", "as_structure",
           "check_params", "check_rates", "expected_shapes", "fold_cached", "fold_layer",
           "layers", "param_names", "prepare_aspp"]

Spec = AsppStructure | Sequence[int]


def _structure(spec: Spec | int) -> AsppStructure:
    """A structure from an AsppStructure, torchvision's rates, or (the old spelling) a
    number of rates, which names torchvision's layers whatever the rates are."""
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        return AsppStructure.torchvision((2,) * int(spec))
    return as_structure(spec)


def layers(spec: Spec | int) -> list[Layer]:
    """The ASPP's convs (with their BNs) in order: branches, pooling, projection; for
    torchvision's structure (``spec`` its rates, or their number) 1x1, one 3x3 per rate,
    pooling, projection."""
    return _structure(spec).layers()


def param_names(spec: Spec | int) -> list[str]:
    """Every parameter name of the ASPP but ``num_batches_tracked``, in order; ``spec`` an
    AsppStructure, or torchvision's rates or their number."""
    return _structure(spec).param_names()


def expected_shapes(in_channels: int, channels: int, spec: Spec | int,
                    out_channels: int | None = None) -> dict[str, tuple]:
    """name -> shape of an ASPP with these sizes (``out_channels``: the projection's,
    default ``channels``)."""
    structure = _structure(spec)
    c, co = channels, channels if out_channels is None else out_channels
    width = (structure.n_branches + structure.pooling) * c
    shapes: dict[str, tuple] = {}
    all_layers = structure.layers()
    for i, layer in enumerate(all_layers):
        last = i == len(all_layers) - 1
        o, cin = (co, width) if last else (c, in_channels)
        shapes[f"{layer.conv}.weight"] = (o, cin, layer.k, layer.k)
        if layer.bias:
            shapes[f"{layer.conv}.bias"] = (o,)
        if layer.bn:
            shapes.update({f"{layer.bn}.{k}": (o,) for k in BN_KEYS})
    return shapes


def check_params(params: Mapping[str, Any], spec: Spec | int) -> tuple[int, int]:
    """Check ``params`` holds exactly the ASPP's tensors (``spec``: an AsppStructure, or
    torchvision's rates or their number).

    Returns (in_channels, out_channels). ``num_batches_tracked`` entries are allowed and
    ignored. Raises ValueError naming missing or unexpected keys and wrong shapes.
    """
    return _check_params(params, _structure(spec))[::2]


def _check_params(params: Mapping[str, Any], structure: AsppStructure) -> tuple[int, int, int]:
    """(in_channels, branch channels, out_channels) after the checks of check_params."""
    what = "a torchvision ASPP" if structure.is_torchvision else f"an ASPP of {structure}"
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of ASPP parameter names (state-dict"
                        f" names) to arrays, got {type(params).__name__}")
    first, project = params.get("convs.0.0.weight"), params.get("project.0.weight")
    if first is None or len(first.shape) != 4:
        got = None if first is None else tuple(first.shape)
        raise ValueError(f"params['convs.0.0.weight'] must be the first branch's"
                         f" (C, Cin, k, k) weight, got {got}")
    if project is None or len(project.shape) != 4:
        got = None if project is None else tuple(project.shape)
        raise ValueError(f"params['project.0.weight'] must be the projection's"
                         f" (Cout, width, 1, 1) weight, got {got}")
    channels, in_channels = int(first.shape[0]), int(first.shape[1])
    out_channels = int(project.shape[0])
    shapes = expected_shapes(in_channels, channels, structure, out_channels)
    given = {k for k in params if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(shapes) - given), sorted(given - set(shapes))
    if missing or unexpected:
        n = structure.n_branches
        hint = (f"; rates gives {n - 1} dilated branches (keys convs.1 .. convs.{n - 1}),"
                f" pooling at convs.{n}") if structure.is_torchvision else (
                f"; the structure has {n} spatial branches (keys convs.0 .. convs.{n - 1})"
                + (f", pooling at convs.{n}" if structure.pooling else ", no pooling")
                + (", conv biases" if structure.bias else ", no conv biases")
                + (", BatchNorms" if structure.batch_norm else ", no BatchNorms"))
        raise ValueError(f"params do not match {what}: missing {missing[:6]},"
                         f" unexpected {unexpected[:6]}{hint}")
    for key, shape in shapes.items():
        got = tuple(int(s) for s in params[key].shape)
        if got != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape} (in_channels"
                             f" {in_channels}, channels {channels}, out_channels"
                             f" {out_channels}), got {got}")
    return in_channels, channels, out_channels


@dataclass(frozen=True, eq=False)
class CpuPack:
    """The CPU engine's contiguous NumPy matrices, laid out for ``pixels @ matrix`` GEMMs.

    B spatial branches, each C wide in the concatenation buffer; the projection is Cout wide.
    """

    centre: np.ndarray       # (Cin, B*C): each branch's 1x1 weight or 3x3 centre tap
    taps: tuple[np.ndarray | None, ...]  # per branch (3, 3, Cin, C) taps; None for a 1x1
    branch_bias: np.ndarray  # (B*C,)
    pool: np.ndarray | None       # (Cin, C), None without a pooling branch
    pool_bias: np.ndarray | None  # (C,)
    project: np.ndarray      # (width, Cout): rows follow the concatenation (branches, pooling)
    project_bias: np.ndarray  # (Cout,)
    #: Winograd-transformed filters, filled on first use: branch index -> filter rows -> matrix.
    filters: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True, eq=False)
class AsppWeights:
    """An ASPP's BatchNorm-folded weights, prepared once for one device and dtype.

    ``convs`` and ``biases`` list the folded layers in order (the spatial branches, the
    pooling 1x1 when there is one, the projection 1x1) as OIHW weights and (C,) biases. On
    the CPU they are NumPy views of ``pack``, the layout the fused CPU engine multiplies
    with; on a GPU they are contiguous torch tensors and ``pack`` is None. ``out_channels``
    is the projection's (the output's), ``channels`` each branch's.
    """

    rates: tuple[int, ...]
    in_channels: int
    out_channels: int
    dtype: str
    device: str
    convs: tuple[Any, ...]
    biases: tuple[Any, ...]
    pack: CpuPack | None
    structure: AsppStructure | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        if self.structure is None:  # built as before the structures: torchvision's
            object.__setattr__(self, "structure", AsppStructure.torchvision(self.rates))
        if self.channels is None:
            object.__setattr__(self, "channels", self.out_channels)

    @property
    def n_branches(self) -> int:
        """Spatial branches (the pooling branch is not counted)."""
        return self.structure.n_branches

    def __repr__(self) -> str:
        shape = "" if self.structure.is_torchvision else f", structure={self.structure}"
        return (f"AsppWeights(in_channels={self.in_channels}, out_channels={self.out_channels},"
                f" rates={self.rates}, dtype={self.dtype}, device={self.device!r}{shape})")


def _device_of(params: Mapping[str, Any], device: Any) -> str:
    if device is not None:
        name = str(device)
        if not (name == "cpu" or name.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or a CUDA device, got {device!r}")
        return "cuda:0" if name == "cuda" else name
    first = params["convs.0.0.weight"]
    return str(first.device) if is_tensor(first) and first.device.type == "cuda" else "cpu"


def prepare_aspp(params: Mapping[str, Any], rates: Spec, *, eps: float = 1e-5,
                 dtype: str | None = None, device: Any = None) -> AsppWeights:
    """Fold an ASPP's BatchNorms into its convs, once, for one dtype and device.

    Args:
        params: the ASPP's parameters: a torchvision ASPP state dict (``module.state_dict()``)
            or an ``atrous.torch.ASPP``'s, or any mapping of the same names (see
            :mod:`atrous.deeplab.structure`) to NumPy arrays or torch tensors
            (``num_batches_tracked`` is ignored).
        rates: the atrous rates, one per 3x3 branch of torchvision's structure
            (``atrous_rates``), or an :class:`AsppStructure` for any other structure.
        eps: the BatchNorm epsilon (torchvision's default, 1e-5; Keras's is 1e-3).
        dtype: the dtype to run in; default the weights' dtype. float32/float64 on the CPU
            (and float16, for the Triton interpreter), float16/bfloat16/float32 on a GPU.
        device: "cpu" (NumPy arrays, for NumPy inputs and CPU tensors) or a CUDA device;
            default where the weights are.

    Returns:
        AsppWeights for :func:`atrous.aspp`.
    """
    structure = as_structure(rates)
    cin, c, co = _check_params(params, structure)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    device = _device_of(params, device)
    dtype = dtype or dtype_name(params["convs.0.0.weight"])
    # float16 NumPy weights serve the Triton interpreter on CPU tensors (a debugging mode).
    allowed = (*CPU_DTYPES, "float16") if device == "cpu" else GPU_DTYPES
    if dtype not in allowed:
        raise TypeError(f"dtype must be one of {allowed} on {device}, got {dtype}")
    folded = [fold_layer(params, layer, float(eps), device) for layer in structure.layers()]
    if device == "cpu":
        return _cpu_weights(folded, structure, cin, c, co, dtype)
    import torch

    tdtype = getattr(torch, dtype)
    return AsppWeights(structure.rates, cin, co, dtype, device,
                       tuple(w.to(tdtype).contiguous() for w, _ in folded),
                       tuple(b.to(tdtype).contiguous() for _, b in folded), None,
                       structure, c)


def fold_layer(params: Mapping[str, Any], layer: Layer, eps: float,
               device: str) -> tuple[Any, Any]:
    """(W', b') of one conv (and its BN) in float64: NumPy for the CPU, torch on a GPU."""
    def get(key: str) -> Any:
        a = params[key]
        if device == "cpu":
            return (a.detach().to("cpu").double().numpy() if is_tensor(a)
                    else np.asarray(a, dtype=np.float64))
        import torch

        a = a.detach() if is_tensor(a) else torch.from_numpy(np.asarray(a))
        return a.to(device=device, dtype=torch.float64)

    weight = get(f"{layer.conv}.weight")
    bias = get(f"{layer.conv}.bias") if layer.bias else None
    if layer.bn is None:
        if bias is None:
            bias = np.zeros(weight.shape[0]) if device == "cpu" \
                else weight.new_zeros(weight.shape[0])
        return weight, bias
    gamma, beta, mean, var = (get(f"{layer.bn}.{k}") for k in BN_KEYS)
    scale = gamma / (var + eps) ** 0.5
    if bias is None:  # torchvision's case, computed exactly as before the structures
        return weight * scale[:, None, None, None], beta - mean * scale
    return weight * scale[:, None, None, None], (bias - mean) * scale + beta


def _cpu_weights(folded: list[tuple[np.ndarray, np.ndarray]], structure: AsppStructure,
                 cin: int, c: int, co: int, dtype: str) -> AsppWeights:
    """Pack folded float64 layers into the CPU engine's matrices; OIHW views of them."""
    nb = structure.n_branches
    spatial, (wproj, bproj) = folded[:nb], folded[-1]
    taps = tuple(np.ascontiguousarray(w.transpose(2, 3, 1, 0), dtype=dtype) if k == 3
                 else None for (w, _), (k, _) in zip(spatial, structure.branches, strict=True))
    centre = np.ascontiguousarray(
        np.concatenate([w[:, :, 0, 0].T if t is None else t[1, 1]
                        for (w, _), t in zip(spatial, taps, strict=True)], axis=1), dtype=dtype)
    pool = pool_bias = None
    if structure.pooling:
        wpool, bpool = folded[nb]
        pool = np.ascontiguousarray(wpool[:, :, 0, 0].T, dtype=dtype)
        pool_bias = bpool.astype(dtype)
    pack = CpuPack(
        centre=centre, taps=taps,
        branch_bias=np.concatenate([b for _, b in spatial]).astype(dtype),
        pool=pool, pool_bias=pool_bias,
        project=np.ascontiguousarray(wproj[:, :, 0, 0].T, dtype=dtype),
        project_bias=bproj.astype(dtype))
    convs = tuple(centre[:, b * c:(b + 1) * c].T[:, :, None, None] if t is None
                  else t.transpose(3, 2, 0, 1) for b, t in enumerate(taps))
    biases = tuple(pack.branch_bias[b * c:(b + 1) * c] for b in range(nb))
    if structure.pooling:
        convs, biases = (*convs, pack.pool.T[:, :, None, None]), (*biases, pack.pool_bias)
    convs, biases = (*convs, pack.project.T[:, :, None, None]), (*biases, pack.project_bias)
    return AsppWeights(structure.rates, cin, co, dtype, "cpu", convs, biases, pack,
                       structure, c)


def fold_cached(prepare: Callable[..., Any], params: Mapping[str, Any], rates: Spec,
                **options: Any) -> Any:
    """``prepare(params, rates, **options)`` (:func:`prepare_aspp` or
    ``prepare_deeplab_head``) from the weight cache (``atrous.weight_cache``), so that a
    state dict passed on every call is folded once: keyed by its arrays (tensors by
    version counter, NumPy arrays checked byte for byte) and the options. Folded per call
    when a value is neither an array nor a tensor. ``rates``: torchvision's rates or an
    AsppStructure."""
    from atrous import weight_cache

    names = tuple(params)
    values = [params[k] for k in names]
    if not all(isinstance(v, np.ndarray) or is_tensor(v) for v in values):
        return prepare(params, rates, **options)
    rates = rates if isinstance(rates, AsppStructure) else check_rates(rates)
    snapshot = dict(zip(names, values, strict=True))
    tag = (prepare.__qualname__, names, rates, tuple(sorted(options.items())))
    return weight_cache.lookup(tag, values, lambda: prepare(snapshot, rates, **options),
                               weight_cache.nbytes).value
