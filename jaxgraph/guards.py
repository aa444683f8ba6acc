"""Checks shared by jaxgraph's trainers (jaxgraph.kge, jaxgraph.train, jaxgraph.oad).

    guards.int_at_least(config, "train.batch_size", 1)     # ValueError before any work
    guards.check_metrics(first_step, metrics, what="KGE training", axes=("seed",))

Config values are checked before data are read or anything is compiled: a bad one is a
ValueError naming the field, the value and the accepted range. Metrics are checked with
:mod:`jaxinfra.finite` (the same wording everywhere): the first non-finite one stops
training with :class:`jaxinfra.finite.NonFiniteError` naming the step and the metric (and,
for vmapped runs, the seed), before anything of that step is saved.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from jaxinfra import finite

__all__ = ["get", "int_at_least", "positive", "one_of", "check_metrics", "NonFiniteError"]

NonFiniteError = finite.NonFiniteError

#: Metrics checked first: the loss, then the size of the state.
_FIRST = ("loss", "l2_params")


def get(config, name: str):
    """``config.a.b`` for ``name = "a.b"``."""
    node = config
    for part in name.split("."):
        node = node[part]
    return node


def int_at_least(config, name: str, minimum: int, *, what: str = "") -> int:
    """``config.<name>`` as an int; ValueError unless it is an integer >= ``minimum``."""
    value = get(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        about = f" ({what})" if what else ""
        raise ValueError(f"config.{name} must be an integer >= {minimum}{about}, got "
                         f"{value!r}")
    return int(value)


def positive(config, name: str) -> float:
    """``config.<name>`` as a float; ValueError when it is <= 0 (NaN passes: training then
    stops at its first step with NonFiniteError, naming it)."""
    value = get(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value <= 0:
        raise ValueError(f"config.{name} must be a number > 0, got {value!r}")
    return float(value)


def one_of(config, name: str, valid: Sequence[str]) -> str:
    value = get(config, name)
    if value not in valid:
        raise ValueError(f"unknown config.{name} {value!r}; valid: {', '.join(valid)}")
    return value


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


def check_metrics(first_step: int, metrics: Mapping, *, what: str = "training",
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
            finite.check(first_step + i, _expand(row, axes), what=what)
