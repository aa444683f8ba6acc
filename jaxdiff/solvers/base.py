"""The solver protocol shared by every probability-flow ODE solver and stochastic sampler.

A solver is a NamedTuple of pure functions (optax/blackjax style). The driver
(:func:`jaxdiff.sample`) owns the loop: one ``lax.scan`` over the steps, with the
first step split off statically when AFS replaces its model call and the last step
split off when a solver treats it differently (UniPC has no corrector there).
A stochastic solver (``stochastic=True``) also gets each step's standard normal draw:
the driver passes slice i of the run's noise to step i as ``step(..., noise=z_i)``.

Shapes: ``x`` is ``(B, ...)``; sigmas are scalars inside a step; ``hist`` is a
fixed-size buffer ``(H, B, ...)``, newest entry first.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

Array = Any
# model(x, sigma_scalar) -> D(x; sigma); the driver broadcasts sigma to (B,).
Model = Callable[[Array, Array], Array]
# evaluate(x, sigma) -> (denoised D, derivative d = (x - D) / sigma).
Evaluator = Callable[[Array, Array], tuple]


class ODESolver(NamedTuple):
    """A probability-flow ODE solver.

    Attributes:
        name: registry name.
        history: length H of the history buffer (0 for single-step solvers).
        prepare: ``prepare(sigmas) -> coeffs``, per-step coefficients as a pytree whose
            leaves have leading axis ``len(sigmas) - 1``; computed from traced sigmas so a
            new schedule of the same length never recompiles.
        init: ``init(evaluate, model, x, sigma_0) -> state``.
        step: ``step(evaluate, model, x, state, sigma_cur, sigma_next, coeffs_i, *, is_last,
          num_steps)
            -> (x_next, state, denoised)``; ``evaluate`` is used for the evaluation at
            ``(x, sigma_cur)`` (AFS swaps it), ``model`` for every other call.
        afs_in_init: AFS applies to the model call made in ``init`` (UniPC) instead of
            the one in step 0.
        split_last: the last step is traced separately with ``is_last=True``.
        nfe: ``nfe(num_steps) -> int``, model calls of a run without AFS.
        stochastic: ``step`` takes a keyword ``noise``, a standard normal (B, ...) draw
            for this step (each step gets a fresh one); deterministic solvers get none.
    """
    name: str
    history: int
    prepare: Callable
    init: Callable
    step: Callable
    afs_in_init: bool = False
    split_last: bool = False
    nfe: Callable[[int], int] = lambda num_steps: num_steps - 1
    stochastic: bool = False


def model_evaluator(model: Model) -> Evaluator:
    """Evaluate the denoiser and the ODE derivative d = (x - D) / sigma."""
    def evaluate(x, sigma):
        denoised = model(x, sigma)
        return denoised, (x - denoised) / sigma
    return evaluate


def afs_evaluator(x, sigma, mean=None):
    """Analytical first step: d = (x - mean) / sqrt(1 + sigma^2), D = x - sigma d.

    No model call. ``mean=None`` is the reference (mean 0: D(x; sigma_max) ~ 0, right for
    centred data); a data mean (broadcastable to x) centres the guess for other data.
    """
    d = (x if mean is None else x - mean) / jnp.sqrt(1 + sigma ** 2)
    return x - sigma * d, d


def no_state(evaluate, model, x, sigma0):
    del evaluate, model, sigma0
    return jnp.zeros((0,) + x.shape, x.dtype)


def push(hist, value):
    """Prepend ``value`` to a fixed-size buffer, dropping the oldest entry."""
    return jnp.concatenate([value[None], hist[:-1]], axis=0)


def combine(coeffs, hist):
    """sum_k coeffs[k] * hist[k] for a buffer of shape (H, B, ...)."""
    return jnp.tensordot(coeffs.astype(hist.dtype), hist, axes=1)


def select_by_order(orders: np.ndarray, per_order: dict) -> Array:
    """Per step i pick ``per_order[orders[i]][i]``; ``orders`` is static (numpy)."""
    out = per_order[int(orders[0])]
    for k, table in per_order.items():
        mask = jnp.asarray(orders == k).reshape((-1,) + (1,) * (jnp.ndim(table) - 1))
        out = jnp.where(mask, table, out)
    return out


def shifted(v, k: int, fill):
    """v shifted right by k along axis 0: out[i] = v[i - k], ``fill`` for i < k."""
    if k == 0:
        return v
    pad = jnp.full((k,) + v.shape[1:], fill, v.dtype)
    return jnp.concatenate([pad, v], axis=0)[:v.shape[0]]


def dynamic_thresholding(denoised, quantile: float = 0.995):
    """Dynamic thresholding (Imagen): per-sample quantile s of |D|, s >= 1, clip(D, -s, s) / s.

    Only meaningful for pixel models in [-1, 1]; opt-in (reference quirk: always on).
    """
    flat = jnp.abs(denoised).reshape(denoised.shape[0], -1)
    s = jnp.maximum(jnp.quantile(flat, quantile, axis=1), 1.0)
    s = s.reshape((-1,) + (1,) * (denoised.ndim - 1)).astype(denoised.dtype)
    return jnp.clip(denoised, -s, s) / s


def require_noise(name: str, noise) -> None:
    """ValueError at trace time when a stochastic step is called without its noise."""
    if noise is None:
        raise ValueError(f"{name} is stochastic: its step needs noise=, a standard normal "
                         "draw; this caller runs deterministic solvers only")


def check_order(name: str, max_order, low: int, high: int) -> int:
    if isinstance(max_order, bool) or int(max_order) != max_order or not low <= max_order <= high:
        raise ValueError(
                f"{name}: max_order must be an integer in {low}..{high}, got {max_order!r}")
    return int(max_order)
