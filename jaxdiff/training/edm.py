"""Trains the EDM-preconditioned :class:`jaxdiff.unet.UNet` denoiser.

    python -m jaxdiff.train --config=configs/edm_digits.py --workdir=runs/edm_digits

Loss (EDM): sigma = exp(P_mean + P_std * n), n ~ N(0, 1); the denoiser sees x + sigma eps
and is scored by lambda(sigma) ||D(x + sigma eps; sigma) - x||^2 with
lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (pixel mean, batch mean).
Adam with linear warmup (then constant or cosine), gradient clipping, EMA parameters.

Writes to ``workdir``:
  checkpoints/<step>/  Orbax items ``state`` (TrainState), ``ema_params`` and ``meta``
                       (model settings, for :func:`load_checkpoint`); every
                       ``checkpoint_every`` steps and at the end, atomically.
  metrics.jsonl        one JSON object per ``log_every`` steps (loss, l2_grads, ...);
                       appended to on resume (steps logged after the last checkpoint of
                       an interrupted run appear twice).
  tb/                  TensorBoard event files (tensorboardX).
  samples/step_*.png   EMA sample grids every ``sample.every`` steps and at the end
                       (process 0 samples them on its first device).

Batches: an epoch is one permutation of the N training images per (seed, epoch)
(:func:`jaxinfra.mesh.epoch_permutation`) cut into S = N // B batches (the incomplete last
one dropped); update s (1-based) trains on batch (s - 1) mod S of epoch (s - 1) // S. Its
noise levels and noise are drawn for the whole batch from ``fold_in(key, s - 1)``. So
every update depends only on (seed, step): an interrupted and resumed run ends with bitwise
the same parameters as an uninterrupted one (on the same machine, software and device
layout).

Data parallel, on one or several processes (:mod:`jaxinfra.distributed`): the batch is
sharded over a 1-D mesh of ``config.num_devices`` devices (axis "data"; 0: every device of
every process, :func:`jaxinfra.mesh.mesh_1d`); parameters, EMA and Adam state are
replicated. Each process reads only its rows of every batch and the global array is
assembled from them (:func:`jaxinfra.mesh.global_batch`). The loss is a global-batch
mean and the random draws do not depend on the sharding (partitionable threefry), so a
run computes the same numbers on any number of processes and devices, to the float32
rounding of the gradient sums. Only process 0 writes metrics, TensorBoard events and
sample grids; every process takes part in the checkpoint saves.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

import jaxdiff
from jaxdiff import schedules
from jaxdiff.models import unet
from jaxinfra import checkpoints, config_checks, distributed, finite
from jaxinfra import datasets as data_lib
from jaxinfra import images as images_lib
from jaxinfra import mesh as mesh_lib
from jaxinfra.metrics import MetricsLog

__all__ = ["TrainState", "LossConfig", "edm_loss", "make_model", "make_optimizer",
           "train_step", "load_data", "load_checkpoint", "sample_images", "save_grid",
           "train_and_evaluate", "make_mesh", "DATA_AXIS"]

DATA_AXIS = "data"     # the mesh axis the batch is sharded over (jaxinfra.mesh.mesh_1d)


class TrainState(struct.PyTreeNode):
    """Everything a training step changes; an immutable pytree (Orbax saves it whole).

    Attributes:
      step: () int32, number of optimizer updates done.
      params: the model parameters being optimized.
      ema_params: exponential moving average of ``params`` (used for sampling).
      opt_state: the optax state.
    """
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation,
               sharding: jax.sharding.Sharding | None = None) -> "TrainState":
        """Step 0, EMA = params, fresh optimizer state, placed by ``sharding`` (default:
        this process's first device; :func:`train_and_evaluate` replicates it over its
        mesh).

        The placement is explicit (committed), like that of a state restored from a
        checkpoint, so fresh and resumed states share one compiled ``train_step``.
        """
        return _state_factory(tx, sharding or _device())(params)


def _device():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


@functools.lru_cache(maxsize=16)
def _state_factory(tx, sharding):
    def create(params):
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          ema_params=jax.tree.map(jnp.copy, params),
                          opt_state=tx.init(params))
    return jax.jit(create, out_shardings=sharding)


class LossConfig(NamedTuple):
    """Static loss/step settings (hashable: a jit static argument; the batch is the one
    :func:`train_step` is given)."""
    p_mean: float = -1.2
    p_std: float = 1.2
    uniform_fraction: float = 0.0  # share of each batch at log-uniform sigma instead
    sigma_min: float = 0.002       # the log-uniform range (the sampling range)
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    num_classes: int = 0         # 0: unconditional
    label_dropout: float = 0.0   # probability of replacing a label with the null label
    ema_decay: float = 0.999


def training_sigmas(key, batch: int, cfg: LossConfig):
    """(batch,) float32 training noise levels: EDM's log-normal exp(P_mean + P_std n).

    With ``cfg.uniform_fraction`` f > 0, each sigma is instead drawn log-uniformly over
    [sigma_min, sigma_max] with probability f: EDM's log-normal puts ~0.2% of its mass
    above sigma = 10, where sampling starts; f = 0.25 puts ~5% there.
    """
    sigma = jnp.exp(cfg.p_mean + cfg.p_std * jax.random.normal(key, (batch,), jnp.float32))
    if cfg.uniform_fraction > 0:
        k_pick, k_log = jax.random.split(jax.random.fold_in(key, 1))
        log_u = jax.random.uniform(k_log, (batch,), jnp.float32, np.log(cfg.sigma_min),
                                   np.log(cfg.sigma_max))
        pick = jax.random.uniform(k_pick, (batch,), jnp.float32) < cfg.uniform_fraction
        sigma = jnp.where(pick, jnp.exp(log_u), sigma)
    return sigma


def edm_loss(model: unet.UNet, params, x, labels, key, cfg: LossConfig):
    """EDM's weighted denoising loss on one batch.

    Args:
      model: the UNet (its ``sigma_data`` should equal ``cfg.sigma_data``).
      params: its parameters.
      x: (B, H, W, C) float32 clean images in [-1, 1].
      labels: (B,) int32 labels or None (unconditional).
      key: PRNG key for sigma, noise and label dropout.
      cfg: loss settings.

    Returns:
      () float32 loss: batch mean of lambda(sigma) * per-pixel-mean squared error.
    """
    k_sigma, k_noise, k_drop = jax.random.split(key, 3)
    b = x.shape[0]
    sigma = training_sigmas(k_sigma, b, cfg)
    noise = jax.random.normal(k_noise, x.shape, jnp.float32) * sigma[:, None, None, None]
    if cfg.num_classes > 0 and labels is not None and cfg.label_dropout > 0:
        drop = jax.random.uniform(k_drop, (b,), jnp.float32) < cfg.label_dropout
        labels = jnp.where(drop, cfg.num_classes, labels)
    if cfg.num_classes <= 0:
        labels = None
    denoised = model.apply({"params": params}, x + noise, sigma, labels)
    weight = (sigma ** 2 + cfg.sigma_data ** 2) / (sigma * cfg.sigma_data) ** 2
    return jnp.mean(weight * jnp.mean(jnp.square(denoised - x), axis=(1, 2, 3)))


@functools.partial(jax.jit, static_argnames=("model", "tx", "cfg", "sharding"),
                   donate_argnums=(0,))
def train_step(state: TrainState, images, labels, key, *, model: unet.UNet,
               tx: optax.GradientTransformation, cfg: LossConfig, sharding=None):
    """One optimizer update on the batch ``(images, labels)``.

    Args:
      state: the TrainState (donated: do not reuse it after the call).
      images: (B, H, W, C) float32 batch in [-1, 1] (:func:`train_and_evaluate` shards it
        over the "data" mesh axis).
      labels: (B,) int32 labels.
      key: the run's base PRNG key; the step's noise comes from
        ``fold_in(key, state.step)``, so it depends only on (key, step) (exact resume).
      model, tx, cfg: static model, optimizer and loss settings.
      sharding: the state's sharding (replicated over the mesh), kept by the new state;
        None: XLA's choice.

    Returns:
      (new_state, metrics) with metrics loss, l2_grads, l2_params, l2_updates (float32).
    """
    k_loss = jax.random.fold_in(key, state.step)
    loss, grads = jax.value_and_grad(edm_loss, argnums=1)(model, state.params, images,
                                                          labels, k_loss, cfg)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # EMA with a warm start: the decay ramps up as (1 + t) / (10 + t) early in training.
    # EMA and norms act on raveled vectors: one kernel each instead of one per leaf.
    t = state.step.astype(jnp.float32)
    decay = jnp.minimum(jnp.float32(cfg.ema_decay), (1.0 + t) / (10.0 + t))
    flat_ema, unravel = ravel_pytree(state.ema_params)
    flat_params = ravel_pytree(params)[0]
    ema = unravel(decay * flat_ema + (1.0 - decay) * flat_params)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema,
                              opt_state=opt_state)
    if sharding is not None:
        new_state = jax.lax.with_sharding_constraint(new_state, sharding)
    norm = lambda tree: jnp.linalg.norm(ravel_pytree(tree)[0])
    metrics = {"loss": loss, "l2_grads": norm(grads), "l2_params": jnp.linalg.norm(flat_params),
               "l2_updates": norm(updates)}
    return new_state, metrics


def make_model(config) -> unet.UNet:
    """The UNet described by ``config.model`` (a ConfigDict or dict)."""
    m = dict(config.model)
    m["channel_mults"] = tuple(m["channel_mults"])
    return unet.UNet(**m)


@functools.lru_cache(maxsize=16)
def _optimizer(lr: float, warmup_steps: int, schedule: str, total_steps: int, b1: float,
               b2: float, eps: float, grad_clip: float) -> optax.GradientTransformation:
    if schedule == "constant":
        lr_fn = optax.warmup_constant_schedule(0.0, lr, max(warmup_steps, 1))
    elif schedule == "cosine":
        lr_fn = optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup_steps, 1),
                                                   max(total_steps, warmup_steps + 1))
    else:
        raise ValueError(f"unknown optim.schedule {schedule!r}; valid: constant, cosine")
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    # flatten: the same elementwise Adam on one concatenated vector instead of ~100 leaves,
    # which halves XLA's compile time of the step on CPU.
    return optax.flatten(optax.chain(*parts, optax.adam(lr_fn, b1=b1, b2=b2, eps=eps)))


def make_optimizer(config) -> optax.GradientTransformation:
    """Adam with linear warmup, then constant or cosine-to-zero over ``config.num_steps``.

    Cached on the settings so repeated runs in one process reuse the compiled step.
    """
    o = config.optim
    return _optimizer(float(o.lr), int(o.warmup_steps), str(o.schedule),
                      int(config.num_steps), float(o.b1), float(o.b2), float(o.eps),
                      float(o.grad_clip))


def loss_config(config) -> LossConfig:
    return LossConfig(p_mean=float(config.loss.p_mean),
                      p_std=float(config.loss.p_std),
                      uniform_fraction=float(config.loss.uniform_fraction),
                      sigma_min=float(config.loss.sigma_min),
                      sigma_max=float(config.loss.sigma_max),
                      sigma_data=float(config.model.sigma_data),
                      num_classes=int(config.model.num_classes),
                      label_dropout=float(config.label_dropout),
                      ema_decay=float(config.ema_decay))


def load_data(config, split: str = "train"):
    """Training images (N, H, W, C) float32 in [-1, 1] and labels (N,) int32.

    Raises:
      ValueError: the images do not have the shape ``config.model`` expects, or a
        conditional model's ``num_classes`` does not cover the labels. Unknown or
        missing data sets raise the loader's error (:func:`jaxdiff.data.load`).
    """
    kwargs = {"max_examples": int(config.max_examples) or None}
    if config.dataset.strip().lower().replace("-", "_") != "digits":  # digits: no splits
        kwargs["split"] = split
    images, labels = data_lib.load(config.dataset, **kwargs)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    m = config.model
    expected = (m.image_size, m.image_size, m.in_channels)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(f"data set {config.dataset!r} has images of shape "
                         f"{tuple(images.shape[1:])} but config.model expects {expected} "
                         f"(image_size={m.image_size}, in_channels={m.in_channels})")
    if m.num_classes > 0 and labels.size and labels.max() >= m.num_classes:
        raise ValueError(f"labels go up to {labels.max()} but config.model.num_classes is "
                         f"{m.num_classes}")
    return images, labels


def _model_meta(config) -> dict:
    """What a checkpoint records: the model (to rebuild it), the data set, and every
    setting that changes results (compared on resume)."""
    m = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config.model).items()}
    return {"model": m, "dataset": config.dataset, "seed": int(config.seed),
            "settings": checkpoints.settings(config, ignore=SETTINGS_IGNORE)}


#: Config fields that do not change what a run computes, besides
#: :data:`jaxinfra.checkpoints.RUN_ONLY_FIELDS`: the sample grids, the Frechet-distance
#: evaluation (python -m jaxdiff.fid) and the device count (the same numbers to float32
#: rounding of the gradient sums).
SETTINGS_IGNORE = ("sample", "fid", "num_devices")


def check_config(config) -> None:
    """ValueError naming the first bad loop setting (before any data is loaded)."""
    for name in ("num_steps", "batch_size", "log_every", "checkpoint_every"):
        config_checks.int_at_least(config, name, 1)
    config_checks.int_at_least(config, "num_devices", 0,
                               what="devices the batch is split over; 0: all")
    fraction = config.loss.uniform_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 <= fraction < 1:
        raise ValueError(f"config.loss.uniform_fraction must be a number in [0, 1), got "
                         f"{fraction!r}")
    if not 0 < config.loss.sigma_min < config.loss.sigma_max:
        raise ValueError(f"config.loss needs 0 < sigma_min < sigma_max, got "
                         f"{config.loss.sigma_min!r}, {config.loss.sigma_max!r}")
    if 0 < int(config.max_examples) < int(config.batch_size):
        raise ValueError(f"config.batch_size={config.batch_size} is larger than the "
                         f"{config.max_examples} training images (config.max_examples)")


def _manager(workdir: str, config=None, read_only: bool = False):
    if config is None:
        return checkpoints.manager(workdir, read_only=read_only)
    return checkpoints.manager(workdir, save_every=int(config.checkpoint_every),
                               keep=int(config.keep_checkpoints), read_only=read_only)


def abstract_params(model: unet.UNet):
    """Shapes/dtypes of ``model``'s params with this process's first device as sharding,
    no compute."""
    shapes = jax.eval_shape(functools.partial(unet.init, model), jax.random.PRNGKey(0))
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_device()),
                        shapes)


def load_checkpoint(workdir: str, step: int | None = None):
    """Loads a trained denoiser: ``(model, ema_params, meta)``.

    Args:
      workdir: a training workdir (holding ``checkpoints/``).
      step: the checkpoint step; None for the latest.

    Raises:
      FileNotFoundError: no checkpoint in ``workdir``.
    """
    mngr, step = checkpoints.open_latest(
        workdir, what="EDM model", step=step,
        hint=f"train first with python -m jaxdiff.train --config=... --workdir={workdir}")
    meta = checkpoints.read_meta(mngr, step)
    if not {"model", "dataset", "settings"} <= set(meta) or "channel_mults" not in meta["model"]:
        mngr.close()
        raise ValueError(f"{workdir!r} holds checkpoints of another job, not an EDM model "
                         f"(saved fields: {sorted(meta)}); pass the --workdir of python -m "
                         "jaxdiff.train")
    m = dict(meta["model"])
    m["channel_mults"] = tuple(m["channel_mults"])
    model = unet.UNet(**m)
    ema = checkpoints.read(mngr, step, ema_params=abstract_params(model))["ema_params"]
    mngr.close()
    return model, ema, dict(meta, step=int(step))


def sample_images(model: unet.UNet, params, num: int, *, key, solver: str = "heun",
                  num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0, sigmas=None, labels=None, batch_size: int = 0,
                  **options):
    """Samples ``num`` images with :func:`jaxdiff.sample` on the EDM polynomial schedule.

    Args:
      model, params: the denoiser.
      num: number of images.
      key: PRNG key of the initial noise x_T = sigma_max * z.
      solver, num_steps: solver name and number of timestamps (heun 18: 34 NFE).
      sigma_min, sigma_max, rho: the polynomial (Karras) schedule.
      sigmas: an explicit (N,) schedule instead (then num_steps etc. are ignored);
        x_T = sigmas[0] * z.
      labels: (num,) int labels for a conditional model (None: unconditional).
      batch_size: sample in chunks of this size (0: all at once).
      **options: solver options, e.g. ``max_order=4`` or ``afs=True``.

    Returns:
      (num, H, W, C) float32 numpy array.
    """
    if sigmas is None:
        sigmas = schedules.get("polynomial", num_steps, sigma_min, sigma_max, rho=rho)
    sigmas = jnp.asarray(sigmas, jnp.float32)
    shape = (num, model.image_size, model.image_size, model.in_channels)
    x_T = sigmas[0] * jax.random.normal(key, shape, jnp.float32)
    if labels is not None and np.shape(labels) != (num,):
        raise ValueError(f"labels must have shape ({num},), got {np.shape(labels)}")
    chunk = batch_size or num
    outs = []
    for lo in range(0, num, chunk):
        lab = None if labels is None else jnp.asarray(labels[lo:lo + chunk], jnp.int32)
        x = x_T[lo:lo + chunk]
        fn = unet.make_denoiser(model, params, lab)
        outs.append(np.asarray(jaxdiff.sample(fn, x, sigmas, solver=solver, **options)))
    return np.concatenate(outs, axis=0)


def save_grid(images, path: str, scale: int = 4):
    """Writes a PNG grid of (N, H, W, C) images in [-1, 1] (see
    :func:`jaxinfra.images.save_image_grid`); returns the uint8 grid."""
    return images_lib.save_image_grid(images, path, scale=scale)


def _sample_grid(config, model, ema_params, step, workdir, log):
    """Samples and writes ``samples/step_<step>.png`` (process 0 only; others return).

    ``ema_params`` may be replicated over a mesh: the sampler runs on this process's
    first device's copy."""
    if not distributed.is_main_process():
        return
    ema_params = jax.tree.map(lambda a: a.addressable_data(0), ema_params)
    s = config.sample
    labels = None
    if model.num_classes > 0:
        labels = np.arange(s.num_images) % model.num_classes
    imgs = sample_images(model, ema_params, int(s.num_images),
                         key=jax.random.PRNGKey(int(config.seed) + 1), solver=s.solver,
                         num_steps=int(s.num_steps), labels=labels)
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    g = save_grid(imgs, os.path.join(workdir, "samples", f"step_{step:06d}.png"),
                  scale=max(1, 64 // model.image_size))
    log.image(step, "samples", g)


def make_mesh(config) -> jax.sharding.Mesh:
    """The 1-D "data" mesh of ``config.num_devices`` devices (0: every device of every
    process).

    Raises:
      ValueError: more devices than there are, or ``config.batch_size`` not a multiple
        of the mesh size.
    """
    mesh = mesh_lib.mesh_1d(DATA_AXIS, int(config.num_devices))
    mesh_lib.check_batch_split(config.batch_size, mesh, hint=" (or set config.num_devices)")
    return mesh


def train_and_evaluate(config, workdir: str, *, stop_at_step: int | None = None) -> dict:
    """Trains (or resumes) and returns the last logged metrics.

    Every process of a multi-process job calls it (see the module docstring).

    Args:
      config: a ConfigDict as in ``configs/edm_digits.py``.
      workdir: output folder; an existing checkpoint there is resumed.
      stop_at_step: stop early after this step (simulates an interruption: the learning
        rate schedule still follows ``config.num_steps``). A checkpoint is saved there.

    Returns:
      dict with step, loss (mean over the last log interval), wall_seconds, num_params,
      steps_per_epoch, num_devices.
    """
    check_config(config)
    mesh = make_mesh(config)
    os.makedirs(workdir, exist_ok=True)
    images, labels = load_data(config)
    n, bsz = images.shape[0], int(config.batch_size)
    spe = mesh_lib.steps_per_epoch(n, bsz)
    model = make_model(config)
    tx = make_optimizer(config)
    cfg = loss_config(config)
    key = jax.random.PRNGKey(int(config.seed))
    replicated, batch_sh = mesh_lib.replicated(mesh), mesh_lib.sharded(mesh)
    mngr = _manager(workdir, config)
    meta = _model_meta(config)
    params = unet.init(model, jax.random.fold_in(key, 1))
    state, start = checkpoints.resume(mngr, TrainState.create(params, tx, replicated), meta,
                                      what="model", key=lambda m: m["settings"],
                                      workdir=workdir, extend_keys=("num_steps",),
                                      extend=bool(config.get("extend", False)))
    end = int(config.num_steps) if stop_at_step is None else min(int(stop_at_step),
                                                                 int(config.num_steps))
    data_key = jax.random.fold_in(key, 2)

    last = {"step": start}
    acc, t_log, t0 = [], time.perf_counter(), time.perf_counter()
    unchecked = []      # metrics of steps not yet checked for NaN/inf: (first step, rows)

    def check_finite():
        if unchecked:
            finite.check_rows(unchecked[0][0], jax.device_get([m for _, m in unchecked]),
                              what="EDM training")
            unchecked.clear()

    with MetricsLog(workdir, start_step=start) as log, \
            distributed.progress_bar(total=end, initial=start, desc="train", unit="step",
                                     enabled=config.progress) as bar:
        for i, idx in mesh_lib.step_batches(int(config.seed), n, bsz, start, end):
            step = i + 1
            x, y = mesh_lib.global_batch(batch_sh, (images, labels), idx)
            state, metrics = train_step(state, x, y, data_key, model=model, tx=tx, cfg=cfg,
                                        sharding=replicated)
            acc.append(metrics)
            unchecked.append((step, metrics))
            if step % config.log_every == 0 or step == end:
                check_finite()
                host = jax.device_get(acc)
                now = time.perf_counter()
                row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                row["steps_per_sec"] = len(host) / max(now - t_log, 1e-9)
                row["wall_seconds"] = now - t0
                row = log.write(step, row, prefix="")
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                acc, t_log, last = [], now, row
            if step % config.checkpoint_every == 0 or step == end:
                check_finite()
                checkpoints.save(mngr, step, meta=dict(meta, step=step), state=state,
                                 ema_params=state.ema_params, force=step == end)
            if config.sample.every and (step % config.sample.every == 0 or step == end):
                _sample_grid(config, model, state.ema_params, step, workdir, log)
            bar.update(1)
    mngr.wait_until_finished()
    mngr.close()
    last = dict(last, wall_seconds=time.perf_counter() - t0,
                num_params=unet.count_params(state.params), steps_per_epoch=spe,
                num_devices=mesh.size)
    return last
