"""Metrics of a run as JSON lines (``workdir/metrics.jsonl``) and TensorBoard scalars
(``workdir/tb``, written with tensorboardX), one :meth:`MetricsLog.write` per logged step.

With several processes (:mod:`jaxinfra.distributed`) only process 0 writes; on the others a
MetricsLog opens no file and :meth:`MetricsLog.write` only returns the row (the values
are global: every process computes the same numbers).
"""
from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np

__all__ = ["MetricsLog", "truncate"]


class MetricsLog:
    """Appends metrics to ``workdir/metrics.jsonl`` and to TensorBoard under ``workdir/tb``.

    Use as a context manager::

        with MetricsLog(workdir, start_step=step0) as log:
            log.write(step, {"loss": 0.3, "lr": 1e-3})            # train/loss, train/lr
            log.write(step, {"accuracy": 0.9}, prefix="eval")

    Each ``write`` is one JSON line ``{"step": step, "<prefix>/<name>": value, ...}`` (plain
    names when ``prefix`` is empty). Values must be scalars (Python or 0-d arrays).
    A trainer passes ``start_step``, the step it resumes from (0 for a fresh start): the
    JSON lines and TensorBoard events logged after it are dropped, so a run resumed from
    an older checkpoint (after a crash, or a corrupt newer one) logs those steps again,
    never twice. ``None`` (jobs without steps to resume) only appends. On processes other
    than 0 (:func:`jaxinfra.distributed.is_main_process`) nothing is written.
    """

    def __init__(self, workdir: str, *, start_step: int | None = None,
                 tensorboard: bool = True):
        from jaxinfra import distributed
        self._file = self._writer = None
        if not distributed.is_main_process():
            return
        os.makedirs(workdir, exist_ok=True)
        if start_step is not None:
            truncate(workdir, start_step)
        self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(os.path.join(workdir, "tb"),
                                         purge_step=start_step or None)

    def write(self, step: int, metrics: dict, prefix: str = "train") -> dict:
        """Logs ``metrics`` at ``step``; returns the row written (floats, prefixed names)."""
        row = {"step": int(step)}
        for name, value in metrics.items():
            value = np.asarray(value)
            if value.size != 1:
                raise ValueError(f"metric {name!r} must be a scalar, got shape {value.shape}")
            value = value.item()
            if not isinstance(value, numbers.Number):
                raise ValueError(f"metric {name!r} must be a number, got {value!r}")
            row[f"{prefix}/{name}" if prefix else name] = value
        if self._file is None:                       # not process 0
            return row
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in row.items():
                if name != "step" and math.isfinite(value):
                    self._writer.add_scalar(name, value, int(step))
        return row

    def image(self, step: int, name: str, image) -> None:
        """Adds an (H, W, C) uint8 image to TensorBoard."""
        if self._writer is not None:
            self._writer.add_image(name, np.asarray(image), int(step), dataformats="HWC")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def truncate(workdir: str, step: int) -> int:
    """Drops the rows of ``workdir/metrics.jsonl`` logged after ``step`` (and lines cut by
    a crash). Returns the number dropped."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row_step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                row_step = None
            if row_step is not None and row_step <= int(step):
                keep.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return dropped
