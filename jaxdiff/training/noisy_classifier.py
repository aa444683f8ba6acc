"""Training of the noise-aware classifier (:mod:`jaxdiff.models.noisy_classifier`).

Adam on softmax cross-entropy of noised images x = x_0 + sigma * eps, sigma log-uniform on
[sigma_min, sigma_max] (default) or log-normal (EDM's ``exp(p_mean + p_std * n)``). A
step's batch indices, sigmas and noise depend only on (seed, step), so an interrupted run
resumed from its checkpoint ends with the same parameters as an uninterrupted one.

Data parallel with ``train(..., mesh=...)`` (``python -m jaxdiff.noisy_classifier`` passes
a "data" mesh of every device of every process): each process draws the step's batch
indices on its CPU backend (the values one device draws; no wait on the training
devices), puts only its rows of the batch on its devices
(:func:`jaxinfra.mesh.global_batch`); the state is kept replicated and jit sums the
gradients; only process 0 writes logs.
"""
from __future__ import annotations

import functools
import time
import zlib
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxdiff.models.noisy_classifier import NoisyClassifier, NoisyClassifierState
from jaxinfra import checkpoints, distributed, finite
from jaxinfra import mesh as mesh_lib
from jaxinfra.metrics import MetricsLog

__all__ = ["NoiseConfig", "TrainState", "DEFAULTS", "SIGMA_DISTS", "sample_sigmas",
           "step_indices", "train_step", "train", "load"]

SIGMA_DISTS = ("loguniform", "lognormal")

#: Default training settings (keys accepted by :func:`train`).
DEFAULTS = {
    "num_classes": 10, "width": 32, "features": 64, "emb_channels": 32,
    "sigma_data": 0.5, "sigma_dist": "loguniform", "sigma_min": 0.002, "sigma_max": 80.0,
    "p_mean": -1.2, "p_std": 1.2, "num_steps": 3000, "batch_size": 128, "lr": 2e-3,
    "seed": 0, "log_every": 100, "checkpoint_every": 1000, "progress": True,
}


class NoiseConfig(NamedTuple):
    """Training noise distribution (hashable: a jit static argument).

    ``loguniform``: log sigma uniform on [log sigma_min, log sigma_max];
    ``lognormal``: sigma = exp(p_mean + p_std * n), n ~ N(0, 1).
    """
    dist: str = "loguniform"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    p_mean: float = -1.2
    p_std: float = 1.2


def sample_sigmas(key, n: int, noise: NoiseConfig):
    """(n,) float32 noise levels drawn from ``noise``."""
    if noise.dist == "loguniform":
        lo, hi = np.log(noise.sigma_min), np.log(noise.sigma_max)
        return jnp.exp(jax.random.uniform(key, (n,), jnp.float32, lo, hi))
    if noise.dist == "lognormal":
        return jnp.exp(noise.p_mean + noise.p_std * jax.random.normal(key, (n,), jnp.float32))
    raise ValueError(f"unknown sigma_dist {noise.dist!r}; valid: {SIGMA_DISTS}")


class TrainState(struct.PyTreeNode):
    """step () int32, params, opt_state: everything a step changes (saved whole)."""
    step: jax.Array
    params: Any
    opt_state: Any


def _step_keys(key, step):
    """(indices, sigmas, noise) keys of update ``step``."""
    return jax.random.split(jax.random.fold_in(key, step), 3)


@functools.partial(jax.jit, static_argnames=("n", "batch_size"))
def step_indices(key, step, *, n: int, batch_size: int):
    """(batch_size,) int32 example indices of update ``step`` (drawn with replacement
    from ``n`` examples; a function of (key, step) only)."""
    return jax.random.randint(_step_keys(key, step)[0], (batch_size,), 0, n, jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "tx", "noise", "state_sharding"),
                   donate_argnums=(0,))
def train_step(state: TrainState, x0, y, key, *, model: NoisyClassifier,
               tx: optax.GradientTransformation, noise: NoiseConfig, state_sharding=None):
    """One Adam step of softmax cross-entropy on a noised batch.

    Args:
      state: the :class:`TrainState` (donated).
      x0: (B, H, W, C) float32 clean images in [-1, 1], the examples
        :func:`step_indices` picks for update ``state.step`` (sharded or not).
      y: (B,) int32 labels.
      key: the run's data key; the step's keys come from ``fold_in(key, state.step)``.
      model, tx, noise: static settings.
      state_sharding: with a mesh, its replicated sharding: the new state is kept there.

    Returns:
      (new_state, metrics) with float32 ``loss`` (nats) and batch ``accuracy``.
    """
    _, k_sigma, k_eps = _step_keys(key, state.step)
    sigma = sample_sigmas(k_sigma, x0.shape[0], noise)
    x = x0 + sigma[:, None, None, None] * jax.random.normal(k_eps, x0.shape, x0.dtype)

    def loss_fn(p):
        lg = model.apply({"params": p}, x, sigma)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(lg, y)), lg

    (loss, lg), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
    if state_sharding is not None:
        new = jax.lax.with_sharding_constraint(new, state_sharding)
    return new, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(lg, -1) == y)}


# ------------------------------------------------------------------- settings, training
def _settings(cfg: Mapping | None, images, labels) -> dict:
    s = dict(DEFAULTS)
    for k, v in dict(cfg or {}).items():
        if k not in DEFAULTS:
            raise ValueError(f"unknown noisy-classifier setting {k!r}; valid: "
                             f"{sorted(DEFAULTS)}")
        s[k] = v
    if s["sigma_dist"] not in SIGMA_DISTS:
        raise ValueError(f"unknown sigma_dist {s['sigma_dist']!r}; valid: {SIGMA_DISTS}")
    if not 0 < float(s["sigma_min"]) < float(s["sigma_max"]):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {s['sigma_min']}, "
                         f"{s['sigma_max']}")
    for k in ("num_steps", "batch_size", "num_classes", "width", "features", "emb_channels",
              "log_every", "checkpoint_every"):
        if int(s[k]) != s[k] or int(s[k]) < 1:
            raise ValueError(f"{k} must be an integer >= 1, got {s[k]!r}")
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[0] == 0:
        raise ValueError("images is empty (0 training images)")
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be a float array (N, H, W, C), got {images.dtype} "
                         f"{images.shape}")
    labels = np.asarray(labels)
    if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an int array of shape ({images.shape[0]},), got "
                         f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= int(s["num_classes"])):
        raise ValueError(f"labels must lie in [0, {s['num_classes']}), got "
                         f"[{labels.min()}, {labels.max()}]")
    out = {k: (float(v) if isinstance(v, float) else v) for k, v in s.items()}
    # What the parameters depend on (a checkpoint with other values is not reused).
    out["image_shape"] = list(images.shape[1:])
    out["num_train"] = int(images.shape[0])
    out["data_crc32"] = zlib.crc32(np.ascontiguousarray(images, np.float32).tobytes()
                                   + np.ascontiguousarray(labels, np.int32).tobytes())
    return out


def _model(s: dict) -> NoisyClassifier:
    return NoisyClassifier(num_classes=int(s["num_classes"]), width=int(s["width"]),
                           features=int(s["features"]), emb_channels=int(s["emb_channels"]),
                           sigma_data=float(s["sigma_data"]))


def _noise(s: dict) -> NoiseConfig:
    return NoiseConfig(str(s["sigma_dist"]), float(s["sigma_min"]), float(s["sigma_max"]),
                       float(s["p_mean"]), float(s["p_std"]))


@functools.lru_cache(maxsize=8)
def _adam(lr: float):
    return optax.adam(lr)


def _init_state(model, s, tx):
    x = jnp.zeros((1,) + tuple(s["image_shape"]), jnp.float32)
    params = jax.jit(model.init)(jax.random.PRNGKey(int(s["seed"])), x,
                                 jnp.ones((1,), jnp.float32))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def train(images, labels, cfg: Mapping | None = None, workdir: str | None = None, *,
          stop_at_step: int | None = None, mesh: jax.sharding.Mesh | None = None):
    """Trains a :class:`NoisyClassifier` (or loads/resumes it from ``workdir``).

    Args:
      images: (N, H, W, C) float clean training images in [-1, 1].
      labels: (N,) int labels in [0, num_classes).
      cfg: settings overriding :data:`DEFAULTS` (a dict or ConfigDict).
      workdir: optional folder for Orbax checkpoints (``workdir/checkpoints``),
        ``metrics.jsonl`` and TensorBoard logs. A finished run with the same settings
        is loaded without training; an unfinished one is resumed; a checkpoint with
        other settings is an error (use another folder).
      stop_at_step: stop after this step (simulates an interruption; a checkpoint is
        saved there).
      mesh: None (one device) or a mesh whose first axis splits every batch
        (``batch_size`` must be a multiple of its size); the same parameters up to
        float32 rounding of the gradient sums.

    Returns:
      ``(NoisyClassifierState, info)`` (with a mesh: parameters on the host); info holds
      the settings, ``steps_trained`` in this call, ``seconds`` and the last logged
      ``loss``/``accuracy`` (on noised batches).

    Raises:
      ValueError: bad settings, images or labels, a batch that does not split over
        ``mesh`` (before any training), or a checkpoint of different settings in
        ``workdir``.
    """
    s = _settings(cfg, images, labels)
    model, noise, tx = _model(s), _noise(s), _adam(float(s["lr"]))
    if mesh is not None:
        mesh_lib.check_batch_split(int(s["batch_size"]), mesh, "batch_size")
    state = _init_state(model, s, tx)
    key = jax.random.fold_in(jax.random.PRNGKey(int(s["seed"])), 7)
    index_key, rep = key, None
    if mesh is not None:       # replicated state; every batch split over the mesh
        rep = mesh_lib.replicated(mesh)
        state, key = jax.device_put((state, key), rep)
        index_key = jax.device_put(index_key, jax.local_devices(backend="cpu")[0])
    start, mngr = 0, None
    if workdir is not None:
        mngr = checkpoints.manager(workdir, save_every=int(s["checkpoint_every"]), keep=2)
        state, start = checkpoints.resume(
            mngr, state, {"settings": s}, what="noisy classifier",
            key=lambda m: checkpoints.settings(m["settings"]), workdir=workdir)
    end = int(s["num_steps"]) if stop_at_step is None else min(int(stop_at_step),
                                                               int(s["num_steps"]))
    data = (np.asarray(images, np.float32), np.asarray(labels, np.int32))
    if mesh is None:
        data = jax.device_put(data)
    n, bs = data[0].shape[0], int(s["batch_size"])
    info = {"settings": s, "steps_trained": max(end - start, 0)}
    t0 = time.perf_counter()
    log = MetricsLog(workdir, start_step=start) if workdir is not None else None
    acc = []
    try:
        with distributed.progress_bar(total=end, initial=min(start, end),
                                      desc="noisy classifier", unit="step",
                                      enabled=s["progress"]) as bar:
            for step in range(start + 1, end + 1):
                idx = step_indices(index_key, step - 1, n=n, batch_size=bs)
                if mesh is None:
                    x0, y = data[0][idx], data[1][idx]
                else:                       # this process's rows of the global batch
                    x0, y = mesh_lib.global_batch(mesh_lib.sharded(mesh), data,
                                                  np.asarray(idx))
                state, m = train_step(state, x0, y, key, model=model, tx=tx, noise=noise,
                                      state_sharding=rep)
                acc.append(m)
                due_save = mngr is not None and (step % int(s["checkpoint_every"]) == 0
                                                 or step == end)
                if step % int(s["log_every"]) == 0 or step == end or due_save:
                    finite.check_rows(step - len(acc) + 1, jax.device_get(acc),
                                      what="noisy-classifier training")
                if step % int(s["log_every"]) == 0 or step == end:
                    host = jax.device_get(acc)
                    row = {k: float(np.mean([r[k] for r in host])) for k in host[0]}
                    info.update(row)
                    if log is not None:
                        log.write(step, row, prefix="noisy_classifier")
                    bar.set_postfix(loss=f"{row['loss']:.3f}")
                    acc = []
                if due_save:
                    checkpoints.save(mngr, step, meta={"settings": s, "step": step},
                                     state=state, force=step == end)
                bar.update(1)
    finally:
        if log is not None:
            log.close()
        if mngr is not None:
            mngr.wait_until_finished()
            mngr.close()
    info["seconds"] = time.perf_counter() - t0
    info["step"] = int(state.step)
    # With a mesh, the parameters come back to the host: the state is then used like a
    # one-device one (each process evaluates on its own).
    params = state.params if mesh is None else jax.device_get(state.params)
    return NoisyClassifierState(model, params, tuple(s["image_shape"])), info


def load(workdir: str) -> NoisyClassifierState:
    """The classifier saved by :func:`train` in ``workdir`` (latest checkpoint).

    Raises:
      FileNotFoundError: no checkpoint there.
    """
    mngr, step = checkpoints.open_latest(
        workdir, what="noisy-classifier",
        hint="train one with jaxdiff.training.noisy_classifier.train(..., workdir=...)")
    meta = checkpoints.read_meta(mngr, step)
    if "data_crc32" not in meta.get("settings", {}):
        mngr.close()
        raise ValueError(f"{workdir!r} holds checkpoints of another job, not a noisy "
                         f"classifier (saved fields: {sorted(meta)})")
    s = meta["settings"]
    model = _model(s)
    target = jax.eval_shape(lambda: _init_state(model, s, _adam(float(s["lr"]))))
    state = checkpoints.read(mngr, step, state=target)["state"]
    mngr.close()
    return NoisyClassifierState(model, state.params, tuple(s["image_shape"]))
