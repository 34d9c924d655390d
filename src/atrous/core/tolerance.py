"""One tolerance table by dtype, and the comparison every check uses.

An output passes when its largest absolute error, divided by the largest magnitude of the
float64 reference, is within the dtype's bound, and its NaNs sit exactly where the
reference's do. Normalising by the reference's largest magnitude keeps the bound meaningful
for sums of many terms (a 2048-channel 3x3 convolution adds 18432 products), where
element-wise relative error is dominated by cancellation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: dtype -> largest allowed max|out - ref| / max|ref|.
TOLERANCE = {
    "float64": 1e-12,
    "float32": 2e-5,
    "tf32": 3e-3,
    "float16": 4e-3,
    "bfloat16": 3e-2,
}


@dataclass(frozen=True)
class Comparison:
    """The result of comparing an output with the reference."""

    dtype: str
    max_abs_error: float
    rel_error: float
    nan_mismatch: int
    shape_ok: bool

    @property
    def bound(self) -> float:
        return TOLERANCE[self.dtype]

    @property
    def ok(self) -> bool:
        return self.shape_ok and self.nan_mismatch == 0 and self.rel_error <= self.bound

    def __str__(self) -> str:
        if not self.shape_ok:
            return "shape mismatch"
        verdict = "ok" if self.ok else "FAIL"
        nans = f", {self.nan_mismatch} NaN mismatches" if self.nan_mismatch else ""
        return (
            f"{verdict}: rel error {self.rel_error:.3g} (bound {self.bound:.1g} for {self.dtype}),"
            f" max abs error {self.max_abs_error:.3g}{nans}"
        )


def compare(out: object, ref: np.ndarray, dtype: str) -> Comparison:
    """Compare ``out`` (an array or tensor of any dtype) with the float64 ``ref``."""
    got = _to_float64(out)
    if got.shape != ref.shape:
        return Comparison(dtype, float("inf"), float("inf"), 0, False)
    ref_nan, got_nan = np.isnan(ref), np.isnan(got)
    nan_mismatch = int(np.count_nonzero(ref_nan != got_nan))
    both = ~(ref_nan | got_nan)
    finite = both & np.isfinite(ref)
    inf_mismatch = int(np.count_nonzero(both & ~np.isfinite(ref) & (got != ref)))
    if not finite.any():
        return Comparison(dtype, 0.0, 0.0, nan_mismatch + inf_mismatch, True)
    diff = np.abs(got[finite] - ref[finite])
    max_abs = float(diff.max())
    scale = max(float(np.abs(ref[finite]).max()), np.finfo(np.float64).tiny)
    return Comparison(dtype, max_abs, max_abs / scale, nan_mismatch + inf_mismatch, True)


def _to_float64(out: object) -> np.ndarray:
    if hasattr(out, "detach"):  # a torch tensor, possibly on a GPU or in bfloat16
        return out.detach().to("cpu").double().numpy()
    return np.asarray(out, dtype=np.float64)
