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
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jaxdiff import callables
from jaxdiff.solvers.base import (
    afs_evaluator,
    check_order,
    combine,
    dynamic_thresholding,
    model_evaluator,
    push,
)
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
      afs_mean: the data mean the analytical first step centres on (None: 0, the
        reference; see :func:`jaxdiff.sample`'s ``afs_mean``); traced, like ``params``.
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
    afs_mean: Any = None

    @property
    def module(self) -> Predictor:
        return Predictor(self.scale_dir, self.scale_time)


def init(key, *, base: str, num_steps: int, feature_dim: int = 64, scale_dir: float = 0.01,
         scale_time: float = 0.0, afs: bool = True, afs_mean=None,
         **base_options) -> AMEDPredictor:
    """An untrained predictor (8,950 parameters for F = 64 with r and c heads)."""
    _check_config(base, num_steps, base_options)
    module = Predictor(scale_dir, scale_time)
    z = jnp.zeros((1,), jnp.float32)
    params = module.init(key, jnp.zeros((1, feature_dim), jnp.float32), z + 1.0, z + 0.5)
    if afs_mean is not None and not afs:
        raise ValueError("afs_mean is the data mean of the analytical first step: it needs "
                         "afs=True")
    return AMEDPredictor(params, base, int(num_steps), tuple(sorted(base_options.items())),
                         int(feature_dim), float(scale_dir), float(scale_time), bool(afs),
                         afs_mean=None if afs_mean is None else jnp.asarray(afs_mean))


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

def sub_orders(predictor: AMEDPredictor) -> np.ndarray:
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


def init_state(predictor, x, sigma0):
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


def make_step(predictor: AMEDPredictor, model: Callable, feature_fn: Callable | None):
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
                         "jaxdiff.training.amed.train or load a trained checkpoint")


def model_of(denoise_fn):
    """``model(x, sigma)`` with a scalar or (B,) sigma, in x's dtype."""
    def model(x_, sigma):
        sigma_b = jnp.broadcast_to(jnp.asarray(sigma, x_.dtype), (x_.shape[0],))
        return denoise_fn(x_, sigma_b).astype(x_.dtype)
    return model


def _run(predictor, denoise_fn, feature_fn, x, sigmas, return_trajectory):
    model = model_of(denoise_fn)
    step = make_step(predictor, model, feature_fn)
    evaluate = model_evaluator(model)
    orders = jnp.asarray(sub_orders(predictor))
    steps = sigmas.shape[0] - 1
    cuts = [0, 1, steps] if predictor.afs and steps > 1 else [0, steps]
    carry, outs = (x, init_state(predictor, x, sigmas[0])), []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        use_afs = predictor.afs and lo == 0
        ev = functools.partial(afs_evaluator, mean=predictor.afs_mean) if use_afs else evaluate

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


def rollout(predictor, denoise_fn, feature_fn, x, sigmas):
    """The student's states at every node, (N, B, ...), differentiable in its params."""
    return _run(predictor, denoise_fn, feature_fn, x, sigmas, True)[1][0]


@functools.partial(jax.jit, static_argnames=("fn_def", "feat_def", "return_trajectory"))
def _run_jit(predictor, x, sigmas, fn_leaves, feat_leaves, *, fn_def, feat_def,
             return_trajectory):
    return _run(predictor, callables.join(fn_def, fn_leaves),
                callables.join(feat_def, feat_leaves), x, sigmas,
                return_trajectory)


def sample(denoise_fn, x, sigmas, predictor: AMEDPredictor, *, feature_fn=None,
           return_trajectory: bool = False):
    """Sample with AMED; used by ``jaxdiff.sample(..., amed=predictor)``.

    Returns ``(x_final (B, ...), None)``, or ``(x_final, (xs (N, B, ...), denoised
    (N-1, B, ...)))`` with ``return_trajectory=True``.
    """
    fn_def, fn_leaves = callables.split(denoise_fn)
    feat_def, feat_leaves = callables.split(feature_fn)
    return _run_jit(predictor, x, sigmas, fn_leaves, feat_leaves, fn_def=fn_def,
                    feat_def=feat_def, return_trajectory=return_trajectory)


def nfe(num_steps: int, afs: bool) -> int:
    """Two calls per step, one less with AFS."""
    return 2 * (num_steps - 1) - int(bool(afs))
