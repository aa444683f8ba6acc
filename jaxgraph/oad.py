"""OAD: Online Adversarial Distillation of GNNs (Wang et al., ESWA 2024; graph.md §5).

    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py --workdir=runs/oad_cora
    python -m jaxgraph.oad --config=configs/gnn/oad_citeseer.py:gat --workdir=runs/oad_cs_gat

M students (GCN / GAT / SAGE, mixes allowed when their hidden widths agree) are trained
together, full batch, one step per epoch:

- **warm-up** (``warmup_epochs``): L = sum_i CE(z_i[train], y);
- **OKD** (``okd_epochs``): forward all students once (train mode) giving logits z_i and
  hidden features H_i; update every discriminator D_i (ring i-1 -> i: H_i "real",
  H_{i-1} "fake") with one Adam step on
  L_D_i = d_trade [BCE(D_i(sg H_i), 1) + BCE(D_i(sg H_{i-1}), 0)] (mean over all nodes);
  then L = sum_i CE_i + logitkd_trade L_KD + gan_trade L_GAN with
  L_GAN = sum_i BCE(D_i'(H_{i-1}), 1) through the *updated* D_i' (gradient reaches student
  i-1 only) and L_KD = sum_i T^2 KL(softmax(zbar_{-i}/T) || softmax(z_i/T)) on the train
  nodes, zbar_{-i} the detached mean of the other students' logits; one Adam step (coupled
  L2) on all students.

The D_i are independent given the (fixed) student features, so updating them "sequentially"
as the reference code does equals updating them together.

Reference-code quirks are options (the defaults of configs/gnn/oad_common.py are the
paper-faithful setting; ``:code`` in the config selects all reference settings):
``disc.final_relu`` (sigma(ReLU) >= 0.5), ``kd.scale`` ("paper" = T^2 batch-mean KL,
"code" = that / (N_train C)), ``select_on`` ("val", or "test" = the reference Cora script's
test-mask selection; reproduction only), ``self_loops`` (the reference adds none), GCN
``dropout`` (0 in the code), GAT ``activation`` ("relu" in the code) and ``out_heads`` (8
averaged heads in the code).

Several seeds train at once: the state carries a leading seed axis and the step is
``jax.vmap``-ed over it (``num_seeds``). Model selection uses validation accuracy per
student; reported per seed: each student's test accuracy at its best-validation epoch, their
mean (``mean_student``), the test accuracy of the student with the best validation accuracy
(``best_student``), the reference code's "max over students" (``max_student_coded``:
test max over students at the epoch where the max-over-students selection metric peaked),
and each student's test accuracy at the last epoch with their mean (``mean_student_last``).

**Which epochs are selected from** (:func:`selection_start`): as in the reference code, an
OAD run selects among its OKD epochs only (epoch index >= ``warmup_epochs``): both
selections are restarted at the first OKD epoch, so a warm-up epoch is never reported as an
OAD result. A run whose OKD phase adds nothing to the warm-up loss (``gan_trade =
logitkd_trade = 0``: the "alone" cells, one student trained with CE for all its epochs)
selects over all its epochs. A run with no OKD epoch (``okd_epochs = 0``: warm-up only)
reports the selection over its warm-up epochs, since no restart happens; extending it
(``--config.extend=True``) to OKD epochs restarts the selection at the first one, exactly
as an uninterrupted longer run does. The restart depends only on the epoch counter, so the
state layout is unchanged and resuming stays exact; checkpoints of OAD runs record the rule
(``settings["selection"]``), so a checkpoint written before this rule (which selected over
all epochs) is refused instead of being resumed with its old selection.

Several processes (``--num_processes``): the seeds are split over a mesh of one device per
process (:func:`jaxinfra.mesh.process_mesh`) when their number is a multiple of the
process count, else every process trains them all; the metrics are gathered to every
process and process 0 writes them.

Runs are checked and resumed as :mod:`jaxgraph.train` describes: config values before
any data are read (:func:`check_config`), the newest good checkpoint with the same settings
(``--config.extend=True`` lets only ``okd_epochs`` differ: more OKD epochs after a finished
run), and a NaN or inf metric of any seed stops training naming the epoch, the metric and
the seed (``loss[seed=1]``) before anything non-finite is saved.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxgraph import discriminators as discs
from jaxgraph import gnn, graphs
from jaxgraph.train import (
    NodeTask,
    Selection,
    make_optimizer,
    masked_accuracy,
    masked_cross_entropy,
    run_epochs,
    run_settings,
    task_from_config,
    update_selection,
)
from jaxinfra import config_checks, distributed
from jaxinfra import mesh as mesh_lib

__all__ = ["OADState", "OAD", "make_oad", "kd_loss", "check_config", "selection_start",
           "run_oad", "summarize"]


def kd_loss(student_logits, teacher_logits, mask, *, temperature: float,
            scale: str = "paper"):
    """T^2 KL(softmax(teacher/T) || softmax(student/T)), mean over nodes with mask 1.

    Args:
      student_logits, teacher_logits: (N, C); the teacher is not differentiated.
      mask: (N,) 0/1.
      scale: "paper" (batch-mean KL times T^2) or "code" (the reference ``kd_loss``:
        additionally divided by n C, n = number of masked nodes).
    """
    if scale not in ("paper", "code"):
        raise ValueError(f"unknown kd scale {scale!r}; valid: paper, code")
    t = temperature
    log_p_t = jax.nn.log_softmax(jax.lax.stop_gradient(teacher_logits) / t)
    log_p_s = jax.nn.log_softmax(student_logits / t)
    kl = jnp.sum(jnp.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    loss = t * t * jnp.sum(kl * mask) / n
    if scale == "code":
        loss = loss / (n * student_logits.shape[-1])
    return loss


class OADState(struct.PyTreeNode):
    """OAD training state (one seed; stacked along a leading axis for several).

    Attributes:
      step: () int32, epochs done.
      students: tuple of M student parameter trees.
      student_opt: optimiser state of the students (one Adam over the tuple).
      discs: tuple of M discriminator parameter trees (empty without the local term).
      disc_opt: optimiser state of the discriminators.
      selection: per-student validation selection, fields of shape (M,).
      coded: "max over students" selection of the reference code, fields of shape ().
    """
    step: jnp.ndarray
    students: tuple
    student_opt: optax.OptState
    discs: tuple
    disc_opt: optax.OptState
    selection: Selection
    coded: Selection


class OAD(struct.PyTreeNode):
    """The OAD functions for one config and task shape: ``init(key) -> OADState``,
    ``step(state, task, key) -> (state, metrics)`` (one epoch; jit/vmap-able);
    ``forward(students, task, rng, deterministic) -> (logits, hiddens)`` (M-tuples);
    ``disc_loss(discs, hiddens, task)`` and ``gan_loss(discs, hiddens, task)``."""
    init: callable = struct.field(pytree_node=False)
    step: callable = struct.field(pytree_node=False)
    evaluate: callable = struct.field(pytree_node=False)
    forward: callable = struct.field(pytree_node=False)
    disc_loss: callable = struct.field(pytree_node=False)
    gan_loss: callable = struct.field(pytree_node=False)
    students: tuple = struct.field(pytree_node=False)


def _check_config(config, num_classes):
    bad = [a for a in config.students if a not in gnn.ARCHS]
    if bad or not config.students:
        raise ValueError(f"unknown student architecture(s) {bad} in students="
                         f"{tuple(config.students)}; valid: {', '.join(gnn.ARCHS)}")
    m = len(config.students)
    if m < 2 and (config.logitkd_trade or config.gan_trade):
        raise ValueError(f"OAD needs >= 2 students for its distillation terms, got {m}; "
                         f"set logitkd_trade = gan_trade = 0 to train one student alone")
    if config.select_on not in ("val", "test"):
        raise ValueError(f"unknown select_on {config.select_on!r}; valid: val, test")
    if config.kd.scale not in ("paper", "code"):
        raise ValueError(f"unknown kd.scale {config.kd.scale!r}; valid: paper, code")
    models = tuple(gnn.make_model(a, num_classes, **dict(config.models[a]))
                   for a in config.students)
    dims = [gnn.hidden_dim(mod) for mod in models]
    if config.gan_trade and len(set(dims)) > 1:
        raise ValueError(f"the discriminator ring needs equal hidden widths, got "
                         f"{dict(zip(config.students, dims))}")
    config_checks.int_at_least(config, "warmup_epochs", 0)
    config_checks.int_at_least(config, "okd_epochs", 0)
    return models


def check_config(config) -> None:
    """ValueError naming the first bad loop or optimiser value and its accepted range
    (before any data are read)."""
    warmup = config_checks.int_at_least(config, "warmup_epochs", 0)
    okd = config_checks.int_at_least(config, "okd_epochs", 0)
    if warmup + okd < 1:
        raise ValueError(f"config.warmup_epochs + config.okd_epochs must be >= 1 (the "
                         f"epochs to train), got {warmup} + {okd}")
    config_checks.int_at_least(config, "num_seeds", 1, what="seeds trained at once")
    config_checks.int_at_least(config, "log_every", 1, what="epochs between logged metrics")
    config_checks.int_at_least(config, "checkpoint_every", 1, what="epochs between checkpoints")
    config_checks.positive(config, "optim.lr")
    config_checks.positive(config, "disc.lr")
    config_checks.positive(config, "kd.temperature")
    wd = config_checks.get(config, "optim.weight_decay")
    if not wd >= 0:
        raise ValueError(f"config.optim.weight_decay must be a number >= 0, got {wd!r}")


def selection_start(config) -> int:
    """The first epoch (0-based) that model selection may pick: ``warmup_epochs`` when the
    OKD phase has a distillation term (``gan_trade`` or ``logitkd_trade`` non-zero), else 0
    (a student trained alone selects over all its epochs). With ``okd_epochs = 0`` no epoch
    reaches it and the selection stays the one over the warm-up epochs."""
    okd_terms = bool(config.gan_trade) or bool(config.logitkd_trade)
    return int(config.warmup_epochs) if okd_terms else 0


def _restart_selection(sel: Selection, restart) -> Selection:
    """``sel`` emptied (as :meth:`Selection.create`) where ``restart`` is True."""
    fresh = Selection.create(sel.best_val.shape)
    return jax.tree.map(lambda f, old: jnp.where(restart, f, old), fresh, sel)


def make_oad(config, task: NodeTask) -> OAD:
    """Builds the OAD functions for ``config`` (as built by configs/gnn/oad_common.py) and
    ``task``'s shapes (the task itself is an argument of ``step``)."""
    models = _check_config(config, task.num_classes)
    m = len(models)
    use_gan = bool(config.gan_trade)
    use_kd = bool(config.logitkd_trade)
    d_models = tuple(discs.make_discriminator(a, d_dim=config.disc.d_dim,
                                              final_relu=config.disc.final_relu)
                     for a in config.students) if use_gan else ()
    tx = make_optimizer(config.optim.lr, config.optim.weight_decay)
    dtx = optax.adam(config.disc.lr)
    temperature = float(config.kd.temperature)
    kd_scale = config.kd.scale
    warmup = int(config.warmup_epochs)
    select_from = selection_start(config)
    sel_split = "test_mask" if config.select_on == "test" else "val_mask"

    def init(key) -> OADState:
        keys = jax.random.split(key, 2 * m)
        g, x = task.graph, task.graph.nodes
        students, hiddens = [], []
        for i, mod in enumerate(models):
            p = mod.init(keys[i], g, x, True)["params"]
            students.append(p)
            hiddens.append(jax.eval_shape(lambda p, mod=mod: mod.apply(
                {"params": p}, g, x, True)[1], p))
        students = tuple(students)
        d_params = tuple(
            d.init(keys[m + i], g, jnp.zeros(hiddens[i].shape, hiddens[i].dtype))["params"]
            for i, d in enumerate(d_models))
        return OADState(step=jnp.zeros((), jnp.int32), students=students,
                        student_opt=tx.init(students), discs=d_params,
                        disc_opt=dtx.init(d_params), selection=Selection.create((m,)),
                        coded=Selection.create())

    def forward(students, task, rng, deterministic):
        keys = jax.random.split(rng, m)
        outs = [mod.apply({"params": p}, task.graph, task.graph.nodes, deterministic,
                          rngs=None if deterministic else {"dropout": k})
                for mod, p, k in zip(models, students, keys)]
        return tuple(o[0] for o in outs), tuple(o[1] for o in outs)

    def evaluate(state: OADState, task: NodeTask):
        """(M,) accuracies per split with deterministic students."""
        zs, _ = forward(state.students, task, jax.random.PRNGKey(0), True)
        return {split: jnp.stack([masked_accuracy(z, task.labels, getattr(task, f"{split}_mask"))
                                  for z in zs]) for split in ("train", "val", "test")}

    def disc_loss(dparams, hs, task: NodeTask):
        """sum_i d_trade [BCE(D_i(H_i), 1) + BCE(D_i(H_{i-1}), 0)], node means."""
        node_w = graphs.node_mask(task.graph).astype(jnp.float32)
        total = jnp.zeros(())
        for i, (d, p) in enumerate(zip(d_models, dparams)):
            real = d.apply({"params": p}, task.graph, hs[i])
            fake = d.apply({"params": p}, task.graph, hs[(i - 1) % m])
            total += config.d_trade * (discs.masked_mean(discs.bce_real(real), node_w)
                                       + discs.masked_mean(discs.bce_fake(fake), node_w))
        return total

    def gan_loss(dparams, hs, task: NodeTask):
        """L_GAN = sum_i BCE(D_i(H_{i-1}), 1), node means (the generators' loss)."""
        node_w = graphs.node_mask(task.graph).astype(jnp.float32)
        return sum(discs.masked_mean(discs.bce_real(
            d.apply({"params": p}, task.graph, hs[(i - 1) % m])), node_w)
            for i, (d, p) in enumerate(zip(d_models, dparams)))

    def step(state: OADState, task: NodeTask, key):
        rng = jax.random.fold_in(key, state.step)
        okd = (state.step >= warmup).astype(jnp.float32)
        (zs, hs), vjp_fn = jax.vjp(lambda s: forward(s, task, rng, False), state.students)

        # 1. Discriminators (OKD phase only): real H_i, fake H_{i-1}; students detached.
        d_loss = jnp.zeros(())
        new_discs, new_dopt = state.discs, state.disc_opt
        if use_gan:
            hs_sg = tuple(jax.lax.stop_gradient(h) for h in hs)

            def d_loss_fn(dparams):
                return disc_loss(dparams, hs_sg, task)

            d_loss, d_grads = jax.value_and_grad(d_loss_fn)(state.discs)
            d_upd, d_opt = dtx.update(d_grads, state.disc_opt, state.discs)
            d_new = optax.apply_updates(state.discs, d_upd)
            new_discs = jax.tree.map(lambda a, b: jnp.where(okd > 0, a, b), d_new, state.discs)
            new_dopt = jax.tree.map(lambda a, b: jnp.where(okd > 0, a, b), d_opt,
                                    state.disc_opt)

        # 2. Students: CE + KD + GAN (through the updated discriminators).
        def loss_from_outputs(zs, hs):
            ce = sum(masked_cross_entropy(z, task.labels, task.train_mask) for z in zs)
            kd = jnp.zeros(())
            if use_kd:
                total = sum(zs)
                kd = sum(kd_loss(z, (total - z) / (m - 1), task.train_mask,
                                 temperature=temperature, scale=kd_scale) for z in zs)
            gan = gan_loss(new_discs, hs, task) if use_gan else jnp.zeros(())
            loss = ce + okd * (config.logitkd_trade * kd + config.gan_trade * gan)
            return loss, (ce, kd, gan)

        (loss, (ce, kd, gan)), out_grads = jax.value_and_grad(
            loss_from_outputs, argnums=(0, 1), has_aux=True)(zs, hs)
        (grads,) = vjp_fn(out_grads)
        updates, s_opt = tx.update(grads, state.student_opt, state.students)
        students = optax.apply_updates(state.students, updates)

        # 3. Evaluation and model selection (validation by default).
        zs_eval, _ = forward(students, task, rng, True)
        acc = {s: jnp.stack([masked_accuracy(z, task.labels, getattr(task, f"{s}_mask"))
                             for z in zs_eval]) for s in ("val", "test")}
        sel_acc = jnp.stack([masked_accuracy(z, task.labels, getattr(task, sel_split))
                             for z in zs_eval])
        # Selection among the OKD epochs only: both restart at the first one, select_from
        # (0 for runs without OKD terms, the "alone" runs: a no-op, all epochs count).
        restart = state.step == select_from
        selection = update_selection(_restart_selection(state.selection, restart),
                                     acc["val"], acc["test"], state.step)
        coded = update_selection(_restart_selection(state.coded, restart), sel_acc.max(),
                                 acc["test"].max(), state.step)
        new_state = OADState(step=state.step + 1, students=students, student_opt=s_opt,
                             discs=new_discs, disc_opt=new_dopt, selection=selection,
                             coded=coded)
        metrics = {"loss": loss, "ce": ce, "kd": kd, "gan": gan, "d_loss": d_loss,
                   "l2_grads": optax.tree.norm(grads), "okd": okd,
                   "l2_params": optax.tree.norm((students, new_discs)),
                   "val_accuracy": acc["val"], "test_accuracy": acc["test"]}
        return new_state, metrics

    return OAD(init=init, step=step, evaluate=evaluate, forward=forward, disc_loss=disc_loss,
               gan_loss=gan_loss, students=tuple(config.students))


def summarize(state: OADState, last: dict | None = None) -> dict:
    """Per-seed selection results of a (seed-stacked) state as host lists / floats.

    ``last``: the accuracies of the final students (``OAD.evaluate``, vmapped: ``{"val":
    (seeds, M), "test": (seeds, M)}``); adds each student's last-epoch accuracies and
    ``mean_student_last`` (their mean over students)."""
    sel = jax.device_get(state.selection)
    coded = jax.device_get(state.coded)
    best_val = np.atleast_2d(sel.best_val)
    test = np.atleast_2d(sel.test_at_best)
    best_student = test[np.arange(test.shape[0]), best_val.argmax(axis=1)]
    per_seed = {"student_test": test.tolist(), "student_best_val": best_val.tolist(),
                "student_best_epoch": np.atleast_2d(sel.epoch).tolist(),
                "mean_student": test.mean(axis=1).tolist(),
                "best_student": best_student.tolist(),
                "max_student_coded": np.atleast_1d(coded.test_at_best).tolist(),
                "max_student_coded_epoch": np.atleast_1d(coded.epoch).tolist()}
    keys = ["mean_student", "best_student", "max_student_coded"]
    if last is not None:
        last_test = np.atleast_2d(np.asarray(jax.device_get(last["test"])))
        last_val = np.atleast_2d(np.asarray(jax.device_get(last["val"])))
        per_seed.update({"student_last_test": last_test.tolist(),
                         "student_last_val": last_val.tolist(),
                         "mean_student_last": last_test.mean(axis=1).tolist()})
        keys.append("mean_student_last")
    stats = {}
    for k in keys:
        v = np.asarray(per_seed[k])
        stats[k] = {"mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)}
    return {"per_seed": per_seed, "stats": stats}


def _log_metrics(log, epoch: int, mt: dict) -> dict:
    """Means over seeds (and students) of one epoch's metrics."""
    log.write(epoch, {k: np.mean(mt[k]) for k in
                      ("loss", "ce", "kd", "gan", "d_loss", "l2_grads")})
    log.write(epoch, {"val_accuracy": np.mean(mt["val_accuracy"]),
                      "test_accuracy": np.mean(mt["test_accuracy"])}, prefix="eval")
    return {"ce": f"{np.mean(mt['ce']):.3f}", "val": f"{np.mean(mt['val_accuracy']):.3f}"}


def run_oad(config, workdir: str) -> dict:
    """Trains ``config.num_seeds`` seeds of OAD at once (vmapped); writes metrics
    (means over seeds and students), checkpoints and ``workdir/result.json``."""
    import time

    check_config(config)
    task = task_from_config(config)
    oad = make_oad(config, task)
    seeds = config.seed + np.arange(config.num_seeds)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds))
    init_keys, train_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    # The defaults of architectures no student uses never change the results.
    unused_models = tuple(f"models.{a}" for a in config.models if a not in config.students)
    settings = run_settings(config, ignore=unused_models)
    if selection_start(config) > 0:
        # Recorded so that a checkpoint selected over all epochs (written before the
        # selection among OKD epochs) is refused rather than resumed with its selection.
        settings["selection"] = "okd_epochs"
    step, init = jax.vmap(oad.step, in_axes=(0, None, 0)), jax.vmap(oad.init)
    evaluate = jax.vmap(oad.evaluate, in_axes=(0, None))
    mesh, sharded = mesh_lib.process_mesh(), {}
    if mesh is not None:       # several processes: the seeds split over them
        rep = mesh_lib.replicated(mesh)
        by_seed = mesh_lib.sharded(mesh) if len(seeds) % mesh.size == 0 else rep
        task = jax.device_put(task, rep)
        init_keys, train_keys = jax.device_put((init_keys, train_keys), by_seed)
        sharded = {"init": {"out_shardings": by_seed},
                   "step": {"out_shardings": (by_seed, rep)},   # metrics gathered
                   "gather": {"out_shardings": rep}}
    t0 = time.time()
    state = run_epochs(
        jax.jit(step, donate_argnums=(0,), **sharded.get("step", {})),
        jax.jit(init, **sharded.get("init", {}))(init_keys), task, train_keys,
        workdir=workdir,
        meta={"dataset": config.dataset, "students": list(config.students),
              "seeds": [int(s) for s in seeds],
              "settings": settings},
        epochs=config.warmup_epochs + config.okd_epochs, log_every=config.log_every,
        checkpoint_every=config.checkpoint_every, log_metrics=_log_metrics,
        desc=f"oad {config.dataset} {'/'.join(config.students)}", progress=config.progress,
        what="GNN OAD", extend=bool(config.get("extend", False)), extend_keys=("okd_epochs",),
        axes=("seed", "student"))
    last = jax.jit(evaluate, **sharded.get("gather", {}))(state, task)
    state = jax.jit(lambda s: s, **sharded.get("gather", {}))(state)   # to every process
    result = {"dataset": config.dataset, "students": list(config.students),
              "seeds": [int(s) for s in seeds], "warmup_epochs": config.warmup_epochs,
              "okd_epochs": config.okd_epochs, "logitkd_trade": config.logitkd_trade,
              "gan_trade": config.gan_trade, "d_trade": config.d_trade,
              "kd_scale": config.kd.scale, "disc_final_relu": config.disc.final_relu,
              "self_loops": config.self_loops, "select_on": config.select_on,
              # the first epoch the selection could pick (0 when no OKD epoch was run:
              # then the warm-up epochs are all there is)
              "selection_from_epoch": selection_start(config) if config.okd_epochs else 0,
              "train_seconds": time.time() - t0, **summarize(state, last)}
    distributed.write_json(os.path.join(workdir, "result.json"), result)
    return result


def _report(result, workdir):
    s = result["stats"]
    print(json.dumps({k: f"{v['mean']:.4f} +- {v['std']:.4f}" for k, v in s.items()}))


if __name__ == "__main__":
    from jaxinfra.cli import run_job
    run_job(run_oad, _report, multi_process=True)
