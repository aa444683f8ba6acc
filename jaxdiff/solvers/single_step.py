"""Single-step solvers: Euler (= DDIM), Heun (EDM 2nd order) and DPM-Solver-2.

Each step starts from scratch (no history). Heun's corrector also runs on the last
step (sigma_next = sigma_min > 0), as in the reference code. Euler and Heun take EDM's
churn options (``s_churn > 0`` makes them stochastic; see
:mod:`jaxdiff.solvers.stochastic`).
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxdiff.solvers.base import ODESolver, no_state, require_noise
from jaxdiff.solvers.stochastic import check_churn, churn, churn_coefficients


def _no_coeffs(sigmas):
    return jnp.zeros((sigmas.shape[0] - 1, 0), sigmas.dtype)


def _churned(name: str, s_churn, s_tmin, s_tmax, s_noise):
    """(stochastic, prepare, raise_level) of a single-step solver with EDM's churn.

    ``raise_level(x, s, coeffs, noise) -> (x_hat, sigma_hat)``: the identity without churn.
    """
    if not check_churn(name, s_churn, s_tmin, s_tmax, s_noise):
        return False, _no_coeffs, lambda x, s, coeffs, noise: (x, s)

    def prepare(sigmas):
        return churn_coefficients(sigmas, float(s_churn), float(s_tmin), float(s_tmax),
                                  float(s_noise))

    def raise_level(x, s, coeffs, noise):
        require_noise(f"{name} with s_churn > 0", noise)
        return churn(x, coeffs, noise)

    return True, prepare, raise_level


def euler(s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
          s_noise: float = 1.0) -> ODESolver:
    """x' = x + (sigma' - sigma) d(x, sigma). One model call per step.

    Args (EDM's churn, off by default; ``s_churn > 0`` makes the solver stochastic):
      s_churn: total churn; each step with s_tmin <= sigma <= s_tmax first raises the
        noise level by a factor 1 + gamma, gamma = min(s_churn / (N - 1), sqrt(2) - 1),
        adding noise of variance s_noise^2 (sigma_hat^2 - sigma^2); the step then starts
        from (x_hat, sigma_hat).
      s_tmin, s_tmax: the range of noise levels that get churn (inclusive).
      s_noise: scale of the churn noise (EDM uses values slightly above 1).
    """
    stochastic, prepare, raise_level = _churned("euler", s_churn, s_tmin, s_tmax, s_noise)

    def step(evaluate, model, x, state, s, s_next, coeffs, *, is_last, num_steps,
             noise=None):
        x, s = raise_level(x, s, coeffs, noise)
        denoised, d = evaluate(x, s)
        return x + (s_next - s) * d, state, denoised
    return ODESolver("euler", 0, prepare, no_state, step, stochastic=stochastic)


def heun(s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"),
         s_noise: float = 1.0) -> ODESolver:
    """Euler predictor, trapezoidal corrector. Two model calls per step.

    Churn options as :func:`euler` (the predictor starts from the churned state).
    """
    stochastic, prepare, raise_level = _churned("heun", s_churn, s_tmin, s_tmax, s_noise)

    def step(evaluate, model, x, state, s, s_next, coeffs, *, is_last, num_steps,
             noise=None):
        x, s = raise_level(x, s, coeffs, noise)
        denoised, d = evaluate(x, s)
        x_pred = x + (s_next - s) * d
        d_next = (x_pred - model(x_pred, s_next)) / s_next
        return x + (s_next - s) * 0.5 * (d + d_next), state, denoised
    return ODESolver("heun", 0, prepare, no_state, step, nfe=lambda n: 2 * (n - 1),
                     stochastic=stochastic)


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
