"""Guards against NaN and inf: training stops at the first non-finite metric, naming it.

    finite.check(step, {"loss": loss, "grad_norm": g})   # raises NonFiniteError
    finite.check_rows(first_step, [metrics_of_each_step, ...])
    finite.check_stacked(first_step, {"loss": (S, seeds)}, axes=("seed",))

The loss is checked first, then ``l2_params``, so the message names the cause.

Checkpoints refuse non-finite states on their own (:func:`jaxinfra.checkpoints.save`), so
a run that diverges keeps its last good checkpoint.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["NonFiniteError", "check", "check_rows", "check_stacked"]


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
            check(first_step + i, _order(row), what=what)


#: Metrics checked first: the loss, then the size of the state.
_FIRST = ("loss", "l2_params")


def _order(row: Mapping) -> dict:
    return {**{k: row[k] for k in _FIRST if k in row},
            **{k: v for k, v in row.items() if k not in _FIRST}}


def _expand(row: Mapping, axes: Sequence[str]) -> dict:
    """Scalars named ``metric[seed=1, student=0]`` for metrics with leading ``axes``."""
    out = {}
    for name, value in row.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            out[name] = arr
            continue
        for idx in np.ndindex(*arr.shape):
            labels = [f"{axes[i]}={j}" if i < len(axes) else str(j) for i, j in enumerate(idx)]
            out[f"{name}[{', '.join(labels)}]"] = arr[idx]
    return out


def check_stacked(first_step: int, metrics: Mapping, *, what: str = "training",
                  axes: Sequence[str] = ()) -> None:
    """Raises NonFiniteError at the first step whose metrics hold NaN or inf.

    Args:
      first_step: the step number of ``metrics``' first row (1-based).
      metrics: ``{name: array}`` whose leading axis is the step (stacked steps), each
        entry of shape (S, ...) (host or device arrays).
      what: the run, named in the message ("KGE training (epoch 3)").
      axes: names of the axes after the step axis (``("seed",)`` for vmapped seeds), so
        the message names the seed of a non-finite value.
    """
    host = {k: np.asarray(v) for k, v in metrics.items()}
    if all(np.all(np.isfinite(v)) for v in host.values()
           if np.issubdtype(v.dtype, np.inexact)):
        return
    steps = next(iter(host.values())).shape[0]
    for i in range(steps):
        row = _order({k: v[i] for k, v in host.items()})
        if not all(math.isfinite(float(np.sum(v))) for v in row.values()):
            check(first_step + i, _expand(row, axes), what=what)
