"""Trains a teacher or distils a student (every method of :mod:`jaxkd.methods`).

    python -m jaxkd.train --config=configs/kd/teacher.py:fashion --workdir=runs/kd/t0
    python -m jaxkd.train --config=configs/kd/kd.py:fashion \
        "--config.teacher.workdirs=('runs/kd/t0',)" --workdir=runs/kd/kd0

The reference CIFAR-100 recipe (RepDistiller / CA-MKD) is the default: SGD with Nesterov
momentum 0.9, coupled weight decay 5e-4 on every parameter (``optax.add_decayed_weights``
before the optimizer), batch 64, 240 epochs, lr 0.05 times 0.1 after epochs 150, 180,
210; incomplete last batches are dropped. The student (and the method's connectors) is
the only thing differentiated: the K frozen teachers are an *argument* of the jitted step
(K same-architecture teachers stacked on a leading axis and vmapped), in eval mode.

Data parallel: the batch is sharded over a 1-D mesh of all devices (axis "data";
:func:`jaxinfra.mesh.mesh_1d`; with several processes, every device of every process,
:mod:`jaxinfra.distributed`); parameters and optimizer state are replicated. Losses are
global-batch means (BatchNorm statistics too), so the step computes the same numbers on
any device count. The global batch of a step is ``perm[s * B:(s + 1) * B]`` of one
permutation per (seed, epoch); each process reads only its rows of it and the global
array is assembled from them (:func:`jaxinfra.mesh.global_batch`), so a run on several
processes sees the batches of a run on one. Only process 0 writes metrics and
TensorBoard events; every process takes part in the checkpoint saves.

Writes to ``workdir``:
  checkpoints/<step>/   Orbax items ``state`` (step, params, batch_stats, opt_state),
                        ``student`` ({"params", "batch_stats"}: loadable as a teacher)
                        and ``meta`` (architecture, epoch, test accuracy history); at
                        every epoch end and at an early stop.
  best/checkpoints/     the student at its best test epoch (``student`` + ``meta``).
  metrics.jsonl, tb/    train metrics every ``log_every`` steps; test accuracy/loss and
                        best accuracy at every epoch end (``test/...``).
Re-running with the same workdir resumes; batch order, augmentation and every update
depend only on (seed, step), so a resumed run ends with the same parameters as an
uninterrupted one. The reported accuracy is the best epoch's (the lineage's convention)
together with the last epoch's.

Faults (tests/jaxkd/test_kd_train.py injects each): a corrupt checkpoint is moved to
``checkpoints/corrupt/<step>`` with a warning and the newest good one resumed (teachers
and ``best/`` are read the same way); a NaN/inf loss or metric stops the run
(``NonFiniteError``) and nothing non-finite is saved; a checkpoint of other settings
(:func:`settings`) is refused, listing every difference, and ``--config.extend=True``
continues a run to a larger ``num_epochs``; bad config values are errors before any work
(:func:`check_config`); a missing teacher's error gives the command that trains it.
"""
from __future__ import annotations

import functools
import json
import os
import shlex
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from jaxinfra import checkpoints, config_checks, distributed, finite
from jaxinfra import mesh as mesh_lib
from jaxinfra.metrics import MetricsLog
from jaxkd import data as data_lib
from jaxkd import guards, losses, methods

__all__ = ["TrainState", "StepConfig", "make_optimizer", "init_state", "train_step",
           "loss_and_grads", "eval_step", "evaluate", "load_student", "load_teachers",
           "check_teachers", "stack_variables", "build", "check_config", "settings",
           "train_and_evaluate"]


class TrainState(struct.PyTreeNode):
    """Everything a step changes (an immutable pytree; Orbax saves it whole).

    Attributes:
      step: () int32, optimizer updates done.
      params: {"student": ..., "connector": ...} ("connector" only when the method has
        one): the differentiated parameters.
      batch_stats: the same keys, BatchNorm running statistics.
      opt_state: optax state over ``params``.
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


class StepConfig(NamedTuple):
    """Static settings of the jitted step (hashable; equal settings share a compile).

    Attributes:
      student, teacher: Flax modules (teacher None for teacher-free methods).
      connector: the method's connector module or None.
      method: a :class:`jaxkd.methods.Method`.
      opts: ``config.method`` as a FrozenConfigDict.
      tx: the optax optimizer.
      steps_per_epoch: updates per epoch (the epoch of a step is step // spe + 1).
      pad, flip, fill: augmentation (pad 0 and flip False: none); see
        :func:`jaxkd.data.augment`.
      replicated: NamedSharding of the state (None: leave placement to XLA).
      teacher_map: "vmap" (stacked teachers vmapped; GPU/TPU) or "map" (``lax.map``, a
        loop over teachers; faster on CPU). ``config.teacher_map="auto"`` picks "map"
        on the CPU backend.
    """
    student: Any
    teacher: Any
    connector: Any
    method: Any
    opts: Any
    tx: Any
    steps_per_epoch: int
    pad: int = 4
    flip: bool = True
    fill: tuple = (0.0,)
    replicated: Any = None
    teacher_map: str = "vmap"


DATA_AXIS = "data"     # the mesh axis the batch is sharded over (jaxinfra.mesh.mesh_1d)


# --------------------------------------------------------------------------- optimizer

@functools.lru_cache(maxsize=32)
def _optimizer(lr: float, momentum: float, nesterov: bool, weight_decay: float,
               boundaries: tuple, gamma: float) -> optax.GradientTransformation:
    schedule = optax.piecewise_constant_schedule(lr, {b: gamma for b in boundaries})
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    return optax.chain(*parts, optax.sgd(schedule, momentum=momentum or None,
                                         nesterov=nesterov))


def make_optimizer(config, steps_per_epoch: int):
    """The reference SGD: coupled weight decay, then SGD (Nesterov) momentum with the lr
    multiplied by ``gamma`` after each epoch in ``optim.milestones`` (1-indexed epochs:
    epoch e > m is decayed, i.e. from update m * steps_per_epoch on).

    Returns:
      (tx, schedule) with ``schedule(count) -> lr``; cached on the settings so repeated
      runs in one process reuse the compiled step.
    """
    o = config.optim
    boundaries = tuple(int(m) * steps_per_epoch for m in o.milestones)
    tx = _optimizer(float(o.lr), float(o.momentum), bool(o.nesterov),
                    float(o.weight_decay), boundaries, float(o.gamma))
    schedule = optax.piecewise_constant_schedule(float(o.lr),
                                                 {b: float(o.gamma) for b in boundaries})
    return tx, schedule


# ------------------------------------------------------------------------------- step

def _over_teachers(fn, how, *args):
    """Maps ``fn`` over the leading (teacher) axis of ``args``: ``jax.vmap`` or, with
    ``how="map"``, ``jax.lax.map`` (a loop: XLA:CPU turns a vmapped convolution with
    per-teacher kernels into a grouped convolution that is ~10x slower there)."""
    if how == "vmap":
        return jax.vmap(fn)(*args)
    if how == "map":
        return jax.lax.map(lambda a: fn(*a), args)
    raise ValueError(f"teacher_map must be 'vmap' or 'map', got {how!r}")


def _teacher_tail(teacher, teacher_vars, how, h, index):
    """(K, B, ...) maps shaped like feats[index] through each teacher's remaining layers
    -> (K, B, C) logits (teacher k on h[k])."""
    fn = lambda v, hk: teacher.apply(v, hk, index, train=False, method="forward_from")
    return _over_teachers(fn, how, teacher_vars, h)


def _loss(params, batch_stats, teacher_vars, x, y, epoch, cfg: StepConfig):
    (s_logits, s_feats), upd = cfg.student.apply(
        {"params": params["student"], "batch_stats": batch_stats["student"]}, x,
        train=True, mutable=["batch_stats"])
    new_bs = {"student": upd["batch_stats"]}
    t_logits = t_feats = None
    if teacher_vars is not None:
        t_logits, t_feats = _over_teachers(
            lambda v: cfg.teacher.apply(v, x, train=False), cfg.teacher_map, teacher_vars)
        t_logits, t_feats = jax.lax.stop_gradient((t_logits, t_feats))
    conn = None
    if cfg.connector is not None:
        conn, c_upd = cfg.connector.apply(
            {"params": params["connector"], "batch_stats": batch_stats["connector"]},
            s_feats, train=True, mutable=["batch_stats"])
        new_bs["connector"] = c_upd["batch_stats"]
    tail = functools.partial(_teacher_tail, cfg.teacher, teacher_vars, cfg.teacher_map)
    ctx = methods.Context(labels=y, s_logits=s_logits, s_feats=s_feats, t_logits=t_logits,
                          t_feats=t_feats, conn=conn, tail=tail, epoch=epoch)
    loss, metrics = cfg.method.loss(cfg.opts, ctx)
    metrics = dict(metrics, acc=jnp.mean(losses.accuracy(s_logits, y)))
    return loss, (metrics, new_bs)


def _prepare(state, images, key, cfg):
    x = images
    if cfg.pad > 0 or cfg.flip:
        x = data_lib.augment(jax.random.fold_in(key, state.step), images, pad=cfg.pad,
                             flip=cfg.flip, fill=cfg.fill)
    return x, state.step // cfg.steps_per_epoch + 1


def loss_and_grads(state: TrainState, teacher_vars, images, labels, key, cfg: StepConfig):
    """(loss, metrics, new batch_stats, grads) of one batch (not jitted; see train_step)."""
    x, epoch = _prepare(state, images, key, cfg)
    (loss, (metrics, new_bs)), grads = jax.value_and_grad(_loss, has_aux=True)(
        state.params, state.batch_stats, teacher_vars, x, labels, epoch, cfg)
    return loss, metrics, new_bs, grads


@functools.partial(jax.jit, static_argnames=("cfg",), donate_argnums=(0,))
def train_step(state: TrainState, teacher_vars, images, labels, key, *, cfg: StepConfig):
    """One SGD update of the student (and connectors).

    Args:
      state: the TrainState (donated: do not use it after the call).
      teacher_vars: {"params", "batch_stats"} of the K teachers stacked on a leading
        axis, or None (teacher-free methods). Frozen: never differentiated or updated.
      images: (B, H, W, C) normalised float32 batch (sharded on "data").
      labels: (B,) int32.
      key: the run's augmentation key; the step's key is fold_in(key, state.step).
      cfg: static settings.

    Returns:
      (new_state, metrics): the loss, the method's components, acc (train batch top-1),
      l2_grads, l2_params, l2_updates (() float each).
    """
    loss, metrics, new_bs, grads = loss_and_grads(state, teacher_vars, images, labels, key,
                                                  cfg)
    updates, opt_state = cfg.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_bs,
                              opt_state=opt_state)
    if cfg.replicated is not None:
        new_state = jax.lax.with_sharding_constraint(new_state, cfg.replicated)
    norm = lambda t: jnp.linalg.norm(ravel_pytree(t)[0])
    metrics = dict(metrics, loss=loss, l2_grads=norm(grads), l2_params=norm(params),
                   l2_updates=norm(updates))
    return new_state, metrics


@functools.partial(jax.jit, static_argnames=("model",))
def eval_step(variables, images, labels, mask, *, model):
    """Sums over the valid (mask 1) examples of correct predictions and cross-entropy."""
    logits, _ = model.apply(variables, images, train=False)
    correct = jnp.sum(losses.accuracy(logits, labels) * mask)
    ce = jnp.sum(losses.cross_entropy(logits, labels) * mask)
    return correct, ce


def evaluate(model, variables, dataset, batch_size: int, mesh=None) -> dict:
    """Top-1 accuracy and mean cross-entropy on ``dataset`` (a :class:`Dataset` or
    (images, labels)); the last batch is padded and masked, nothing is dropped. Each
    process reads its rows of every batch; the sums are over the global batch (every
    process gets the same numbers)."""
    images, labels = dataset[0], dataset[1]
    n = images.shape[0]
    mesh = mesh or mesh_lib.mesh_1d(DATA_AXIS)
    batch_sh = mesh_lib.sharded(mesh)
    bs = -(-batch_size // mesh.size) * mesh.size
    correct = ce = 0.0
    for lo in range(0, n, bs):
        x, y = images[lo:lo + bs], labels[lo:lo + bs]
        m = np.ones(len(y), np.float32)
        if len(y) < bs:
            padn = bs - len(y)
            x = np.concatenate([x, np.zeros((padn,) + x.shape[1:], x.dtype)])
            y = np.concatenate([y, np.zeros(padn, y.dtype)])
            m = np.concatenate([m, np.zeros(padn, np.float32)])
        xs, ys, ms = mesh_lib.global_batch(batch_sh, (x, y, m), np.arange(bs))
        c, e = eval_step(variables, xs, ys, ms, model=model)
        correct += float(c)
        ce += float(e)
    return {"acc": correct / n, "loss": ce / n}


# ------------------------------------------------------------------------ checkpoints

LAST_SUBDIR = "checkpoints"                          # every epoch's state, student, meta
BEST_SUBDIR = os.path.join("best", "checkpoints")    # the best epoch's student and meta


def _models():
    from jaxkd import models  # the model zoo: create(name, num_classes), count_params
    return models


def _abstract_variables(model, input_shape):
    """The variables' structure, shapes and dtypes (``jax.eval_shape``; no compute)."""
    return dict(jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + tuple(input_shape),
                                                            jnp.float32), train=False)))


DEFAULT_HINT = ("train it first with python -m jaxkd.train --config=configs/kd/teacher.py "
                "--workdir={workdir}")


def _open_best_from_last(workdir: str):
    """``(mngr, step)`` of the best epoch's checkpoint in ``checkpoints/`` (it holds the
    same ``student``), for a workdir whose ``best/`` has no good checkpoint; else None."""
    if not os.path.isdir(os.path.join(workdir, LAST_SUBDIR)):
        return None
    mngr = checkpoints.manager(workdir, subdir=LAST_SUBDIR)
    last = checkpoints.latest_good(mngr)
    if last is not None:
        meta = checkpoints.read_meta(mngr, last)
        best = int(meta.get("best_step", 0) or 0)
        if best and best in mngr.all_steps() and checkpoints.verify(mngr, best) is None:
            guards.warn(f"{workdir!r} has no good best/ checkpoint; using the best epoch's "
                        f"(epoch {meta.get('best_epoch')}, step {best}) checkpoint in "
                        f"{os.path.join(workdir, LAST_SUBDIR)!r}")
            return mngr, best
    mngr.close()
    return None


def load_student(workdir: str, which: str = "best", *, hint: str | None = None):
    """A trained model's variables from a :mod:`jaxkd.train` workdir.

    Every read goes through :func:`jaxinfra.checkpoints.open_latest`: a corrupt newest
    step is moved to ``corrupt/`` with a warning and the newest good one is used. When
    ``best/`` holds no good checkpoint, the best epoch's checkpoint in ``checkpoints/``
    (same student) is used, with a warning, if it is still kept.

    Args:
      workdir: the run folder.
      which: "best" (the best test epoch) or "last" (the latest checkpoint).
      hint: how to make the checkpoint, for the error (default: the teacher command for
        ``workdir``).

    Returns:
      (variables {"params", "batch_stats"}, meta dict with model, num_classes,
      input_shape, dataset, method, best_acc, ...).

    Raises:
      ValueError: bad ``which``. FileNotFoundError: no good checkpoint there.
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    hint = hint or DEFAULT_HINT.format(workdir=shlex.quote(workdir))
    subdir = BEST_SUBDIR if which == "best" else LAST_SUBDIR
    try:
        mngr, step = checkpoints.open_latest(workdir, subdir=subdir, what=f"{which!r}",
                                             hint=hint)
    except FileNotFoundError:
        found = _open_best_from_last(workdir) if which == "best" else None
        if found is None:
            corrupt = os.path.join(workdir, subdir, checkpoints.CORRUPT_SUBDIR)
            if os.path.isdir(corrupt):
                raise FileNotFoundError(
                    f"the {which} checkpoints of {workdir!r} are corrupt (moved to "
                    f"{corrupt!r}) and no good copy is left; use "
                    "--config.teacher.checkpoint=last if that is good, or retrain it "
                    f"({hint})") from None
            raise
        mngr, step = found
    try:
        meta = checkpoints.read_meta(mngr, step)
        model = _models().create(meta["model"], num_classes=int(meta["num_classes"]))
        target = _abstract_variables(model, meta["input_shape"])
        variables = checkpoints.read(mngr, step, student=target)["student"]
    finally:
        mngr.close()
    return variables, meta


def stack_variables(variables_list):
    """Stacks K same-structure variable trees on a new leading axis (K, ...) (on the
    host: numpy arrays, placed on devices by :func:`build`)."""
    return jax.tree.map(lambda *x: np.stack([np.asarray(a) for a in x]), *variables_list)


def _teacher_hint(config, index: int, workdir: str) -> str:
    """The command that trains teacher ``index`` of ``config`` into ``workdir``: the
    teacher config argument recorded by configs/kd/common.py (the user's options, e.g.
    ``configs/kd/teacher.py:tiny``), else the default recipe's."""
    args = tuple(config.teacher.get("train_configs", ()) or ())
    arg = args[min(index, len(args) - 1)] if args else "configs/kd/teacher.py"
    return (f"train it first with python -m jaxkd.train --config={shlex.quote(arg)} "
            f"--workdir={shlex.quote(workdir)}")


def check_teachers(config) -> None:
    """Checks that every teacher of ``config.teacher.workdirs`` has a checkpoint, before
    any data is loaded (corrupt steps are moved aside by ``open_latest``).

    Raises:
      FileNotFoundError: naming each missing teacher and the command that trains it.
    """
    which = config.teacher.checkpoint
    missing = []
    for i, w in enumerate(config.teacher.workdirs):
        hint = _teacher_hint(config, i, w)
        try:
            mngr, _ = checkpoints.open_latest(
                w, subdir=BEST_SUBDIR if which == "best" else LAST_SUBDIR,
                what=f"teacher ({which!r})", hint=hint)
            mngr.close()
        except FileNotFoundError as err:
            if which == "best" and (found := _open_best_from_last(w)) is not None:
                found[0].close()
                continue
            missing.append(str(err))
    if missing:
        raise FileNotFoundError("; ".join(missing))


def load_teachers(config, input_shape, num_classes):
    """Loads and stacks the teachers named by ``config.teacher.workdirs``.

    Raises:
      FileNotFoundError: a teacher without a good checkpoint (the message gives the
        command that trains it, with the user's config options and workdir).
      ValueError: a checkpoint whose architecture, number of classes or input shape
        does not match the config (the message names both).
    """
    check_teachers(config)
    out = []
    for i, w in enumerate(config.teacher.workdirs):
        variables, meta = load_student(w, config.teacher.checkpoint,
                                       hint=_teacher_hint(config, i, w))
        want = {"model": config.teacher.model, "num_classes": int(num_classes),
                "input_shape": list(input_shape)}
        got = {k: meta.get(k) for k in want}
        if got != want:
            raise ValueError(f"teacher checkpoint {w!r} holds {got} but the config asks "
                             f"for {want} (config.teacher.model / dataset)")
        out.append(variables)
    return stack_variables(out)

# ------------------------------------------------------------------------------ setup

class Setup(NamedTuple):
    """What :func:`build` makes from a config (everything but the data)."""
    cfg: StepConfig
    state: TrainState
    teacher_vars: Any
    mesh: Any
    schedule: Any
    meta: dict


def _num_teachers(config, method):
    k = len(config.teacher.workdirs)
    if method.teachers == 0:
        return 0
    if method.teachers == 1 and k != 1:
        raise ValueError(f"method {method.name!r} needs exactly 1 teacher in "
                         f"config.teacher.workdirs, got {k}")
    if method.teachers == -1 and k < 2:
        raise ValueError(f"method {method.name!r} needs >= 2 teachers in "
                         f"config.teacher.workdirs, got {k}")
    return k


def _teacher_map(config, mesh):
    how = config.teacher_map
    if how == "auto":
        return "map" if mesh.devices.flat[0].platform == "cpu" else "vmap"
    if how not in ("vmap", "map"):
        raise ValueError(f"teacher_map must be 'auto', 'vmap' or 'map', got {how!r}")
    return how


def init_state(key, student, connector, input_shape, tx, teacher_shapes=None):
    """Fresh TrainState (student, and connector when given) at step 0."""
    k_s, k_c = jax.random.split(key)
    x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
    s_vars = student.init(k_s, x, train=False)
    params = {"student": s_vars["params"]}
    bstats = {"student": s_vars.get("batch_stats", {})}
    if connector is not None:
        _, s_feats = student.apply(s_vars, x, train=False)
        c_vars = connector.init(k_c, s_feats, train=False)
        params["connector"] = c_vars["params"]
        bstats["connector"] = c_vars.get("batch_stats", {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=bstats,
                      opt_state=tx.init(params))


def _feat_shapes(model, variables, input_shape):
    x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
    _, feats = jax.eval_shape(lambda v, a: model.apply(v, a, train=False), variables, x)
    return [tuple(f.shape[1:]) for f in feats]


def build(config, input_shape, num_classes, steps_per_epoch, *, teacher_vars=None,
          mesh=None, fill=(0.0,)) -> Setup:
    """Models, method, optimizer, teachers and a fresh replicated state.

    Args:
      config: a ``configs/kd/*.py`` ConfigDict.
      input_shape: (H, W, C).
      num_classes: C.
      steps_per_epoch: updates per epoch.
      teacher_vars: stacked teacher variables to use instead of loading
        ``config.teacher.workdirs`` (tests).
      mesh: the device mesh (default: all devices of all processes).
      fill: (C,) padding value of the crop augmentation (normalised black).
    """
    method = methods.get(config.method.name)
    models = _models()
    if config.student not in models.MODELS:
        raise ValueError(f"unknown student model {config.student!r}; valid: "
                         f"{', '.join(sorted(models.MODELS))}")
    mesh = mesh or mesh_lib.mesh_1d(DATA_AXIS, int(config.num_devices))
    mesh_lib.check_batch_split(config.batch_size, mesh, hint=" (or set config.num_devices)")
    student = models.create(config.student, num_classes=num_classes)
    teacher = None
    if method.teachers != 0:
        if teacher_vars is None:
            _num_teachers(config, method)
        if config.teacher.model not in models.MODELS:
            raise ValueError(f"unknown teacher model {config.teacher.model!r}; valid: "
                             f"{', '.join(sorted(models.MODELS))}")
        teacher = models.create(config.teacher.model, num_classes=num_classes)
        if teacher_vars is None:
            teacher_vars = load_teachers(config, input_shape, num_classes)
        k = jax.tree.leaves(teacher_vars)[0].shape[0]
        if method.teachers == -1 and k < 2:
            raise ValueError(f"method {method.name!r} needs >= 2 teachers, got {k}")
    else:
        teacher_vars = None
    opts = ml_collections.FrozenConfigDict(config.method)
    tx, schedule = make_optimizer(config, steps_per_epoch)
    key = jax.random.PRNGKey(int(config.seed))
    connector = None
    if method.make_connector is not None:
        s_vars_shape = jax.eval_shape(lambda: student.init(
            key, jnp.zeros((1,) + tuple(input_shape)), train=False))
        t_single = jax.tree.map(lambda a: a[0], teacher_vars)
        connector = method.make_connector(
            opts, _feat_shapes(student, s_vars_shape, input_shape),
            _feat_shapes(teacher, t_single, input_shape),
            jax.tree.leaves(teacher_vars)[0].shape[0])
    replicated = mesh_lib.replicated(mesh)
    state = jax.jit(init_state, static_argnums=(1, 2, 3, 4), out_shardings=replicated)(
        jax.random.fold_in(key, 1), student, connector, tuple(input_shape), tx)
    if teacher_vars is not None:
        teacher_vars = jax.device_put(teacher_vars, replicated)
    aug = config.augment
    cfg = StepConfig(student=student, teacher=teacher, connector=connector, method=method,
                     opts=opts, tx=tx, steps_per_epoch=int(steps_per_epoch),
                     pad=int(aug.pad), flip=bool(aug.flip),
                     fill=tuple(float(v) for v in fill),
                     replicated=replicated, teacher_map=_teacher_map(config, mesh))
    return Setup(cfg, state, teacher_vars, mesh, schedule,
                 _run_meta(config, input_shape, num_classes))


def _run_meta(config, input_shape, num_classes) -> dict:
    """What a checkpoint records about its run: the model (to rebuild it as a teacher)
    and every setting that changes results (a resume must match them)."""
    uses_teacher = methods.get(config.method.name).teachers != 0
    return {"model": config.student, "num_classes": int(num_classes),
            "input_shape": list(input_shape), "dataset": config.dataset,
            "method": config.method.name,
            "teacher": config.teacher.model if uses_teacher else None,
            "seed": int(config.seed), "settings": settings(config)}


#: Config fields that do not change what a run computes, besides
#: :data:`jaxinfra.checkpoints.RUN_ONLY_FIELDS` (logging, checkpoint frequency, progress,
#: extend): where the data files are, how evaluation is batched, the device count and
#: how the teachers are looped over (the same numbers either way), and the hint that
#: trains a missing teacher.
SETTINGS_IGNORE = ("checkpoint_every_epochs", "eval_batch_size", "num_devices",
                   "teacher_map", "data_source", "data_dir", "teacher.train_configs")


def settings(config) -> dict:
    """The settings of ``config`` that change results (recorded in every checkpoint's
    meta and compared on resume)."""
    return checkpoints.settings(config, ignore=SETTINGS_IGNORE)


def _legacy_meta(config) -> dict:
    """What checkpoints written before settings were recorded can be compared on."""
    uses_teacher = methods.get(config.method.name).teachers != 0
    return {"model": config.student, "method": config.method.name,
            "dataset": config.dataset, "seed": int(config.seed),
            "teacher": config.teacher.model if uses_teacher else None}


def check_config(config) -> None:
    """Raises a ValueError naming the bad value and the accepted ones, before any data is
    loaded or anything is compiled."""
    for name in ("batch_size", "num_epochs", "checkpoint_every_epochs", "log_every",
                 "eval_batch_size", "keep_checkpoints"):
        config_checks.int_at_least(config, name, 1)
    for name in ("max_train", "max_test", "num_devices", "augment.pad", "seed"):
        config_checks.int_at_least(config, name, 0)
    config_checks.one_of(config, "teacher.checkpoint", ("best", "last"))
    config_checks.one_of(config, "teacher_map", ("auto", "vmap", "map"))
    config_checks.one_of(config, "data_source", ("auto", "offline", "tfds"))
    methods.get(config.method.name)                 # unknown names list the valid ones
    if 0 < int(config.max_train) < int(config.batch_size):
        raise ValueError(f"config.batch_size={config.batch_size} is larger than the "
                         f"{config.max_train} training images (config.max_train); accepted: "
                         f"1 to {config.max_train}")


def _check_data(train, test, bsz: int, drop_last: bool) -> int:
    """Steps per epoch; a ValueError for an empty split or a batch larger than the data."""
    for name, split in (("training", train), ("test", test)):
        if split.images.shape[0] == 0:
            raise ValueError(f"the {name} split is empty (0 examples); check "
                             "config.dataset, config.max_train/max_test and the data files")
        if split.images.shape[0] != split.labels.shape[0]:
            raise ValueError(f"the {name} split has {split.images.shape[0]} images but "
                             f"{split.labels.shape[0]} labels")
    n = train.images.shape[0]
    spe = n // bsz if drop_last else -(-n // bsz)
    if spe < 1:
        raise ValueError(f"config.batch_size={bsz} is larger than the {n} training "
                         f"examples (an epoch would have no batch); accepted: 1 to {n}")
    if not drop_last and n % bsz:
        raise ValueError("drop_last=False with a ragged last batch is not supported "
                         "(shapes must stay static); use drop_last=True")
    return spe


def _check_newer_best(best_mngr, start: int, asked: dict, workdir: str) -> None:
    """Refuses best/ steps newer than the resumed step that were written with other
    settings (a workdir reused for another run). Newer steps of this run stay: they are
    the best of epochs this run trains again, and are replaced when it saves a best at
    or before them."""
    for step in sorted(best_mngr.all_steps()):
        if step <= start or checkpoints.verify(best_mngr, step) is not None:
            continue
        saved = checkpoints.read_meta(best_mngr, step)
        if "settings" in saved:                 # (older checkpoints do not record them)
            diffs = [d for d in checkpoints.differences(saved["settings"], asked)
                     if d.split(":")[0] != "num_epochs"]
            if diffs:
                raise checkpoints.SettingsMismatchError(
                    f"{workdir!r} holds a best/ checkpoint (step {step}) with other "
                    f"settings: {'; '.join(diffs)}. Use a new --workdir")


def _restore_best(best_mngr, mngr, meta: dict, start: int, template, workdir: str) -> None:
    """Makes best/ hold the best student: the one of ``meta["best_step"]``, or one of an
    epoch after ``start`` (kept from before a fallback; this run trains that epoch
    again). A corrupt one is moved aside (``latest_good``) and copied back from
    checkpoints/ when that step is kept there; otherwise the best is tracked again from
    the next epoch on, with a warning."""
    want = int(meta.get("best_step", 0) or 0)
    have = checkpoints.latest_good(best_mngr)
    if have == want or not want or (have is not None and have > start):
        return
    if have is not None:
        best_mngr.delete(have)
    if want in mngr.all_steps() and checkpoints.verify(mngr, want) is None:
        saved = checkpoints.read_meta(mngr, want)
        student = checkpoints.read(mngr, want, student=template)["student"]
        checkpoints.save(best_mngr, want, meta=saved, force=True, student=student)
        guards.warn(f"best/ of {workdir!r} had no good checkpoint of the best epoch "
                    f"{meta['best_epoch']}; restored it from checkpoints/ step {want}")
        return
    guards.warn(f"the best student of {workdir!r} (epoch {meta['best_epoch']}, test "
                f"accuracy {meta['best_acc']:.4f}) is lost (corrupt, and checkpoints/ no "
                "longer keeps that epoch); best/ and best_acc now follow the epochs "
                "trained from here on")
    meta.update(best_acc=-1.0, best_epoch=0, best_step=0)


# ------------------------------------------------------------------------------- main

def load_data(config):
    """(train, test) :class:`jaxkd.data.Dataset` s per the config."""
    kw = {"source": config.data_source, "data_dir": config.data_dir or None}
    train = data_lib.load(config.dataset, "train",
                          max_examples=int(config.max_train) or None, **kw)
    test = data_lib.load(config.dataset, "test",
                         max_examples=int(config.max_test) or None, **kw)
    return train, test


def train_and_evaluate(config, workdir: str, *, stop_at_step: int | None = None,
                       teacher_vars=None, datasets=None, mesh=None) -> dict:
    """Trains (or resumes) and evaluates on the test split after every epoch.

    A resume restores the newest good checkpoint (a corrupt newer one is moved to
    ``checkpoints/corrupt/<step>`` with a warning) and refuses one written with other
    settings, listing every difference; ``config.extend=True`` continues a run to a
    larger ``num_epochs`` (step and epoch counters go on, best accuracy is kept). The
    loss and every metric are checked for NaN/inf before each log, evaluation and save.

    Args:
      config: a ``configs/kd/*.py`` ConfigDict.
      workdir: output folder; an existing checkpoint there is resumed.
      stop_at_step: stop after this update (simulates an interruption; the schedule
        still follows ``num_epochs``); a checkpoint is saved there.
      teacher_vars: stacked teacher variables instead of ``config.teacher.workdirs``.
      datasets: (train, test) instead of loading ``config.dataset``.
      mesh: device mesh (default: all devices of all processes).

    Returns:
      dict: best_acc, best_epoch, last_acc (test top-1, fractions), epoch, step,
      train_loss (last logged), wall_seconds, num_params (student), steps_per_epoch.

    Raises:
      ValueError: a bad config value or data set (before any work).
      SettingsMismatchError: ``workdir`` holds a run of other settings.
      FileNotFoundError: a teacher has no checkpoint (the message gives the command).
      NonFiniteError: the loss or a metric became NaN or inf (nothing non-finite is
        saved; the last good checkpoint is kept).
    """
    check_config(config)
    extend = bool(config.get("extend", False))
    asked = settings(config)
    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoints.manager(workdir, subdir=LAST_SUBDIR, keep=int(config.keep_checkpoints))
    best_mngr = checkpoints.manager(workdir, subdir=BEST_SUBDIR, keep=1)
    try:
        return _train(config, workdir, mngr, best_mngr, asked, extend, stop_at_step,
                      teacher_vars, datasets, mesh)
    finally:
        mngr.wait_until_finished()
        mngr.close()
        best_mngr.close()


def _train(config, workdir, mngr, best_mngr, asked, extend, stop_at_step, teacher_vars,
           datasets, mesh) -> dict:
    """The body of :func:`train_and_evaluate` (which closes the managers)."""
    # Checked before any data is loaded or anything compiled.
    _, saved = guards.check_resumable(mngr, asked, length_key="num_epochs", extend=extend,
                                      what="model", workdir=workdir,
                                      legacy=_legacy_meta(config))
    if teacher_vars is None and methods.get(config.method.name).teachers != 0:
        check_teachers(config)
    train, test = datasets if datasets is not None else load_data(config)
    bsz = int(config.batch_size)
    spe = _check_data(train, test, bsz, bool(config.drop_last))
    n = train.images.shape[0]
    data_meta = {"steps_per_epoch": spe, "train_examples": int(n),
                 "test_examples": int(test.images.shape[0])}
    total = int(config.num_epochs) * spe
    if saved is not None:
        changed = [f"{k}: {saved[k]!r} -> {v!r}" for k, v in data_meta.items()
                   if k in saved and saved[k] != v]
        if changed:
            raise checkpoints.SettingsMismatchError(
                f"{workdir!r} holds a checkpoint of other data: {'; '.join(changed)}. "
                "Use a new --workdir, or the data it was trained on")
        if int(saved["step"]) > total:
            raise ValueError(
                f"{workdir!r} holds a run at epoch {saved['step'] / spe:g} (step "
                f"{saved['step']}); config.num_epochs={config.num_epochs} would shorten "
                f"it; accepted: num_epochs >= {-(-int(saved['step']) // spe)}, or a "
                "new --workdir")
    fill = tuple(-m / s for m, s in zip(train.mean, train.std))   # black, normalised
    setup = build(config, train.images.shape[1:], train.num_classes, spe,
                  teacher_vars=teacher_vars, mesh=mesh, fill=fill)
    cfg, t_vars, mesh = setup.cfg, setup.teacher_vars, setup.mesh
    meta = dict(setup.meta, **data_meta, history=[], best_acc=-1.0, best_epoch=0,
                best_step=0)
    state, start = checkpoints.resume(mngr, setup.state, meta, what="model",
                                      workdir=workdir,     # legacy meta: checked above
                                      key=lambda m: m.get("settings", asked),
                                      extend_keys=("num_epochs",), extend=extend)
    if start:
        saved = checkpoints.read_meta(mngr, start)
        if int(state.step) != start or int(saved["step"]) != start:
            raise ValueError(f"{workdir!r}: checkpoint step {start} holds a state at step "
                             f"{int(state.step)} (meta: {saved['step']}); use a new --workdir")
        meta.update(history=list(saved["history"]), best_acc=float(saved["best_acc"]),
                    best_epoch=int(saved["best_epoch"]),
                    best_step=int(saved.get("best_step", int(saved["best_epoch"]) * spe)))
    batch_sh = mesh_lib.sharded(mesh)
    end = total if stop_at_step is None else min(int(stop_at_step), total)
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 2)
    models = _models()
    num_params = int(models.count_params(state.params["student"]))

    def student_vars(s):
        return {"params": s.params["student"], "batch_stats": s.batch_stats["student"]}

    _check_newer_best(best_mngr, start, asked, workdir)
    _restore_best(best_mngr, mngr, meta, start, student_vars(setup.state), workdir)

    def save(step, s, epoch):
        checkpoints.save(mngr, step, meta=dict(meta, step=step, epoch=epoch), force=True,
                         state=s, student=student_vars(s))

    unchecked = []           # per-step metrics not yet checked for NaN/inf

    def check_finite(first_step):
        if unchecked:
            finite.check_rows(first_step, jax.device_get(unchecked),
                              what=f"{config.method.name} training")
            unchecked.clear()

    t0 = time.perf_counter()
    acc, last, t_log = [], {}, time.perf_counter()
    with MetricsLog(workdir, start_step=start) as log, \
            distributed.progress_bar(total=end, initial=start, desc=f"{config.method.name}",
                                     unit="step", enabled=config.progress) as bar:
        for step, idx in mesh_lib.step_batches(int(config.seed), n, bsz, start, end):
            x, y = mesh_lib.global_batch(batch_sh, (train.images, train.labels), idx)
            state, metrics = train_step(state, t_vars, x, y, key, cfg=cfg)
            acc.append(metrics)
            unchecked.append(metrics)
            done = step + 1
            if done % int(config.log_every) == 0 or done == end:
                check_finite(done - len(unchecked) + 1)
                host = jax.device_get(acc)
                now = time.perf_counter()
                row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                row["lr"] = float(setup.schedule(step))
                row["steps_per_sec"] = len(host) / max(now - t_log, 1e-9)
                last = log.write(done, row, prefix="train")
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                acc, t_log = [], now
            if done % spe == 0:
                check_finite(done - len(unchecked) + 1)
                epoch = done // spe
                ev = evaluate(cfg.student, student_vars(state), test,
                              int(config.eval_batch_size), mesh)
                finite.check(done, {"test/loss": ev["loss"]}, what="evaluation")
                meta["history"].append(ev["acc"])
                if ev["acc"] > meta["best_acc"]:
                    meta.update(best_acc=ev["acc"], best_epoch=epoch, best_step=done)
                    for s in best_mngr.all_steps():       # from before a fallback
                        if s >= done:
                            best_mngr.delete(s)
                    checkpoints.save(best_mngr, done, force=True,
                                     meta=dict(meta, step=done, epoch=epoch),
                                     student=student_vars(state))
                log.write(done, {"acc": ev["acc"], "loss": ev["loss"],
                                 "best_acc": meta["best_acc"], "epoch": epoch},
                          prefix="test")
                if epoch % int(config.checkpoint_every_epochs) == 0 or done == end:
                    save(done, state, epoch)
            elif done == end:
                check_finite(done - len(unchecked) + 1)
                save(done, state, done / spe)
            bar.update(1)
    return {"best_acc": meta["best_acc"], "best_epoch": meta["best_epoch"],
            "last_acc": meta["history"][-1] if meta["history"] else None,
            "epoch": end / spe, "step": end,
            "train_loss": last.get("train/loss"), "wall_seconds": time.perf_counter() - t0,
            "num_params": num_params, "steps_per_epoch": spe}


def _main(config, workdir):
    """The CLI's job: train, then print the result dict as one JSON line (process 0)."""
    result = train_and_evaluate(config, workdir)
    if distributed.is_main_process():
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    from jaxinfra.cli import run_job
    run_job(_main, what="distillation config file (configs/kd/*.py)", multi_process=True)
