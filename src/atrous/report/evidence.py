"""Whether atrous's convolution is faster than PyTorch's for a given convolution on this
machine, from stored benchmark rows only (never by timing): what ``atrous.torch.convert``
asks about the ``nn.Conv2d`` it does not swap unconditionally.

``atrous bench`` stores its rows beside the tuning database (``<db>.bench.json``): per
problem and machine, the plain call a user writes (implementation ``atrous-<backend>-plain``,
what a converted module runs) and PyTorch's (``torch``). A conv is matched to the stored
problems with its parameters (channels, kernel, stride, dilation, padding, groups, bias,
dtype) at any batch, map size and layout; the verdict is "faster" only when atrous's plain
call beat PyTorch on every such problem (the latest row of each implementation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# dilated_conv2d:<layout>:<dtype>[:tf32]:n..c..h..w..:o<cout>k<kh>x<kw>:s..:d..:p..:g..:b.:<act>
_KEY = re.compile(r"^dilated_conv2d:(?P<layout>NCHW|NHWC):(?P<dtype>\w+)(?::tf32)?"
                  r":n\d+c(?P<cin>\d+)h\d+w\d+:(?P<rest>o\d+k\d+x\d+:s\d+x\d+:d\d+x\d+"
                  r":p\d+\.\d+\.\d+\.\d+:g\d+:b[01]):none$")


@dataclass(frozen=True)
class Verdict:
    """``faster``: swap the conv; ``detail``: the evidence, in words."""

    faster: bool
    detail: str


def signature(in_channels: int, out_channels: int, kernel_size: Sequence[int],
              stride: Sequence[int], padding: Sequence[int] | str, dilation: Sequence[int],
              groups: int, bias: bool) -> str:
    """The part of a conv problem key that a conv module fixes (not the input's size):
    ``nn.Conv2d``'s arguments, padding a pair, "same" or "valid"."""
    kh, kw = kernel_size
    dh, dw = dilation
    if padding == "valid":
        pad = (0, 0, 0, 0)
    elif padding == "same":
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pad = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    else:
        ph, pw = padding
        pad = (ph, ph, pw, pw)
    return (f"c{in_channels}:o{out_channels}k{kh}x{kw}:s{stride[0]}x{stride[1]}:d{dh}x{dw}"
            f":p{pad[0]}.{pad[1]}.{pad[2]}.{pad[3]}:g{groups}:b{int(bias)}")


class Evidence:
    """The stored rows of one machine and backend, indexed by conv signature and dtype."""

    def __init__(self, tuning: Path | None, backend: str, device: str) -> None:
        self.backend, self.why = backend, ""
        self.pairs: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
        if tuning is None:
            self.why = "tuning is off (atrous.use_tuning(False)), so no stored timings"
            return
        from atrous.autotune.hardware import fingerprint
        from atrous.report.store import bench_path, read_rows

        path = bench_path(tuning)
        if not path.exists():
            self.why = f"no stored benchmark rows ({path})"
            return
        machine = fingerprint(backend, device)["id"]
        plain = f"atrous-{backend}-plain"
        latest: dict[tuple[str, str], tuple[str, float]] = {}
        for row in read_rows(path):
            if row.fingerprint != machine or row.op != "dilated_conv2d" or not row.median_ms \
                    or row.implementation not in (plain, "torch"):
                continue
            held = latest.get((row.problem_key, row.implementation))
            if held is None or row.timestamp >= held[0]:
                latest[(row.problem_key, row.implementation)] = (row.timestamp, row.median_ms)
        for (key, impl), (_, ms) in latest.items():
            if impl != plain or (key, "torch") not in latest:
                continue
            m = _KEY.match(key)
            if m is None:
                continue
            sig = f"c{m['cin']}:{m['rest']}"
            self.pairs.setdefault((sig, m["dtype"]), []).append(
                (key, ms, latest[(key, "torch")][1]))
        if not self.pairs:
            self.why = (f"no stored rows timing both atrous-{backend}-plain and torch on this"
                        f" machine ({machine}) in {path}")

    def verdict(self, signature: str, dtype: str) -> Verdict:
        """Whether atrous was faster on every stored problem of the conv of ``signature``
        (:func:`signature`) and ``dtype``."""
        if self.why:
            return Verdict(False, self.why)
        found = self.pairs.get((signature, dtype), [])
        if not found:
            return Verdict(False, "no stored benchmark of this convolution on this machine")
        ratios = [torch_ms / ours for _, ours, torch_ms in found]
        worst = min(ratios)
        words = f"{len(found)} stored problem(s), atrous/torch speedup {worst:.2f}x at worst"
        return Verdict(worst > 1.0, words)
