"""Compile one planned launch for a named GPU target, ahead of time, without a GPU.

The launch's runtime arguments go through Triton's own binder (the code ``kernel[grid](...)``
runs: argument types, integer specialisation to 1 and divisibility by 16, pointer alignment)
for a backend made for the target, then ``triton.compile`` builds TTGIR, PTX and a cubin.
Registers and local memory (where spills go: cuobjdump's STACK, the ptxas stack frame, plus
LOCAL) are read from the cubin with the ``cuobjdump`` Triton ships: what
``CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES`` gives on a device and Triton reports as
``n_spills * 4``. Shared memory is Triton's ``metadata.shared``, the dynamic shared memory
a launch requests.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from atrous.gpucheck.targets import Target
from atrous.kernels.launch_plan import Launch

_RES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")


@dataclass(frozen=True)
class Compiled:
    """What one compile produced: resources per thread / block and tensor-core use."""

    registers: int
    local_bytes: int  # local memory per thread (stack frame + local): spills, in practice
    shared_bytes: int  # dynamic shared memory per block (Triton's metadata.shared)
    seconds: float  # wall time of the compile (0.0-ish when Triton's cache had it)
    mma: int  # mma.sync / mma instructions in the PTX
    wgmma: int  # wgmma instructions in the PTX (sm_90)

    @property
    def spills(self) -> bool:
        """Whether registers spill to local memory."""
        return self.local_bytes > 0

    @property
    def tensor_cores(self) -> bool:
        """Whether the PTX has tensor-core matrix instructions."""
        return self.mma + self.wgmma > 0


def tool(name: str) -> str | None:
    """Path of an NVIDIA tool Triton ships ("ptxas", "cuobjdump"), or None when missing."""
    from triton import knobs

    try:
        path = getattr(knobs.nvidia, name.replace("-", "_")).path
    except (AttributeError, RuntimeError, FileNotFoundError):
        return None
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def key(launch: Launch, tgt: Target) -> tuple:
    """What decides the compiled code: kernel, target, Triton's signature, attributes,
    constexprs and options. Two launches with one key compile once."""
    _, signature, constexprs, attrs = _bind(launch, tgt)
    return (launch.name, tgt.capability, tuple(signature.items()),
            tuple(sorted((k, repr(v)) for k, v in attrs.items())),
            tuple(sorted((k, repr(v)) for k, v in constexprs.items())),
            tuple(sorted(launch.options.items())))


def _backend(tgt: Target) -> Any:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    gpu = GPUTarget("cuda", tgt.capability, 32)
    return gpu, make_backend(gpu)


_JIT: dict[Any, Any] = {}


def _jit(kernel: Any) -> Any:
    """The JITFunction of ``kernel``; under TRITON_INTERPRET=1 ``triton.jit`` made an
    interpreted function instead, so one is built from its Python function (enough for
    kernels that call no other jitted function: the CLI runs the check without the
    interpreter)."""
    if hasattr(kernel, "signature"):
        return kernel
    if kernel not in _JIT:
        from triton.runtime.jit import JITFunction

        _JIT[kernel] = JITFunction(kernel.fn)
    return _JIT[kernel]


def _bind(launch: Launch, tgt: Target) -> tuple[Any, dict, dict, dict]:
    """Triton's (options, signature, constexprs, attrs) for ``launch`` on ``tgt``."""
    from triton.runtime.jit import create_function_from_signature

    fn = _jit(launch.kernel)
    _, backend = _backend(tgt)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = {**launch.constexprs, **launch.options}
    bound, specialization, options = binder(*launch.args, **kwargs)
    return fn._pack_args(backend, kwargs, bound, specialization, options)


def compile_launch(launch: Launch, tgt: Target) -> Compiled:
    """Compile ``launch`` for ``tgt``; raises what Triton or ptxas raises."""
    import triton

    gpu, _ = _backend(tgt)
    options, signature, constexprs, attrs = _bind(launch, tgt)
    start = time.perf_counter()
    kernel = triton.compile(triton.compiler.ASTSource(_jit(launch.kernel), signature,
                                                      constexprs, attrs),
                            target=gpu, options=options.__dict__)
    seconds = time.perf_counter() - start
    regs, local = resource_usage(kernel.asm["cubin"])
    ptx = kernel.asm["ptx"]
    wgmma = len(re.findall(r"^\s*wgmma\.mma_async", ptx, re.M))
    mma = len(re.findall(r"^\s*mma\.", ptx, re.M))
    return Compiled(regs, local, int(kernel.metadata.shared), seconds, mma, wgmma)


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack + local memory bytes per thread) of the cubin's one
    kernel."""
    cuobjdump = tool("cuobjdump")
    if cuobjdump is None:
        raise RuntimeError("cuobjdump (shipped with Triton's NVIDIA backend) is missing")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        text = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    finally:
        os.unlink(f.name)
    found = _RES.search(text)
    if found is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no resource line: {text[:300]!r}")
    return int(found.group(1)), int(found.group(2)) + int(found.group(4))
