"""Test configuration: which backends run here, and on which device.

Triton runs on a CUDA GPU when there is one; elsewhere its kernels run on the CPU under
TRITON_INTERPRET=1, which must be set before triton is first imported.
"""

from __future__ import annotations

import os


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


CUDA = _cuda_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
