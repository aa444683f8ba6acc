"""Run bookkeeping shared by every training entry point (jaxdiff, jaxkd, jaxgraph).

- :class:`MetricsLog`: metrics as JSON lines (``workdir/metrics.jsonl``) plus TensorBoard
  scalars (``workdir/tb``, tensorboardX), one call per logged step.
- :func:`checkpoint_manager`: a synchronous Orbax ``CheckpointManager`` on
  ``workdir/checkpoints`` (each save is written to a temporary folder and renamed, so an
  interrupted run never leaves a half-written step behind).
- :func:`image_grid` / :func:`save_image_grid`: tiles images into one PNG.
- :func:`quiet_absl_logging`: keeps Orbax's per-save INFO lines out of the console.
"""
from __future__ import annotations

import json
import math
import numbers
import os

import numpy as np

__all__ = ["MetricsLog", "checkpoint_manager", "resume", "image_grid", "save_image_grid",
           "quiet_absl_logging"]


class MetricsLog:
    """Appends metrics to ``workdir/metrics.jsonl`` and to TensorBoard under ``workdir/tb``.

    Use as a context manager::

        with MetricsLog(workdir, start_step=step0) as log:
            log.write(step, {"loss": 0.3, "lr": 1e-3})            # train/loss, train/lr
            log.write(step, {"accuracy": 0.9}, prefix="eval")

    Each ``write`` is one JSON line ``{"step": step, "<prefix>/<name>": value, ...}`` (plain
    names when ``prefix`` is empty). Values must be scalars (Python or 0-d arrays).
    ``start_step`` > 0 (a resumed run) purges TensorBoard events logged after it.
    """

    def __init__(self, workdir: str, *, start_step: int = 0, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
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
        self._file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def checkpoint_manager(workdir: str, *, save_every: int = 0, keep: int | None = None,
                       read_only: bool = False):
    """A synchronous Orbax CheckpointManager on ``workdir/checkpoints``.

    Args:
      workdir: the run folder.
      save_every: ``save_interval_steps`` (0: save whenever asked).
      keep: checkpoints to keep (None: all).
      read_only: open for restoring only (the folder is not created).

    Saves are synchronous because the next jitted step usually donates the saved buffers.
    """
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(save_every), 1), max_to_keep=keep,
        enable_async_checkpointing=False, read_only=read_only, create=not read_only)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=options)


def _plain(tree):
    """JSON round trip: tuples become lists, so saved and fresh metadata compare equal."""
    return json.loads(json.dumps(tree))


def resume(mngr, state, meta, *, key=None, what: str = "run", workdir: str = ""):
    """Restores the latest checkpoint of ``mngr`` into ``state``'s structure.

    Args:
      mngr: a manager from :func:`checkpoint_manager` whose steps hold the Orbax items
        ``state`` (StandardSave) and ``meta`` (JsonSave).
      state: a pytree with the structure, shapes, dtypes and shardings to restore into;
        returned unchanged when there is no checkpoint.
      meta: this run's metadata; ``key(meta)`` must equal ``key(saved meta)``.
      key: what must agree (default: the whole metadata).
      what: named in the error ("model", "translator", ...).
      workdir: named in the error.

    Returns:
      ``(state, start_step)``; start_step is 0 without a checkpoint.

    Raises:
      ValueError: the checkpoint belongs to another run (``mngr`` is closed first).
    """
    import jax
    import orbax.checkpoint as ocp
    step = mngr.latest_step()
    if step is None:
        return state, 0
    key = key or (lambda m: m)
    saved = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if _plain(key(saved)) != _plain(key(meta)):
        mngr.close()
        raise ValueError(f"{workdir!r} holds a checkpoint of a different {what} "
                         f"({_plain(key(saved))}, asked for {_plain(key(meta))}); use a new "
                         "workdir")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))["state"]
    return restored, int(step)


def image_grid(images, cols: int = 0, value_range=(-1.0, 1.0)):
    """Tiles images into one uint8 image with 1-pixel borders.

    Args:
      images: (N, H, W) or (N, H, W, C) floats in ``value_range``.
      cols: images per row (0: about sqrt(N)).
      value_range: (low, high) mapped to (0, 255); values outside are clipped.

    Returns:
      (rows * (H + 1) + 1, cols * (W + 1) + 1, C) uint8 array.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, H, W[, C]) with N > 0, got "
                         f"{images.shape}")
    lo, hi = map(float, value_range)
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        out[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = images[i]
    return np.round(out * 255.0).astype(np.uint8)


def save_image_grid(images, path: str, *, cols: int = 0, scale: int = 4,
                    value_range=(-1.0, 1.0)):
    """Writes :func:`image_grid` of ``images`` to the PNG ``path``, upscaled ``scale`` times
    (nearest neighbour); returns the (unscaled) uint8 grid."""
    from PIL import Image
    g = image_grid(images, cols, value_range)
    big = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(big[..., 0] if big.shape[-1] == 1 else big).save(path)
    return g


def quiet_absl_logging():
    """Orbax logs every save at INFO; keep WARNING unless --verbosity was given."""
    from absl import flags
    from absl import logging as absl_logging
    if "verbosity" not in flags.FLAGS or not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
