"""The KGE epoch loop: batches, CSD teacher refreshes, one jitted epoch each, metrics,
validation and checkpoints.

An epoch visits a permutation of the training triples drawn from (seed, epoch), dropping
the last partial batch (:func:`epoch_indices`), so a resumed run repeats an uninterrupted
one exactly. Every step's metrics are checked for NaN / inf before the epoch is logged
as done, validated or saved (:func:`jaxinfra.finite.check_stacked`): a non-finite loss or
state stops training, naming the epoch, the optimizer step and the metric, and the last
good checkpoint stays the newest.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph.kge import sharded
from jaxgraph.kge import step as kge_step
from jaxinfra import checkpoints, distributed, finite
from jaxinfra import mesh as mesh_lib

__all__ = ["epoch_indices", "train_epochs"]


def epoch_indices(num_train: int, batch_size: int, seed: int, epoch: int):
    """(S, B) indices of the training triples of (0-based) ``epoch``, S = N // B."""
    steps = mesh_lib.steps_per_epoch(num_train, batch_size)
    perm = mesh_lib.epoch_permutation(seed, epoch, num_train)
    return perm[:steps * batch_size].reshape(steps, batch_size)


def train_epochs(state: kge_step.KGEState, cfg: kge_step.StepConfig, tx, train, weights, *,
                 key, seed: int, batch_size: int, start: int, end: int, epochs: int,
                 mngr, meta: dict, log, validate: Callable | None = None,
                 eval_every: int = 0, progress: bool = False, mesh=None):
    """Trains epochs ``start`` .. ``end - 1`` (0-based) of a run of ``epochs``.

    Args:
      state, cfg, tx: the training state, static step settings and optimizer.
      train: (N, 3) int training triples; weights: (N,) float32 example weights.
      key: the base key of the steps' randomness.
      seed: the run's seed (batch order).
      batch_size: B.
      start, end, epochs: the epochs to train, of a run of ``epochs``.
      mngr, meta: checkpoint manager (:mod:`jaxinfra.checkpoints`) and the run's metadata;
        every epoch is offered to the manager (its interval applies; the last one is
        always saved) with ``meta`` plus ``epoch``.
      log: a :class:`jaxinfra.metrics.MetricsLog` (``train/*`` per epoch).
      validate: ``validate(kge_params) -> {prefix: metrics}`` (e.g. ``{"valid": ...}``),
        each logged as ``<prefix>/*`` after every ``eval_every`` epochs (not after the
        last one of the run, which the caller evaluates).
      progress: show a tqdm bar.
      mesh: None, or a (``data``, ``model``) mesh: the state is entity-sharded
        (:mod:`jaxgraph.kge.sharded`) and epochs run sharded; the mesh may span several
        processes (every process calls this with the same arguments; process 0 writes).

    Returns:
      ``(state, train_seconds)``.

    Raises:
      jaxinfra.finite.NonFiniteError: a step's loss or state (``l2_params``) or another
        metric became NaN or infinite; the message names the epoch, the step (optimizer
        updates, 1-based) and the metric. Nothing of that epoch is saved.
    """
    name = cfg.backbone.name
    if mesh is None:
        train_epoch, place = kge_step.train_epoch, lambda *a: tuple(map(jnp.asarray, a))
    else:
        train_epoch = functools.partial(sharded.train_epoch, mesh=mesh)
        place = functools.partial(sharded.place_batches, mesh)
    seconds = 0.0
    with distributed.progress_bar(total=end, initial=start, desc=name, unit="epoch",
                                  enabled=progress) as bar:
        for epoch in range(start, end):
            if kge_step.refresh_due(cfg.csd, epoch):
                state = kge_step.refresh_teacher(state)
            idx = epoch_indices(len(train), batch_size, seed, epoch)
            t0 = time.perf_counter()
            state, metrics = train_epoch(
                state, *place(train[idx], weights[idx]), key,
                jnp.float32(kge_step.kd_weight(cfg.csd, epoch)), cfg=cfg, tx=tx)
            metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            seconds += dt
            row = {k: float(np.mean(v)) for k, v in metrics.items()}
            row.update(triples_per_sec=idx.size / dt, epoch_seconds=dt)
            log.write(epoch + 1, row, prefix="train")
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            finite.check_stacked(epoch * len(idx) + 1, metrics,
                                 what=f"KGE training (epoch {epoch + 1})")
            if (validate is not None and eval_every and (epoch + 1) % eval_every == 0
                    and epoch + 1 < epochs):
                for prefix, evaluated in validate(state.params["kge"]).items():
                    log.write(epoch + 1, evaluated, prefix=prefix)
            checkpoints.save(mngr, epoch + 1, meta=dict(meta, epoch=epoch + 1),
                             force=epoch + 1 == end, state=state)
            bar.update(1)
    return state, seconds
