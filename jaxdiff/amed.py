"""AMED-Solver and AMED-Plugin: a tiny network predicts where to take the mean direction.

For each step sigma_n -> sigma_{n+1} a ~9k-parameter predictor reads the denoiser's
bottleneck feature (zeros for denoisers without one, or under AFS) and sigma embeddings and
outputs, per sample,
  r in (0, 1):            the intermediate time s_n = sigma_{n+1}^r sigma_n^(1-r);
  c in [1-a, 1+a]:        a scale of the step direction (a = ``scale_dir``, 0 disables);
  t in [1-b, 1+b]:        a scale of the denoiser time at s_n (b = ``scale_time``).
AMED-Solver (``base="amed"``) takes x + c (sigma' - sigma) d(x_mid, s); the plugin splits each
base step of euler / ipndm / dpm2 / dpmpp into sigma -> s -> sigma'. Every step costs two
denoiser calls (one less with AFS). Reference: amed-solver-main/solvers_amed.py.

    predictor = jaxdiff.amed.train(denoise_fn, x_T, sigmas, base="ipndm")
    x0 = jaxdiff.sample(denoise_fn, x, sigmas, solver="ipndm", amed=predictor)
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxdiff.solvers.base import (afs_evaluator, check_order, combine, dynamic_thresholding,
                                  model_evaluator, push)
from jaxdiff.solvers.dpmpp import dpmpp_coefficients
from jaxdiff.solvers.multistep import _AB

BASES = ("amed", "euler", "ipndm", "dpm2", "dpmpp")
SINGLE_STEP = ("amed", "euler", "dpm2")       # restart from the teacher point in training
_BASE_OPTIONS = {"amed": (), "euler": (), "dpm2": (), "ipndm": ("max_order",),
                 "dpmpp": ("max_order", "predict_x0", "lower_order_final", "thresholding")}


# ------------------------------------------------------------------------------ network

def positional_embedding(sigma, channels: int = 8, max_positions: float = 1e4):
    """EDM-style sinusoidal embedding of raw sigma, (B,) -> (B, channels), [sin, cos]."""
    half = channels // 2
    freqs = (1.0 / max_positions) ** (jnp.arange(half, dtype=sigma.dtype) / (half - 1))
    arg = sigma[:, None] * freqs
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=1)


_kaiming = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class Predictor(nn.Module):
    """The AMED predictor: feature (B, F), sigma_n (B,), sigma_{n+1} (B,) -> r, c, t (B,)."""
    scale_dir: float = 0.01
    scale_time: float = 0.0
    hidden: int = 128

    @nn.compact
    def __call__(self, feature, sigma_cur, sigma_next):
        dense = functools.partial(nn.Dense, kernel_init=_kaiming,
                                  bias_init=nn.initializers.zeros)
        time_map = nn.Dense(8, kernel_init=nn.initializers.xavier_uniform(), name="map_time")
        emb = [nn.silu(time_map(positional_embedding(s))) for s in (sigma_cur, sigma_next)]
        f = dense(4)(nn.silu(dense(self.hidden)(feature)))
        h = jnp.concatenate([f] + emb, axis=1)
        r = nn.sigmoid(dense(1, name="fc_r")(h))[:, 0]
        ones = jnp.ones_like(r)
        c = ones if self.scale_dir == 0 else (
            nn.sigmoid(dense(1, name="fc_scale_dir")(h))[:, 0] * 2 * self.scale_dir
            + 1 - self.scale_dir)
        t = ones if self.scale_time == 0 else (
            nn.sigmoid(dense(1, name="fc_scale_time")(h))[:, 0] * 2 * self.scale_time
            + 1 - self.scale_time)
        return r, c, t


@struct.dataclass
class AMEDPredictor:
    """A trained predictor with what it was trained for (all but ``params`` static).

    Attributes:
      params: Flax parameters of :class:`Predictor`.
      base: "amed" (AMED-Solver) or the plugin's base solver.
      num_steps: timestamps of the student schedule it was trained on.
      base_options: sorted (name, value) pairs of the base solver's options.
      feature_dim: length F of the bottleneck feature.
      scale_dir, scale_time: the ranges a and b of the direction and time scales.
      afs: analytical first step.
      num_updates: Adam updates it received (0 = untrained).
    """
    params: Any
    base: str = struct.field(pytree_node=False)
    num_steps: int = struct.field(pytree_node=False)
    base_options: tuple = struct.field(pytree_node=False, default=())
    feature_dim: int = struct.field(pytree_node=False, default=64)
    scale_dir: float = struct.field(pytree_node=False, default=0.01)
    scale_time: float = struct.field(pytree_node=False, default=0.0)
    afs: bool = struct.field(pytree_node=False, default=True)
    num_updates: int = struct.field(pytree_node=False, default=0)

    @property
    def module(self) -> Predictor:
        return Predictor(self.scale_dir, self.scale_time)


def init(key, *, base: str, num_steps: int, feature_dim: int = 64, scale_dir: float = 0.01,
         scale_time: float = 0.0, afs: bool = True, **base_options) -> AMEDPredictor:
    """An untrained predictor (8,950 parameters for F = 64 with r and c heads)."""
    _check_config(base, num_steps, base_options)
    module = Predictor(scale_dir, scale_time)
    z = jnp.zeros((1,), jnp.float32)
    params = module.init(key, jnp.zeros((1, feature_dim), jnp.float32), z + 1.0, z + 0.5)
    return AMEDPredictor(params, base, int(num_steps), tuple(sorted(base_options.items())),
                         int(feature_dim), float(scale_dir), float(scale_time), bool(afs))


def _check_config(base, num_steps, base_options):
    if base not in BASES:
        raise ValueError(f"unknown AMED base solver {base!r}; valid: {BASES}")
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2 (timestamps), got {num_steps!r}")
    unknown = sorted(set(base_options) - set(_BASE_OPTIONS[base]))
    if unknown:
        raise ValueError(f"AMED base {base!r} does not take option(s) {unknown}; valid: "
                         f"{list(_BASE_OPTIONS[base])}")
    if "max_order" in base_options:
        check_order(base, base_options["max_order"], 1, 4 if base == "ipndm" else 3)


def num_params(predictor: AMEDPredictor) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(predictor.params))


# ----------------------------------------------------------------------------- stepping

def _sub_orders(predictor: AMEDPredictor) -> np.ndarray:
    """Static orders of the two sub-steps of every base step, (N-1, 2)."""
    n, opts = predictor.num_steps, dict(predictor.base_options)
    k = np.arange(2 * (n - 1)).reshape(n - 1, 2)              # sub-step index
    if predictor.base == "ipndm":
        return np.minimum(opts.get("max_order", 4), k + 1)
    if predictor.base == "dpmpp":
        max_order, total, cur = opts.get("max_order", 3), 2 * n - 1, k + 1
        if not opts.get("lower_order_final", True):
            return np.minimum(max_order, cur)
        return np.where(cur < max_order, cur, np.minimum(max_order, total - cur))
    return np.ones((n - 1, 2), int)


def _init_state(predictor, x, sigma0):
    if predictor.base == "ipndm":
        return jnp.zeros((dict(predictor.base_options).get("max_order", 4),) + x.shape, x.dtype)
    if predictor.base == "dpmpp":
        hist_s = sigma0 * jnp.array([2.0, 3.0, 5.0], x.dtype)[:, None] * jnp.ones(
            (3, x.shape[0]), x.dtype)                          # placeholders, never selected
        return jnp.zeros((3,) + x.shape, x.dtype), hist_s
    return ()


def _dpmpp_sub_step(x, hist_m, hist_s, target, order, predict_x0, scale=1.0):
    """One DPM-Solver++ update with per-sample sigmas; the order is traced."""
    log_s = jnp.log(hist_s[0])
    h = log_s - jnp.log(target)
    q1, q2 = ((log_s - jnp.log(hist_s[k])) / h for k in (1, 2))
    a, tables = dpmpp_coefficients(hist_s[0], target, q1, q2, predict_x0)
    c = jnp.where(order == 1, tables[1], jnp.where(order == 2, tables[2], tables[3]))
    bc = lambda v: jnp.reshape(v, (-1,) + (1,) * (x.ndim - 1))
    terms = sum(bc(c[:, k]) * hist_m[k] for k in range(3))
    return bc(a) * x + bc(jnp.asarray(scale, x.dtype)) * terms


def _make_step(predictor: AMEDPredictor, model: Callable, feature_fn: Callable | None):
    """step(params, evaluate, x, state, s, s_next, orders, use_afs) -> (x', state, D)."""
    base, opts = predictor.base, dict(predictor.base_options)
    predict_x0 = opts.get("predict_x0", True)
    threshold = opts.get("thresholding", False)
    module = predictor.module

    def output(denoised, d):
        if base != "dpmpp" or not predict_x0:
            return d
        return dynamic_thresholding(denoised) if threshold else denoised

    def step(params, evaluate, x, state, s, s_next, orders, use_afs):
        batch = x.shape[0]
        bc = lambda v: v.reshape((batch,) + (1,) * (x.ndim - 1))
        s_b = jnp.full((batch,), s, x.dtype)
        s_next_b = jnp.full((batch,), s_next, x.dtype)
        denoised, d = evaluate(x, s)
        if use_afs or feature_fn is None:
            feat = jnp.zeros((batch, predictor.feature_dim), x.dtype)
        else:
            feat = jax.lax.stop_gradient(feature_fn(x, s_b)).reshape(batch, -1)
        r, c, t_scale = (v.astype(x.dtype) for v in module.apply(params, feat, s_b, s_next_b))
        s_mid = s_next ** r * s ** (1 - r)                     # (B,)

        def eval_mid(x_mid):
            den = model(x_mid, t_scale * s_mid)
            return den, (x_mid - den) / bc(s_mid)

        if base in ("amed", "euler", "dpm2"):
            x_mid = x + bc(s_mid - s) * d
            _, d_mid = eval_mid(x_mid)
            if base == "amed":
                x_next = x + bc(c * (s_next - s)) * d_mid
            elif base == "euler":
                x_next = x_mid + bc(c * (s_next - s_mid)) * d_mid
            else:
                w = bc(1 / (2 * r))
                x_next = x + bc(c * (s_next - s)) * (w * d_mid + (1 - w) * d)
            return x_next, state, denoised
        if base == "ipndm":
            ab = jnp.asarray(_AB, x.dtype)[orders - 1, :state.shape[0]]          # (2, H)
            hist = push(state, d)
            x_mid = x + bc(s_mid - s) * combine(ab[0], hist)
            _, d_mid = eval_mid(x_mid)
            hist = push(hist, d_mid)
            x_next = x_mid + bc(c * (s_next - s_mid)) * combine(ab[1], hist)
            return x_next, hist, denoised
        hist_m, hist_s = state                                                   # dpmpp
        hist_m, hist_s = push(hist_m, output(denoised, d)), push(hist_s, s_b)
        x_mid = _dpmpp_sub_step(x, hist_m, hist_s, s_mid, orders[0], predict_x0)
        den_mid, d_mid = eval_mid(x_mid)
        hist_m, hist_s = push(hist_m, output(den_mid, d_mid)), push(hist_s, s_mid)
        x_next = _dpmpp_sub_step(x_mid, hist_m, hist_s, s_next_b, orders[1], predict_x0, c)
        return x_next, (hist_m, hist_s), denoised

    return step


def predicted_schedule(predictor: AMEDPredictor, sigmas, feature=None):
    """What the predictor says per step for a given feature: (r, s_mid, c, t), each (N-1,).

    With ``feature=None`` (zeros, as for denoisers without features) this is the
    sample-independent schedule the predictor learned; s_mid = sigma'^r sigma^(1-r).
    """
    sigmas = jnp.asarray(sigmas, jnp.float32)
    n = sigmas.shape[0] - 1
    feat = jnp.zeros((n, predictor.feature_dim)) if feature is None else feature
    r, c, t = predictor.module.apply(predictor.params, feat, sigmas[:-1], sigmas[1:])
    return r, sigmas[1:] ** r * sigmas[:-1] ** (1 - r), c, t


def check_compatible(predictor: AMEDPredictor, solver: str, num_steps: int) -> None:
    """ValueError unless the predictor was trained for this solver and step count."""
    if not isinstance(predictor, AMEDPredictor):
        raise ValueError(f"amed must be an AMEDPredictor, got {type(predictor).__name__}")
    if predictor.base != solver:
        raise ValueError(f"this AMED predictor was trained for base solver "
                         f"{predictor.base!r}, not {solver!r}")
    if predictor.num_steps != num_steps:
        raise ValueError(f"this AMED predictor was trained for num_steps="
                         f"{predictor.num_steps} timestamps, got sigmas of length {num_steps}")
    if predictor.num_updates == 0:
        raise ValueError("this AMED predictor is untrained (0 updates); train it with "
                         "jaxdiff.amed.train or load a trained checkpoint")


def _run(predictor, denoise_fn, feature_fn, x, sigmas, return_trajectory):
    model = _model_of(denoise_fn)
    step = _make_step(predictor, model, feature_fn)
    evaluate = model_evaluator(model)
    orders = jnp.asarray(_sub_orders(predictor))
    steps = sigmas.shape[0] - 1
    cuts = [0, 1, steps] if predictor.afs and steps > 1 else [0, steps]
    carry, outs = (x, _init_state(predictor, x, sigmas[0])), []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        use_afs = predictor.afs and lo == 0
        ev = afs_evaluator if use_afs else evaluate

        def body(carry, inp, ev=ev, use_afs=use_afs):
            x_next, st, den = step(predictor.params, ev, *carry, *inp, use_afs)
            return (x_next, st), ((x_next, den) if return_trajectory else ())

        carry, out = jax.lax.scan(body, carry, (sigmas[lo:hi], sigmas[lo + 1:hi + 1],
                                                orders[lo:hi]))
        outs.append(out)
    if not return_trajectory:
        return carry[0], None
    xs = jnp.concatenate([x[None]] + [o[0] for o in outs])
    return carry[0], (xs, jnp.concatenate([o[1] for o in outs]))


def _split(fn):
    """(static part, traced leaves) of a denoiser or feature function (see sampling)."""
    from jaxdiff.sampling import _split_denoiser
    return (None, []) if fn is None else _split_denoiser(fn)


def _join(fn_def, leaves):
    return jax.tree.unflatten(fn_def, leaves) if leaves else fn_def


@functools.partial(jax.jit, static_argnames=("fn_def", "feat_def", "return_trajectory"))
def _run_jit(predictor, x, sigmas, fn_leaves, feat_leaves, *, fn_def, feat_def,
             return_trajectory):
    return _run(predictor, _join(fn_def, fn_leaves), _join(feat_def, feat_leaves), x, sigmas,
                return_trajectory)


def sample(denoise_fn, x, sigmas, predictor: AMEDPredictor, *, feature_fn=None,
           return_trajectory: bool = False):
    """Sample with AMED; used by ``jaxdiff.sample(..., amed=predictor)``.

    Returns x_final (B, ...) or (x_final, (xs (N, B, ...), denoised (N-1, B, ...))).
    """
    fn_def, fn_leaves = _split(denoise_fn)
    feat_def, feat_leaves = _split(feature_fn)
    return _run_jit(predictor, x, sigmas, fn_leaves, feat_leaves, fn_def=fn_def,
                    feat_def=feat_def, return_trajectory=return_trajectory)


def nfe(num_steps: int, afs: bool) -> int:
    """Two calls per step, one less with AFS."""
    return 2 * (num_steps - 1) - int(bool(afs))


# ----------------------------------------------------------------------------- training

def _teacher_points(denoise_fn, x_T, teacher_sigmas, teacher, teacher_options, stride):
    from jaxdiff.sampling import sample as ode_sample
    _, traj = ode_sample(denoise_fn, x_T, teacher_sigmas, solver=teacher,
                         return_trajectory=True, **teacher_options)
    return traj.xs[::stride]


def _model_of(denoise_fn):
    def model(x_, sigma):
        sigma_b = jnp.broadcast_to(jnp.asarray(sigma, x_.dtype), (x_.shape[0],))
        return denoise_fn(x_, sigma_b).astype(x_.dtype)
    return model


@functools.partial(jax.jit, static_argnames=("static", "fn_def", "feat_def", "use_afs", "tx"))
def _update(params, opt_state, x, state, target, s, s_next, orders, fn_leaves, feat_leaves, *,
            static, fn_def, feat_def, use_afs, tx):
    """One Adam update on the loss of one student step; denoiser leaves are traced."""
    model = _model_of(_join(fn_def, fn_leaves))
    step = _make_step(static, model, _join(feat_def, feat_leaves))

    def loss_fn(p):
        ev = afs_evaluator if use_afs else model_evaluator(model)
        x_next, st, _ = step(p, ev, x, state, s, s_next, orders, use_afs)
        diff = (x_next - target).reshape(x.shape[0], -1)
        return jnp.sum(diff ** 2) / x.shape[0], (x_next, st)

    (loss, (x_next, st)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.tree.map(jnp.nan_to_num, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, x_next, st


def train(denoise_fn, x_T, sigmas, *, base: str = "ipndm", feature_fn=None,
          feature_dim: int = 64, teacher: str | None = None, teacher_sigmas=None,
          teacher_points: int = 2, teacher_options=None, batch_size: int = 128,
          epochs: int = 1, learning_rate: float = 5e-3, scale_dir: float = 0.01,
          scale_time: float = 0.0, afs: bool = True, seed: int = 0, log_fn=None,
          **base_options):
    """Train an AMED predictor against teacher trajectories (reference: training/loss.py).

    For every batch of noise the teacher solves on a finer grid (``teacher_points`` extra
    points between student nodes, so every (M+1)-th teacher point is a student node); then
    for each step n the student takes one step and one Adam update minimises
    sum((x_{n+1} - x_{n+1}^teacher)^2) / B, with gradients through one frozen denoiser
    call. Single-step students (amed, euler, dpm2) restart each step from the teacher
    point; multistep students (ipndm, dpmpp) continue from their own output.

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
      log_fn: optional ``log_fn(dict)`` called after each batch (loss per step).
      **base_options: options of the base solver (e.g. ``max_order=4``).

    Returns:
      The trained :class:`AMEDPredictor`.
    """
    sigmas = jnp.asarray(sigmas, x_T.dtype)
    n = int(sigmas.shape[0])
    predictor = init(jax.random.PRNGKey(seed), base=base, num_steps=n, feature_dim=feature_dim,
                     scale_dir=scale_dir, scale_time=scale_time, afs=afs, **base_options)
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
    static = predictor.replace(params=None)          # hashable: what _make_step reads
    fn_def, fn_leaves = _split(denoise_fn)
    feat_def, feat_leaves = _split(feature_fn)
    orders = jnp.asarray(_sub_orders(predictor))
    num_batches = max(1, -(-x_T.shape[0] // batch_size))
    updates = 0
    for epoch in range(epochs):
        for b in range(num_batches):
            x_b = x_T[b * batch_size:(b + 1) * batch_size]
            targets = _teacher_points(denoise_fn, x_b, teacher_sigmas, teacher,
                                      teacher_options, stride)
            x, state = x_b, _init_state(predictor, x_b, sigmas[0])
            losses = []
            for i in range(n - 1):
                params, opt_state, loss, x_next, state = _update(
                    params, opt_state, x, state, targets[i + 1], sigmas[i], sigmas[i + 1],
                    orders[i], fn_leaves, feat_leaves, static=static, fn_def=fn_def,
                    feat_def=feat_def, use_afs=afs and i == 0, tx=tx)
                updates += 1
                losses.append(float(loss))
                x = targets[i + 1] if base in SINGLE_STEP else jax.lax.stop_gradient(x_next)
                state = jax.lax.stop_gradient(state)
            if log_fn is not None:
                log_fn({"epoch": epoch, "batch": b, "updates": updates,
                        "loss_per_step": losses, "loss": float(np.mean(losses))})
    return predictor.replace(params=params, num_updates=updates)


# --------------------------------------------------------------------------- checkpoints

def save(directory: str, predictor: AMEDPredictor) -> None:
    """Writes the parameters (Orbax, atomic) and the metadata (JSON) to ``directory``."""
    import orbax.checkpoint as ocp
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(os.path.join(directory, "params"), predictor.params, force=True)
    meta = {"base": predictor.base, "num_steps": predictor.num_steps,
            "base_options": dict(predictor.base_options), "feature_dim": predictor.feature_dim,
            "scale_dir": predictor.scale_dir, "scale_time": predictor.scale_time,
            "afs": predictor.afs, "num_updates": predictor.num_updates,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(os.path.join(directory, "amed.json"), "w") as f:
        json.dump(meta, f, indent=1)


def load(directory: str) -> AMEDPredictor:
    """Reads a predictor written by :func:`save`; a clear error if there is none."""
    import orbax.checkpoint as ocp
    directory = os.path.abspath(directory)
    meta_path = os.path.join(directory, "amed.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"no AMED predictor in {directory} (missing amed.json); "
                                f"train one with python -m jaxdiff.amed_train")
    with open(meta_path) as f:
        meta = json.load(f)
    template = init(jax.random.PRNGKey(0), base=meta["base"], num_steps=meta["num_steps"],
                    feature_dim=meta["feature_dim"], scale_dir=meta["scale_dir"],
                    scale_time=meta["scale_time"], afs=meta["afs"], **meta["base_options"])
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(os.path.join(directory, "params"), template.params)
    return template.replace(params=params, num_updates=meta["num_updates"])
