"""Sampler-level conditioning: inpainting (conditional correction), ODE inversion,
reconstruction and SDEdit (reference survey: sec. 10 "conditional correction" and
"inversion").

These mechanisms change the sampling loop itself, not the denoiser. Inpainting and SDEdit
run their own ``lax.scan`` over the steps of a *single-step* solver from
:mod:`jaxdiff.solvers` (``euler``/``ddim``, ``heun``, ``dpm2``): the replacement of the
known region invalidates a multistep solver's history. Inversion and reconstruction take
any solver: :func:`jaxdiff.sampling.integrate` runs the solver's update rule on an
increasing schedule (every solver's coefficients depend only on the sigma increments;
the upward integration converges with the solver's sampling order, tested).

Units: x and sigma are in data units (EDM: x_sigma = x_0 + sigma * eps).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import callables, schedules
from jaxdiff import solvers as solvers_lib
from jaxdiff.sampling import cast_sigmas, integrate, sample, validate_sigmas
from jaxdiff.solvers.base import model_evaluator

__all__ = ["inpaint", "invert", "reconstruct", "sdedit", "SINGLE_STEP_SOLVERS"]

SINGLE_STEP_SOLVERS = ("euler", "heun", "dpm2")


def _single_step(solver: str, options: dict):
    """The solver object; ValueError for unknown or multistep solvers and bad options."""
    s = solvers_lib.get(solver, **options)
    if s.name not in SINGLE_STEP_SOLVERS:
        raise ValueError(f"solver {solver!r} is not supported here; use one of the "
                         f"single-step solvers {list(SINGLE_STEP_SOLVERS)}")
    return s


def _as_x(name: str, x):
    x = jnp.asarray(x)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating array of shape (batch, ...), got "
                         f"{x.dtype} {x.shape}")
    return x


def _broadcastable(name: str, arr, shape):
    """arr broadcast to ``shape``; ValueError naming the bad shape otherwise."""
    arr = jnp.asarray(arr)
    try:
        np.broadcast_shapes(arr.shape, shape)
    except ValueError:
        raise ValueError(f"{name} has shape {arr.shape}, which does not broadcast to the "
                         f"shape of x_T {tuple(shape)}") from None
    if np.broadcast_shapes(arr.shape, shape) != tuple(shape):
        raise ValueError(f"{name} has shape {arr.shape}, which does not broadcast to the "
                         f"shape of x_T {tuple(shape)}")
    return jnp.broadcast_to(arr, shape)


def _model(denoise_fn):
    def model(x, sigma):
        sigma_b = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
        return denoise_fn(x, sigma_b).astype(x.dtype)
    return model


def _check_denoiser(denoise_fn, x) -> None:
    out = jax.eval_shape(denoise_fn, jax.ShapeDtypeStruct(x.shape, x.dtype),
                         jax.ShapeDtypeStruct(x.shape[:1], x.dtype))
    if getattr(out, "shape", None) != x.shape:
        raise ValueError(f"denoise_fn must return an array of the input's shape {x.shape}, "
                         f"got {getattr(out, 'shape', type(out).__name__)}")


def _with_denoiser(run, denoise_fn, *arrays, **static):
    """Calls the jitted ``run`` with the denoiser split into static part + traced leaves."""
    fn_def, fn_leaves = callables.split(denoise_fn)
    return run(fn_leaves, *arrays, fn_def=fn_def, **static)


def _check_mask(mask) -> None:
    """ValueError unless a concrete mask lies in [0, 1] (1: known, 0: to generate)."""
    if isinstance(mask, jax.core.Tracer):
        return
    m = np.atleast_1d(np.asarray(mask, np.float64))
    bad = ~np.isfinite(m) | (m < 0) | (m > 1)
    if bad.any():
        value = m[bad].flat[0]
        raise ValueError(f"mask values must lie in [0, 1] (1: known, 0: to generate); got "
                         f"{value} at {np.argwhere(bad)[0].tolist()} "
                         f"({int(bad.sum())} bad entries)")


# ------------------------------------------------------------------ inpainting
@functools.partial(jax.jit, static_argnames=("fn_def", "solver", "options", "resample"))
def _inpaint_jit(fn_leaves, x, sigmas, known, mask, key, *, fn_def, solver, options,
                 resample):
    model = _model(callables.join(fn_def, fn_leaves))
    evaluate = model_evaluator(model)
    slv = solvers_lib.get(solver, **dict(options))
    coeffs = slv.prepare(sigmas)
    num_steps = sigmas.shape[0]
    last = num_steps - 2

    def one_interval(x, inp):
        i, s, s_next, c = inp
        key_i = jax.random.fold_in(key, i)

        def attempt(j, x):
            k_eps, k_back = jax.random.split(jax.random.fold_in(key_i, j))
            # RePaint: every repetition after the first starts by re-noising the current
            # x from sigma_next back up to sigma (VE forward: add sqrt(s^2 - s'^2) z).
            back = jnp.sqrt(s ** 2 - s_next ** 2) * jax.random.normal(k_back, x.shape, x.dtype)
            x = jnp.where(j > 0, x + back, x)
            x, _, _ = slv.step(evaluate, model, x, slv.init(evaluate, model, x, s), s, s_next,
                               c, is_last=False, num_steps=num_steps)
            noise_level = jnp.where(i == last, jnp.zeros_like(s_next), s_next)
            target = known + noise_level * jax.random.normal(k_eps, x.shape, x.dtype)
            return mask * target + (1 - mask) * x

        return jax.lax.fori_loop(0, resample + 1, attempt, x), None

    idx = jnp.arange(num_steps - 1)
    x, _ = jax.lax.scan(one_interval, x, (idx, sigmas[:-1], sigmas[1:], coeffs))
    return x


def inpaint(denoise_fn: Callable, x_T, sigmas, known, mask, *, key, solver: str = "euler",
            resample: int = 0, **options):
    """Inpainting by conditional correction (SDE imputation / RePaint on the ODE).

    Step i runs one solver step from ``sigmas[i]`` to ``sigmas[i+1]`` and then replaces
    the known region by its noised observation,
    ``x <- mask * (known + sigmas[i+1] * eps_i) + (1 - mask) * x``, with
    ``eps_i ~ N(0, I)`` drawn from ``fold_in(fold_in(key, i), j)`` (j: repetition). The
    last step uses the clean observation, so the output equals ``known`` exactly where
    ``mask == 1``. ``x_T`` is used as given (at ``sigmas[0]`` the observation is
    negligible next to the noise).

    ``resample = r`` (RePaint "jumps" of length 1) repeats every step r more times: the
    result is re-noised from ``sigmas[i+1]`` back to ``sigmas[i]`` by adding
    ``sqrt(sigmas[i]^2 - sigmas[i+1]^2) z`` and the step plus replacement are redone,
    which lets the unknown region harmonize with the known one. Cost: (r + 1) times the
    denoiser calls of a plain run.

    Args:
      denoise_fn: ``D(x (B, ...), sigma (B,)) -> (B, ...)``.
      x_T: (B, ...) initial state at ``sigmas[0]`` (e.g. ``sigmas[0] * z``).
      sigmas: (N,) strictly decreasing positive noise levels.
      known: observation, broadcastable to x_T's shape (values outside the mask unused).
      mask: 1 (known) / 0 (to generate), broadcastable to x_T's shape; bool or float
        (fractional values blend linearly).
      key: PRNG key for the observation noise.
      solver: "euler" (= DDIM), "heun" or "dpm2" (see :data:`SINGLE_STEP_SOLVERS`).
      resample: r >= 0 extra repetitions per step.
      **options: solver options (e.g. ``r=0.5`` for dpm2).

    Returns:
      (B, ...) samples at ``sigmas[-1]`` with the known region set to ``known``.

    Raises:
      ValueError: bad sigmas, solver, resample, x_T, or a known/mask shape that does
        not broadcast to x_T's shape (the message names it), or a denoiser whose output
        shape differs from its input's.
    """
    validate_sigmas(sigmas)
    _single_step(solver, options)
    if isinstance(resample, bool) or int(resample) != resample or resample < 0:
        raise ValueError(f"resample must be an integer >= 0, got {resample!r}")
    x_T = _as_x("x_T", x_T)
    known = _broadcastable("known", known, x_T.shape).astype(x_T.dtype)
    _check_mask(mask)
    mask = _broadcastable("mask", mask, x_T.shape).astype(x_T.dtype)
    _check_denoiser(denoise_fn, x_T)
    return _with_denoiser(_inpaint_jit, denoise_fn, x_T, cast_sigmas(sigmas, x_T.dtype),
                          known, mask, key, solver=solver,
                          options=tuple(sorted(options.items())), resample=int(resample))


# ------------------------------------------------------------------- inversion
def invert(denoise_fn: Callable, x0, sigmas_up, *, solver: str = "euler", **options):
    """ODE inversion: integrate the probability-flow ODE upwards, sigma_min -> sigma_max.

    ``x0`` is taken as the state at ``sigmas_up[0]`` (a clean image at sigma_min) and
    carried to ``sigmas_up[-1]`` by any solver of :mod:`jaxdiff.solvers` (its update
    rule on increasing sigmas, no AFS); ``solver="euler"`` is DDIM inversion. For a
    sampling schedule ``sigmas`` (decreasing) pass ``sigmas[::-1]``.

    Args:
      denoise_fn: ``D(x (B, ...), sigma (B,)) -> (B, ...)``.
      x0: (B, ...) data (the state at ``sigmas_up[0]``).
      sigmas_up: (N,) strictly increasing positive noise levels.
      solver: a solver name ("euler", "heun", "dpm2", "ipndm", "dpmpp", "unipc", ...).
      **options: solver options.

    Returns:
      (B, ...) latent at noise level ``sigmas_up[-1]``.

    Raises:
      ValueError: non-increasing/non-positive sigmas_up (the message names the first
        bad entry), unknown solver or options, bad x0 or denoiser output shape.
    """
    validate_sigmas(sigmas_up, name="sigmas_up", increasing=True)
    solvers_lib.get(solver, **options)
    x0 = _as_x("x0", x0)
    _check_denoiser(denoise_fn, x0)
    return integrate(denoise_fn, x0, sigmas_up, solver=solver, **options)


def reconstruct(denoise_fn: Callable, x0, sigmas, *, solver: str = "euler", **options):
    """Invert along ``sigmas[::-1]``, then sample back along ``sigmas`` with the same solver.

    The round-trip error ``|x0 - x_rec|`` is the discretization error of the two ODE
    solves (DIRE's detection feature); it vanishes as the schedule is refined.

    Args:
      denoise_fn: ``D(x (B, ...), sigma (B,)) -> (B, ...)``.
      x0: (B, ...) data.
      sigmas: (N,) strictly decreasing sampling schedule (sigma_max ... sigma_min).
      solver: any solver name (see :func:`invert`).
      **options: solver options.

    Returns:
      ``(x_rec, x_T)``: the reconstruction (B, ...) and the latent at ``sigmas[0]``.
    """
    validate_sigmas(sigmas)
    x_T = invert(denoise_fn, x0, jnp.asarray(sigmas)[::-1], solver=solver, **options)
    return sample(denoise_fn, x_T, sigmas, solver=solver, **options), x_T


def sdedit(denoise_fn: Callable, x0, sigma_start: float, key, num_steps: int,
           solver: str = "heun", *, sigma_min: float = 0.002, rho: float = 7.0, **options):
    """SDEdit: perturb a (guide) image to ``sigma_start``, then solve the ODE back down.

    ``x = x0 + sigma_start * z`` with ``z ~ N(0, I)`` from ``key``, then
    :func:`jaxdiff.sample` on the EDM polynomial schedule from ``sigma_start`` to
    ``sigma_min`` with ``num_steps`` timestamps. Small ``sigma_start`` stays faithful
    to x0; large ``sigma_start`` gives realism at the cost of faithfulness.

    Args:
      denoise_fn: ``D(x (B, ...), sigma (B,)) -> (B, ...)``.
      x0: (B, ...) guide images.
      sigma_start: starting noise level (data units), > sigma_min.
      key: PRNG key.
      num_steps: timestamps of the schedule (>= 2).
      solver: any solver of :func:`jaxdiff.sample`.
      sigma_min: final noise level.
      rho: polynomial schedule exponent.
      **options: solver options.

    Returns:
      (B, ...) edited samples at ``sigma_min``.

    Raises:
      ValueError: sigma_start <= sigma_min, bad num_steps or solver.
    """
    if not np.isfinite(sigma_start) or not sigma_start > sigma_min > 0:
        raise ValueError(f"need sigma_start > sigma_min > 0, got sigma_start={sigma_start}, "
                         f"sigma_min={sigma_min}")
    x0 = _as_x("x0", x0)
    sigmas = schedules.get("polynomial", num_steps, sigma_min=sigma_min,
                           sigma_max=float(sigma_start), rho=rho)
    start_key, solver_key = jax.random.split(key)
    x = x0 + jnp.asarray(sigma_start, x0.dtype) * jax.random.normal(start_key, x0.shape,
                                                                    x0.dtype)
    if solvers_lib.get(solver, **options).stochastic:      # a stochastic sampler's draws
        options = dict(options, key=solver_key)
    return sample(denoise_fn, x, jnp.asarray(sigmas, x0.dtype), solver=solver, **options)
