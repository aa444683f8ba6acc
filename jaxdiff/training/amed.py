"""Training of AMED predictors (reference: training/loss.py) and their checkpoints.

The predictor and its sampler live in :mod:`jaxdiff.amed`; this module fits a
predictor against teacher trajectories and saves/loads it with :mod:`jaxinfra.checkpoints`.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff import callables
from jaxdiff.amed import (
    SINGLE_STEP,
    AMEDPredictor,
    init,
    init_state,
    make_step,
    model_of,
    rollout,
    sub_orders,
)
from jaxdiff.sampling import sample as ode_sample
from jaxdiff.solvers.base import afs_evaluator, model_evaluator
from jaxinfra import checkpoints

__all__ = ["train", "save", "load"]


def _teacher_points(denoise_fn, x_T, teacher_sigmas, teacher, teacher_options, stride):
    _, traj = ode_sample(denoise_fn, x_T, teacher_sigmas, solver=teacher,
                         return_trajectory=True, **teacher_options)
    return traj.xs[::stride]


@functools.partial(jax.jit, static_argnames=("static", "fn_def", "feat_def", "use_afs", "tx"))
def _update(params, opt_state, x, state, target, s, s_next, orders, fn_leaves, feat_leaves,
            afs_mean, *, static, fn_def, feat_def, use_afs, tx):
    """One Adam update on the loss of one student step; denoiser leaves are traced."""
    model = model_of(callables.join(fn_def, fn_leaves))
    step = make_step(static, model, callables.join(feat_def, feat_leaves))

    def loss_fn(p):
        ev = (functools.partial(afs_evaluator, mean=afs_mean) if use_afs
              else model_evaluator(model))
        x_next, st, _ = step(p, ev, x, state, s, s_next, orders, use_afs)
        diff = (x_next - target).reshape(x.shape[0], -1)
        return jnp.sum(diff ** 2) / x.shape[0], (x_next, st)

    (loss, (x_next, st)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.tree.map(jnp.nan_to_num, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, x_next, st


@functools.partial(jax.jit, static_argnames=("static", "fn_def", "feat_def", "tx"))
def _trajectory_update(params, opt_state, x_T, targets, sigmas, node_weights, fn_leaves,
                       feat_leaves, afs_mean, *, static, fn_def, feat_def, tx):
    """One Adam update on the weighted sum of the per-step losses (weights (N - 1,)),
    through the student's own run."""
    denoise_fn = callables.join(fn_def, fn_leaves)
    feature_fn = callables.join(feat_def, feat_leaves)

    def loss_fn(p):
        xs = rollout(static.replace(params=p, afs_mean=afs_mean), denoise_fn, feature_fn,
                     x_T, sigmas)
        diff = (xs[1:] - targets[1:]).reshape(xs.shape[0] - 1, x_T.shape[0], -1)
        per_step = jnp.sum(diff ** 2, axis=(1, 2)) / x_T.shape[0]
        return jnp.sum(node_weights * per_step), per_step

    (_, per_step), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.tree.map(jnp.nan_to_num, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, per_step


def _stepwise_updates(params, opt_state, x_b, targets, sigmas, orders, predictor, static,
                      fn_leaves, feat_leaves, fn_def, feat_def, tx):
    """The reference's rule on one batch: one update per step, in order, each with the
    steps before it frozen. Returns (params, opt_state, the N - 1 step losses)."""
    x, state = x_b, init_state(predictor, x_b, sigmas[0])
    losses = []
    for i in range(sigmas.shape[0] - 1):
        params, opt_state, loss, x_next, state = _update(
            params, opt_state, x, state, targets[i + 1], sigmas[i], sigmas[i + 1],
            orders[i], fn_leaves, feat_leaves, predictor.afs_mean, static=static,
            fn_def=fn_def, feat_def=feat_def, use_afs=predictor.afs and i == 0, tx=tx)
        losses.append(float(loss))
        x = targets[i + 1] if predictor.base in SINGLE_STEP else jax.lax.stop_gradient(x_next)
        state = jax.lax.stop_gradient(state)
    return params, opt_state, losses


OBJECTIVES = ("stepwise", "trajectory", "final")


def train(denoise_fn, x_T, sigmas, *, base: str = "ipndm", feature_fn=None,
          feature_dim: int = 64, teacher: str | None = None, teacher_sigmas=None,
          teacher_points: int = 2, teacher_options=None, batch_size: int = 128,
          epochs: int = 1, learning_rate: float = 5e-3, scale_dir: float = 0.01,
          scale_time: float = 0.0, afs: bool = True, afs_mean=None, seed: int = 0,
          objective: str = "stepwise", log_fn=None, **base_options):
    """Train an AMED predictor against teacher trajectories (reference: training/loss.py).

    For every batch of noise the teacher solves on a finer grid (``teacher_points`` extra
    points between student nodes, so every (M+1)-th teacher point is a student node); then
    for each step n the student takes one step and one Adam update minimises
    sum((x_{n+1} - x_{n+1}^teacher)^2) / B, with gradients through one frozen denoiser
    call. Single-step students (amed, euler, dpm2) restart each step from the teacher
    point; multistep students (ipndm, dpmpp) continue from their own output.

    ``objective="trajectory"`` (ours, not the reference's) minimises the sum of the same
    per-step losses jointly, with gradients through the student's whole run from x_T
    (its multistep history included): one Adam update per batch instead of N - 1, with
    the same teacher calls; backpropagating through every denoiser call of the run makes
    it slower (digits U-Net, NFE 8: 453 s against 140 s, on shared cores). The stepwise
    rule fits each step with the steps before it frozen, so a step may fit its target by
    leaving the multistep history in a state that spoils the steps after it: on the
    digits U-Net at NFE 8 the stepwise plugin reaches the teacher's node 2 to 0.20 and
    then ends 1.43 from it, above its own untrained start (0.890 from the reference,
    trained 1.449, trajectory 0.668, plain iPNDM 0.704;
    ``benchmarks/amed_plugin_diagnosis.py``).

    ``objective="final"`` (ours) is the same whole-run update on the last node's loss
    alone: the teacher's intermediate states are then not targets, only its end point,
    which is what the sampler is judged by. The summed loss is dominated by the middle
    nodes, where the student's distance to the teacher is largest (digits U-Net, NFE 10:
    squared errors 0.4/1.8/3.5/7.6/5.7 at nodes 1-5 before training), and it bought them
    at the end point's expense: final error 1.04 (trajectory) against 0.363 (final),
    plain iPNDM 0.502, untrained plugin 0.475.

    For the single-step AMED-Solver the stepwise rule starts every step from the
    teacher's point (teacher forcing), while sampling starts it from its own state; the
    whole-run objectives train it on its own run. Digits U-Net, last node only: better
    than the stepwise rule at NFE 4-9 (NFE 6: 1.43 -> 1.11), worse at NFE 10 (0.516 ->
    0.632), three to four times the training time.

    Args:
      denoise_fn: the frozen denoiser, ``denoise_fn(x, sigma (B,))``.
      x_T: (M, ...) noise at ``sigmas[0]`` (e.g. sigma_max * z); no data is used.
      sigmas: (N,) the student schedule.
      base: "amed" (AMED-Solver) or a plugin base: euler, ipndm, dpm2, dpmpp.
      feature_fn: ``feature_fn(x, sigma (B,)) -> (B, F)`` bottleneck features, or None
        (zeros: the predictor learns a sample-independent schedule).
      teacher: teacher solver (default: heun for amed, else the base solver).
      teacher_sigmas: the teacher grid; default refines each student interval uniformly in
        log sigma with ``teacher_points`` extra points. Pass ``schedules.get(name,
        (M + 1) * (N - 1) + 1)`` to reproduce the reference's same-formula teacher.
      batch_size, epochs: trajectories per update round and passes over ``x_T``.
      learning_rate: Adam step size (reference 5e-3, betas 0.9/0.999, eps 1e-8).
      scale_dir, scale_time: ranges of the direction and time scales (0 disables).
      afs: analytical first step (the reference's AMED default).
      afs_mean: with ``afs``, the data mean the first step centres on (None: 0, the
        reference); stored in the predictor and used when it samples.
      objective: "stepwise" (the reference's greedy rule), "trajectory" or "final"
        (above).
      log_fn: optional ``log_fn(dict)`` called after each batch: ``loss_per_step`` (N - 1
        mean squared distances to the teacher's nodes, before the batch's updates for
        the whole-run objectives) and ``loss``, their mean (for "final" not the
        quantity it minimises, which is the last entry).
      **base_options: options of the base solver (e.g. ``max_order=4``).

    Returns:
      The trained :class:`AMEDPredictor`.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown AMED training objective {objective!r}; valid: "
                         f"{OBJECTIVES}")
    sigmas = jnp.asarray(sigmas, x_T.dtype)
    n = int(sigmas.shape[0])
    predictor = init(jax.random.PRNGKey(seed), base=base, num_steps=n, feature_dim=feature_dim,
                     scale_dir=scale_dir, scale_time=scale_time, afs=afs,
                     afs_mean=None if afs_mean is None else jnp.asarray(afs_mean, x_T.dtype),
                     **base_options)
    teacher = teacher or ("heun" if base == "amed" else ("dpm2" if base == "dpm2" else base))
    teacher_options = dict(teacher_options or {})
    stride = teacher_points + 1
    if teacher_sigmas is None:
        log_s = jnp.log(sigmas)
        frac = jnp.arange(stride) / stride
        fine = log_s[:-1, None] + frac * (log_s[1:] - log_s[:-1])[:, None]
        teacher_sigmas = jnp.exp(jnp.concatenate([fine.reshape(-1), log_s[-1:]]))
    teacher_sigmas = jnp.asarray(teacher_sigmas, x_T.dtype)
    if teacher_sigmas.shape[0] != stride * (n - 1) + 1:
        raise ValueError(f"teacher_sigmas must have (teacher_points + 1) * (N - 1) + 1 = "
                         f"{stride * (n - 1) + 1} entries, got {teacher_sigmas.shape[0]}")
    tx = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
    params, opt_state = predictor.params, tx.init(predictor.params)
    static = predictor.replace(params=None, afs_mean=None)  # hashable: what make_step reads
    fn_def, fn_leaves = callables.split(denoise_fn)
    feat_def, feat_leaves = callables.split(feature_fn)
    orders = jnp.asarray(sub_orders(predictor))
    node_weights = (jnp.ones((n - 1,), x_T.dtype) if objective == "trajectory"  # "final":
                    else jnp.zeros((n - 1,), x_T.dtype).at[-1].set(1.0))   # last node only
    num_batches = max(1, -(-x_T.shape[0] // batch_size))
    updates = 0
    for epoch in range(epochs):
        for b in range(num_batches):
            x_b = x_T[b * batch_size:(b + 1) * batch_size]
            targets = _teacher_points(denoise_fn, x_b, teacher_sigmas, teacher,
                                      teacher_options, stride)
            if objective != "stepwise":   # one update; the per-step losses before it
                params, opt_state, per_step = _trajectory_update(
                    params, opt_state, x_b, targets, sigmas, node_weights, fn_leaves,
                    feat_leaves, predictor.afs_mean, static=static, fn_def=fn_def,
                    feat_def=feat_def, tx=tx)
                updates += 1
                losses = [float(v) for v in per_step]
            else:
                params, opt_state, losses = _stepwise_updates(
                    params, opt_state, x_b, targets, sigmas, orders, predictor, static,
                    fn_leaves, feat_leaves, fn_def, feat_def, tx)
                updates += n - 1
            if log_fn is not None:
                log_fn({"epoch": epoch, "batch": b, "updates": updates,
                        "loss_per_step": losses, "loss": float(np.mean(losses))})
    return predictor.replace(params=params, num_updates=updates)


# --------------------------------------------------------------------------- checkpoints

def save(directory: str, predictor: AMEDPredictor) -> None:
    """Writes the parameters and the settings to ``directory`` (one checkpoint, step 0)."""
    meta = {"base": predictor.base, "num_steps": predictor.num_steps,
            "base_options": dict(predictor.base_options), "feature_dim": predictor.feature_dim,
            "scale_dir": predictor.scale_dir, "scale_time": predictor.scale_time,
            "afs": predictor.afs, "num_updates": predictor.num_updates,
            "afs_mean": (None if predictor.afs_mean is None
                         else np.asarray(predictor.afs_mean, np.float64).tolist()),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    mngr = checkpoints.manager(directory, subdir="", keep=1)
    checkpoints.save(mngr, 0, meta=meta, params=predictor.params, force=True)
    mngr.close()


def load(directory: str) -> AMEDPredictor:
    """Reads a predictor written by :func:`save`; a clear error if there is none."""
    mngr, step = checkpoints.open_latest(
        directory, subdir="", what="AMED predictor",
        hint="train one with python -m jaxdiff.amed_train --config=configs/amed_digits.py")
    meta = checkpoints.read_meta(mngr, step)
    template = init(jax.random.PRNGKey(0), base=meta["base"], num_steps=meta["num_steps"],
                    feature_dim=meta["feature_dim"], scale_dir=meta["scale_dir"],
                    scale_time=meta["scale_time"], afs=meta["afs"],
                    afs_mean=meta.get("afs_mean"), **meta["base_options"])
    params = checkpoints.read(mngr, step, params=template.params)["params"]
    mngr.close()
    return template.replace(params=params, num_updates=meta["num_updates"])
