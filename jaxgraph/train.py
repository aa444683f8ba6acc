"""Full-batch training of one GNN (GCN / GAT / SAGE) on a Planetoid graph.

    python -m jaxgraph.train --config=configs/gnn/gnn_planetoid.py:cora,gcn --workdir=runs/gcn_cora

One jitted step per epoch on the whole (padded) graph; validation and test accuracy every
epoch; the reported test accuracy is the one at the epoch of best *validation* accuracy
(never selected on test). Metrics go to ``workdir/metrics.jsonl`` (+ TensorBoard), Orbax
checkpoints to ``workdir/checkpoints`` (resuming from the same workdir is exact: the dropout
key is ``fold_in(key, epoch)`` and the selection state is checkpointed), the summary to
``workdir/result.json``.

Never losing work, never accepting bad input silently (shared with :mod:`jaxgraph.oad`):

- config values are checked before the data are read (:func:`check_config`): a bad one is
  a ValueError naming the field, the value and the accepted range; an empty split is one
  too (:func:`check_task`);
- resuming uses the newest good checkpoint (a corrupt one is moved to
  ``checkpoints/corrupt/<epoch>`` with a warning) and refuses one written with other
  settings (every config field that changes results; all differences listed);
  ``--config.extend=True`` lets only the run's length (``epochs``) differ, continuing a
  finished run with its epoch counter going on;
- a NaN or inf in an epoch's loss, parameter norm (``l2_params``) or any other metric stops
  training with :class:`jaxinfra.finite.NonFiniteError` naming the epoch (one step per
  epoch) and the metric; metrics are checked at every log and before every save, so a
  non-finite state is never saved.

Several processes (``--num_processes``, :mod:`jaxinfra.distributed`): the graph is small
and trained full-batch, so every process runs the same step on its first device (the
state replicated over a mesh of one device per process,
:func:`jaxinfra.mesh.replicated_per_process`); process 0 writes the metrics and
``result.json``, every process takes part in the checkpoints. The result equals a
one-process run's.

Also the shared pieces of :mod:`jaxgraph.oad`: :class:`NodeTask` (padded graph + labels +
split masks), :func:`load_task`, masked losses / accuracies, the optimiser, model
selection and the resumable epoch loop :func:`run_epochs`.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxgraph import gnn, graphs
from jaxgraph.planetoid import load_planetoid
from jaxinfra import checkpoints, config_checks, distributed, finite
from jaxinfra import mesh as mesh_lib
from jaxinfra.metrics import MetricsLog

__all__ = ["NodeTask", "load_task", "task_from_config", "check_task", "masked_cross_entropy",
           "masked_accuracy", "make_optimizer", "TrainState", "Selection", "make_train_step",
           "make_eval_fn", "update_selection", "check_config", "run_settings", "run_epochs",
           "train_and_evaluate"]


class NodeTask(struct.PyTreeNode):
    """A padded node-classification task (all arrays on device; N = padded node count).

    Attributes:
      graph: ``GraphsTuple`` whose ``nodes`` are the (N, F) input features.
      labels: (N,) int32 (0 on padding nodes).
      train_mask, val_mask, test_mask: (N,) float32 0/1 split masks (0 on padding).
      num_classes: C (static).
    """
    graph: graphs.GraphsTuple
    labels: jnp.ndarray
    train_mask: jnp.ndarray
    val_mask: jnp.ndarray
    test_mask: jnp.ndarray
    num_classes: int = struct.field(pytree_node=False)


def load_task(dataset: str, *, data_dir: str | None = None, self_loops: bool = True,
              sparse: bool = True, normalize: bool = True, pad_multiple: int = 64,
              dtype=jnp.float32) -> NodeTask:
    """Planetoid ``dataset`` as a padded :class:`NodeTask`.

    Args:
      dataset: "cora", "citeseer" or "pubmed" (see :func:`jaxgraph.planetoid.load_planetoid`).
      data_dir: folder with the ``ind.<dataset>.*`` files (default: the packaged copies).
      self_loops: add (i, i) edges (Kipf GCN; the OAD reference code adds none).
      sparse: node features as :class:`jaxgraph.graphs.SparseFeatures` (else dense).
      normalize: divide each feature row by its sum.
      pad_multiple: pad nodes and edges to the next multiple of this (> the real counts).
    """
    d = load_planetoid(dataset, data_dir)
    x = d.row_normalized_features() if normalize else d.features
    feats = graphs.sparse_features(x) if sparse else np.asarray(x.todense(), np.float32)
    g = graphs.build_graph(feats, d.senders, d.receivers, self_loops=self_loops)
    n_node = graphs.padded_size(d.num_nodes, pad_multiple)
    n_edge = graphs.padded_size(int(g.n_edge.sum()), pad_multiple)
    g = graphs.pad_graph(g, n_node, n_edge)
    masks = [graphs.pad_nodes(d.mask(s).astype(np.float32), n_node)
             for s in ("train", "val", "test")]
    g = jax.tree.map(lambda a: jnp.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype,
                                                                      np.floating)
                     else jnp.asarray(a), g)
    task = NodeTask(graph=g, labels=jnp.asarray(graphs.pad_nodes(d.labels, n_node)),
                    train_mask=jnp.asarray(masks[0]), val_mask=jnp.asarray(masks[1]),
                    test_mask=jnp.asarray(masks[2]), num_classes=d.num_classes)
    check_task(task, dataset)
    return task


def check_task(task: NodeTask, name: str = "the task") -> None:
    """ValueError when a split (train / val / test mask) holds no node: its loss or
    accuracy would silently be 0."""
    for split in ("train", "val", "test"):
        n = float(jnp.sum(getattr(task, f"{split}_mask")))
        if not n > 0:
            raise ValueError(f"{name}: the {split} split is empty ({split}_mask selects no "
                             "node); every split needs at least one node")


def task_from_config(config) -> NodeTask:
    """:func:`load_task` of ``config.dataset`` with the config's ``data_dir`` ("": the
    packaged files), ``self_loops`` and ``sparse_features``."""
    return load_task(config.dataset, data_dir=config.data_dir or None,
                     self_loops=config.self_loops, sparse=config.sparse_features)


def masked_cross_entropy(logits, labels, mask):
    """Mean softmax cross-entropy over nodes with mask 1. logits (N, C), labels/mask (N,)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def masked_accuracy(logits, labels, mask):
    """Fraction of masked nodes whose argmax logit equals the label (in [0, 1])."""
    hit = (jnp.argmax(logits, -1) == labels).astype(mask.dtype)
    return jnp.sum(hit * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_optimizer(lr: float, weight_decay: float, *, decay_mask=None):
    """Adam with PyTorch-style *coupled* L2 (``add_decayed_weights`` before Adam).

    ``decay_mask``: optional pytree / callable of bools choosing the decayed parameters
    (e.g. Kipf's L2 on the first layer only); ``None`` decays all of them.
    """
    if lr <= 0 or weight_decay < 0:
        raise ValueError(f"need lr > 0 and weight_decay >= 0, got lr={lr}, "
                         f"weight_decay={weight_decay}")
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask),
                       optax.adam(lr))


def first_layer_mask(params):
    """Bool pytree: True on the first graph layer's parameters (name ending in ``_0``)."""
    return {k: jax.tree.map(lambda _: k.endswith("_0"), v) for k, v in params.items()}


class Selection(struct.PyTreeNode):
    """Model selection on validation accuracy, carried across epochs.

    Attributes (shape (...,) = one entry per model, e.g. (M,) students):
      best_val: best validation accuracy so far (-1 before the first evaluation).
      test_at_best: test accuracy at that epoch.
      epoch: the epoch it happened (-1 before).
    """
    best_val: jnp.ndarray
    test_at_best: jnp.ndarray
    epoch: jnp.ndarray

    @classmethod
    def create(cls, shape=()):
        return cls(best_val=-jnp.ones(shape, jnp.float32),
                   test_at_best=jnp.zeros(shape, jnp.float32),
                   epoch=-jnp.ones(shape, jnp.int32))


def update_selection(sel: Selection, val_acc, test_acc, epoch) -> Selection:
    """Keeps the first epoch with the strictly highest validation accuracy (compared in
    the selection's float32, so that a tie stays a tie when the metrics are float64)."""
    better = jnp.asarray(val_acc, sel.best_val.dtype) > sel.best_val
    keep = lambda new, old: jnp.where(better, new, old).astype(old.dtype)  # noqa: E731
    return Selection(best_val=keep(val_acc, sel.best_val),
                     test_at_best=keep(test_acc, sel.test_at_best),
                     epoch=keep(jnp.asarray(epoch), sel.epoch))


class TrainState(struct.PyTreeNode):
    """Single-GNN training state: epoch counter, parameters, optimiser state, selection."""
    step: jnp.ndarray
    params: dict
    opt_state: optax.OptState
    selection: Selection


def make_eval_fn(model):
    """``eval_fn(params, task) -> dict`` of loss / accuracy per split (deterministic)."""
    def eval_fn(params, task: NodeTask):
        logits, _ = model.apply({"params": params}, task.graph, task.graph.nodes, True)
        out = {}
        for split in ("train", "val", "test"):
            mask = getattr(task, f"{split}_mask")
            out[f"{split}_loss"] = masked_cross_entropy(logits, task.labels, mask)
            out[f"{split}_accuracy"] = masked_accuracy(logits, task.labels, mask)
        return out
    return eval_fn


def make_train_step(model, tx):
    """``step(state, task, key) -> (state, metrics)``: one full-batch Adam step on the
    train-node cross-entropy, then evaluation and selection update. Jit-able, vmappable
    over ``(state, key)``."""
    eval_fn = make_eval_fn(model)

    def step(state: TrainState, task: NodeTask, key):
        rng = jax.random.fold_in(key, state.step)

        def loss_fn(params):
            logits, _ = model.apply({"params": params}, task.graph, task.graph.nodes, False,
                                    rngs={"dropout": rng})
            return masked_cross_entropy(logits, task.labels, task.train_mask)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ev = eval_fn(params, task)
        sel = update_selection(state.selection, ev["val_accuracy"], ev["test_accuracy"],
                               state.step)
        metrics = dict(loss=loss, l2_grads=optax.tree.norm(grads),
                       l2_params=optax.tree.norm(params), **ev)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                          selection=sel), metrics

    return step


def model_kwargs(config) -> dict:
    """Model attributes from ``config.model`` (without ``arch``)."""
    kw = dict(config.model)
    kw.pop("arch")
    return kw


def init_state(model, tx, task: NodeTask, key) -> TrainState:
    params = model.init(key, task.graph, task.graph.nodes, True)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=tx.init(params), selection=Selection.create())


def _resume_key(meta: dict) -> dict:
    """The settings a checkpoint was written with (a checkpoint from before settings were
    recorded differs in every field)."""
    return meta.get("settings") or {}


def run_epochs(step, state, task: NodeTask, key, *, workdir: str, meta: dict, epochs: int,
               log_every: int, checkpoint_every: int, log_metrics, desc: str = "",
               progress: bool = False, what: str = "GNN", extend: bool = False,
               extend_keys=("epochs",), axes=()):
    """The epoch loop of :func:`train_and_evaluate` and :func:`jaxgraph.oad.run_oad`.

    Resumes from the newest good checkpoint of ``workdir/checkpoints`` (keeps 2; corrupt
    ones are moved aside with a warning; one whose ``meta["settings"]`` differs is refused,
    listing the differences), then runs ``state, metrics = step(state, task, key)`` once
    per remaining epoch. Every ``log_every`` epochs and at the last, ``log_metrics(log,
    epoch, metrics)`` writes the host ``metrics`` to the run's
    :class:`jaxinfra.metrics.MetricsLog` and returns the progress bar's postfix (a dict
    of strings); the state is saved every ``checkpoint_every`` epochs and at the last,
    with ``meta`` plus ``epoch``.

    Args:
      what: the run, in messages ("GNN", "OAD").
      extend, extend_keys: settings (dotted names) that may differ from the checkpoint's
        with ``extend=True``: the run's length.
      axes: names of the metrics' leading axes (``("seed", "student")`` for OAD), used to
        name the seed of a non-finite value.

    Raises:
      jaxinfra.finite.NonFiniteError: a metric of some epoch holds NaN or inf (checked at
        every log and before every save; the message names the first such epoch and
        metric). Nothing from that epoch on is saved.
      jaxinfra.checkpoints.SettingsMismatchError: the checkpoint has other settings.

    Returns:
      The final state.
    """
    check_task(task, desc or what)
    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoints.manager(workdir, save_every=checkpoint_every, keep=2)
    state, start = checkpoints.resume(mngr, state, meta, what=what, workdir=workdir,
                                      key=_resume_key, extend_keys=extend_keys,
                                      extend=extend)
    unchecked = []          # (epoch, device metrics) not yet checked for NaN / inf

    def check_finite():
        if unchecked:
            rows = jax.device_get([m for _, m in unchecked])
            stacked = jax.tree.map(lambda *xs: np.stack(xs), *rows)
            finite.check_stacked(unchecked[0][0], stacked, axes=axes,
                                 what=f"{desc or what} training (one step per epoch)")
            unchecked.clear()

    try:
        if start > epochs:
            raise ValueError(f"{workdir!r} holds a {what} checkpoint at epoch {start}, "
                             f"beyond the {epochs} epochs asked; a run cannot be shortened "
                             "(use a new --workdir)")
        with MetricsLog(workdir, start_step=start) as log:
            bar = distributed.progress_bar(range(start, epochs), enabled=progress, desc=desc)
            for epoch in bar:
                state, m = step(state, task, key)
                unchecked.append((epoch + 1, m))
                last = epoch + 1 == epochs
                if (epoch + 1) % log_every == 0 or last:
                    bar.set_postfix(log_metrics(log, epoch + 1, jax.device_get(m)))
                    check_finite()
                if (epoch + 1) % checkpoint_every == 0 or last:
                    check_finite()
                    checkpoints.save(mngr, epoch + 1, meta=dict(meta, epoch=epoch + 1),
                                     force=last, state=state)
    finally:
        mngr.close()
    return state


def _log_metrics(log, epoch: int, m: dict) -> dict:
    log.write(epoch, {k: m[k] for k in ("loss", "l2_grads", "train_accuracy")})
    log.write(epoch, {k: m[k] for k in ("val_loss", "val_accuracy", "test_accuracy")},
              prefix="eval")
    return {"loss": f"{m['loss']:.3f}", "val": f"{m['val_accuracy']:.3f}"}


def check_config(config) -> None:
    """ValueError naming the first bad value and its accepted range (before any data are
    read): the loop settings of :func:`run_epochs` and the optimiser's."""
    config_checks.int_at_least(config, "epochs", 1)
    config_checks.int_at_least(config, "log_every", 1, what="epochs between logged metrics")
    config_checks.int_at_least(config, "checkpoint_every", 1, what="epochs between checkpoints")
    config_checks.positive(config, "optim.lr")
    wd = config_checks.get(config, "optim.weight_decay")
    if not wd >= 0:
        raise ValueError(f"config.optim.weight_decay must be a number >= 0, got {wd!r}")


def run_settings(config, ignore=()) -> dict:
    """The config fields that change a run's results (compared when resuming): all but
    the run-only ones (:data:`jaxinfra.checkpoints.RUN_ONLY_FIELDS`) and ``data_dir`` (the
    Planetoid files are checked against their published counts wherever they lie)."""
    return checkpoints.settings(config, ignore=("data_dir",) + tuple(ignore))


def train_and_evaluate(config, workdir: str) -> dict:
    """Trains ``config.model`` on ``config.dataset``; returns (and writes) the summary."""
    check_config(config)
    task = task_from_config(config)
    model = gnn.make_model(config.model.arch, task.num_classes, **model_kwargs(config))
    decay_mask = first_layer_mask if config.optim.decay_first_layer_only else None
    tx = make_optimizer(config.optim.lr, config.optim.weight_decay, decay_mask=decay_mask)
    key = jax.random.PRNGKey(config.seed)
    init_key, train_key = jax.random.split(key)
    state = init_state(model, tx, task, init_key)
    task, state, train_key = mesh_lib.replicated_per_process((task, state, train_key))
    state = run_epochs(
        jax.jit(make_train_step(model, tx), donate_argnums=(0,)),
        state, task, train_key, workdir=workdir,
        meta={"dataset": config.dataset, "arch": config.model.arch,
              "settings": run_settings(config)}, epochs=config.epochs,
        log_every=config.log_every, checkpoint_every=config.checkpoint_every,
        log_metrics=_log_metrics, desc=f"{config.model.arch}/{config.dataset}",
        progress=config.progress, what="GNN", extend=bool(config.get("extend", False)),
        extend_keys=("epochs",))
    sel = jax.device_get(state.selection)
    result = {"dataset": config.dataset, "arch": config.model.arch, "seed": config.seed,
              "epochs": config.epochs, "best_val_accuracy": float(sel.best_val),
              "test_accuracy_at_best_val": float(sel.test_at_best),
              "best_epoch": int(sel.epoch)}
    distributed.write_json(os.path.join(workdir, "result.json"), result)
    return result


def _report(result, workdir):
    print(json.dumps(result))


if __name__ == "__main__":
    from jaxinfra.cli import run_job
    run_job(train_and_evaluate, _report, multi_process=True)
