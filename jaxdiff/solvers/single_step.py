"""Single-step solvers: Euler (= DDIM), Heun (EDM 2nd order) and DPM-Solver-2.

Each step starts from scratch (no history). Heun's corrector also runs on the last
step (sigma_next = sigma_min > 0), as in the reference code.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.solvers.base import ODESolver, no_state


def _no_coeffs(sigmas):
    return jnp.zeros((sigmas.shape[0] - 1, 0), sigmas.dtype)


def euler() -> ODESolver:
    """x' = x + (sigma' - sigma) d(x, sigma). One model call per step."""
    def step(evaluate, model, x, state, s, s_next, coeffs, *, is_last, num_steps):
        denoised, d = evaluate(x, s)
        return x + (s_next - s) * d, state, denoised
    return ODESolver("euler", 0, _no_coeffs, no_state, step)


def heun() -> ODESolver:
    """Euler predictor, trapezoidal corrector. Two model calls per step."""
    def step(evaluate, model, x, state, s, s_next, coeffs, *, is_last, num_steps):
        denoised, d = evaluate(x, s)
        x_pred = x + (s_next - s) * d
        d_next = (x_pred - model(x_pred, s_next)) / s_next
        return x + (s_next - s) * 0.5 * (d + d_next), state, denoised
    return ODESolver("heun", 0, _no_coeffs, no_state, step, nfe=lambda n: 2 * (n - 1))


def dpm2(r: float = 0.5) -> ODESolver:
    """DPM-Solver-2: evaluate at sigma_mid = sigma'^r sigma^(1-r). Two calls per step."""
    if not 0 < r <= 1:
        raise ValueError(f"dpm2: r must be in (0, 1], got {r!r}")

    def step(evaluate, model, x, state, s, s_next, coeffs, *, is_last, num_steps):
        denoised, d = evaluate(x, s)
        s_mid = s_next ** r * s ** (1 - r)
        x_mid = x + (s_mid - s) * d
        d_mid = (x_mid - model(x_mid, s_mid)) / s_mid
        w = 1 / (2 * r)
        return x + (s_next - s) * (w * d_mid + (1 - w) * d), state, denoised
    return ODESolver("dpm2", 0, _no_coeffs, no_state, step, nfe=lambda n: 2 * (n - 1))
