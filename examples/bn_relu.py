"""Write your own kernel: a folded batch norm + ReLU, y = max(x * scale[c] + shift[c], 0)."""
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numba import njit, prange

from atrous.core.op import Arg, Op
from atrous.core.space import Space


@dataclass(frozen=True)
class BnReluProblem:  # one call: validated sizes, dtype and layout, never the data
    n: int
    c: int
    hw: int
    dtype: str
    op, layout = "bn_relu", "NCHW"
    key = property(lambda p: f"bn_relu:{p.dtype}:n{p.n}c{p.c}hw{p.hw}")  # the tuning key
    out_shape = property(lambda p: (p.n, p.c, p.hw))
    input_shapes = property(lambda p: {"x": p.out_shape, "scale": (p.c,), "shift": (p.c,)})
    flops = property(lambda p: 3 * p.n * p.c * p.hw)
    bytes = property(lambda p: 2 * p.n * p.c * p.hw * np.dtype(p.dtype).itemsize)

@njit(parallel=True, cache=True)
def _kernel(x, scale, shift, out, rows):  # x, out: (N*C, HW); `rows` rows a task
    for t in prange((x.shape[0] + rows - 1) // rows):
        for r in range(t * rows, min(t * rows + rows, x.shape[0])):
            v = x[r] * scale[r % scale.size] + shift[r % scale.size]
            out[r] = np.where(v < 0, 0, v)  # NaN stays NaN, as in the reference

def launch(problem, config, out, x, scale, shift):  # the op's "numba" backend
    _kernel(x.reshape(-1, problem.hw), scale, shift, out.reshape(-1, problem.hw), config["ROWS"])

class BnRelu(Op):
    name = "bn_relu"
    arguments = (Arg("x", array=True), Arg("scale", array=True), Arg("shift", array=True))
    backends: ClassVar = {"numba": __name__}  # modules with launch(problem, config, out, *arrays)
    def make_problem(self, shapes, dtypes, **options):
        return BnReluProblem(*shapes["x"], dtypes["x"])
    def reference(self, problem, x, scale, shift):  # float64: defines "correct"
        return np.maximum(x * scale[:, None] + shift[:, None], 0)
    def space(self, problem, backend):  # what `atrous tune` searches
        return Space({"ROWS": (1, 4, 16)} if backend == "numba" else {})
    def cases(self, layout, dtype):  # what `atrous verify` runs every config on
        return [BnReluProblem(2, 3, 5, dtype), BnReluProblem(1, 17, 64, dtype)]

OP = BnRelu()  # atrous.register_op(OP), or name it in an "atrous.ops" entry point
