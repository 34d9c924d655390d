"""The device a GPU benchmark runs on: the CUDA GPU, or with ``--tiny`` the CPU under the
Triton interpreter (set before triton is first imported)."""

from __future__ import annotations

import os
import sys


def benchmark_device(tiny: bool) -> str | None:
    """"cuda", or "cpu" with ``TRITON_INTERPRET=1`` when ``tiny``; None (after saying why on
    stderr) when no CUDA GPU is available."""
    if tiny:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    import torch

    device = "cpu" if tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU: run with --tiny (TRITON_INTERPRET=1) on a CPU", file=sys.stderr)
        return None
    return device
