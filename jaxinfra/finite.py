"""Guards against NaN and inf: training stops at the first non-finite metric, naming it.

    finite.check(step, {"loss": loss, "grad_norm": g})   # raises NonFiniteError

Checkpoints refuse non-finite states on their own (:func:`jaxinfra.checkpoints.save`), so
a run that diverges keeps its last good checkpoint.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["NonFiniteError", "check", "check_rows"]


class NonFiniteError(FloatingPointError):
    """A state or metric holds NaN or inf; nothing was saved."""


def check(step: int, metrics: Mapping, *, what: str = "training") -> None:
    """Raises :class:`NonFiniteError` naming ``step`` and the first non-finite metric."""
    for name, value in metrics.items():
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            shown = arr.item() if arr.size == 1 else "non-finite entries"
            raise NonFiniteError(f"{what} stopped at step {int(step)}: {name} is {shown}; "
                                 "nothing was saved after the last good checkpoint (lower "
                                 "the learning rate or check the data)")


def check_rows(first_step: int, rows: Sequence[Mapping], *, what: str = "training") -> None:
    """:func:`check` on consecutive per-step rows, ``rows[i]`` being step first_step + i."""
    for i, row in enumerate(rows):
        if not all(math.isfinite(float(np.asarray(v).sum())) for v in row.values()):
            check(first_step + i, row, what=what)
