"""Stochastic samplers: Euler ancestral, DPM-Solver++(2M) SDE, and EDM's churn.

Each step consumes one standard normal draw ``noise`` (B, ...) that the driver passes
(:func:`jaxdiff.sample` with ``key=`` or ``noise=``). The updates are k-diffusion's
(``sample_euler_ancestral``, ``sample_dpmpp_2m_sde`` and the churn of ``sample_euler`` /
``sample_heun``) for steps that end at sigma_next > 0, which every step here does
(sampling stops at ``sigmas[-1] > 0``). All sigma-dependent factors are computed in
``prepare`` from the traced sigmas, so a new schedule never recompiles.

With lambda = -log(sigma) and h = lambda_next - lambda > 0 (sigma the current, sigma'
the next noise level):

* Euler ancestral splits sigma' into a deterministic part sigma_down and fresh noise
  sigma_up (sigma_down^2 + sigma_up^2 = sigma'^2,
  sigma_up = min(sigma', eta sigma' sqrt(1 - sigma'^2 / sigma^2))):
  x' = x + (sigma_down - sigma) d + s_noise sigma_up z.
* DPM-Solver++(2M) SDE: x' = (sigma'/sigma) e^(-eta h) x + (1 - e^(-(1+eta) h)) D
  + c (D - D_prev) + s_noise sigma' sqrt(1 - e^(-2 eta h)) z, with
  c = (1 - e^(-(1+eta) h)) / (2 r) ("midpoint") or
  c = (1 - (1 - e^(-(1+eta) h)) / ((1+eta) h)) / r ("heun"), r = h_prev / h; no
  correction on the first step. eta = 0 is the deterministic DPM-Solver++(2M).
* Churn (EDM Algorithm 2): with gamma = min(s_churn / (N - 1), sqrt(2) - 1) where
  s_tmin <= sigma <= s_tmax (else 0), raise the noise level to
  sigma_hat = (1 + gamma) sigma by x_hat = x + s_noise sqrt(sigma_hat^2 - sigma^2) z,
  then take the Euler/Heun step from (x_hat, sigma_hat) to sigma'.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from jaxdiff.solvers.base import ODESolver, no_state, require_noise, shifted

DPMPP_SDE_VARIANTS = ("midpoint", "heun")


def check_nonnegative(name: str, option: str, value) -> float:
    """``value`` as a float; ValueError unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: {option} must be a finite number >= 0, got {value!r}")
    return float(value)


# ------------------------------------------------------------------------------ churn


def check_churn(name: str, s_churn, s_tmin, s_tmax, s_noise) -> bool:
    """Validates EDM's churn options; True when they make the sampler stochastic."""
    s_churn = check_nonnegative(name, "s_churn", s_churn)
    s_tmin = check_nonnegative(name, "s_tmin", s_tmin)
    check_nonnegative(name, "s_noise", s_noise)
    if isinstance(s_tmax, bool) or not isinstance(s_tmax, (int, float)) or not (
            s_tmax >= s_tmin):
        raise ValueError(f"{name}: s_tmax must be a number >= s_tmin = {s_tmin}, got "
                         f"{s_tmax!r}")
    return s_churn > 0


def churn_coefficients(sigmas, s_churn: float, s_tmin: float, s_tmax: float,
                       s_noise: float):
    """Per step (sigma_hat, noise scale), each (N-1,): EDM's churn along ``sigmas`` (N,).

    gamma_i = min(s_churn / (N - 1), sqrt(2) - 1) where s_tmin <= sigma_i <= s_tmax, else
    0; sigma_hat_i = sigma_i (1 + gamma_i); the added noise has standard deviation
    s_noise sqrt(sigma_hat_i^2 - sigma_i^2) (exactly 0 where gamma_i = 0).
    """
    s = sigmas[:-1]
    gamma_max = min(s_churn / (sigmas.shape[0] - 1), 2 ** 0.5 - 1)
    gamma = jnp.where((s_tmin <= s) & (s <= s_tmax), gamma_max, 0.0).astype(s.dtype)
    s_hat = s * (gamma + 1)
    scale = jnp.where(gamma > 0, s_noise * jnp.sqrt(jnp.maximum(s_hat ** 2 - s ** 2, 0.0)),
                      0.0)
    return s_hat, scale.astype(s.dtype)


def churn(x, coeffs, noise):
    """(x_hat, sigma_hat): x raised to the step's churned noise level."""
    s_hat, scale = coeffs
    return x + scale.astype(x.dtype) * noise, s_hat


# ---------------------------------------------------------------------- euler ancestral


def ancestral_step(sigmas, eta: float):
    """(sigma_down, sigma_up), each (N-1,): the ancestral split of every step.

    sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
    sigma_down = sqrt(sigma'^2 - sigma_up^2); eta = 0 gives (sigma', 0).
    """
    s, t = sigmas[:-1], sigmas[1:]
    if not eta:
        return t, jnp.zeros_like(t)
    up = jnp.minimum(t, eta * jnp.sqrt(t ** 2 * (s ** 2 - t ** 2) / s ** 2))
    return jnp.sqrt(t ** 2 - up ** 2), up


def euler_ancestral(eta: float = 1.0, s_noise: float = 1.0) -> ODESolver:
    """Euler ancestral sampling. One model call per step.

    Args:
      eta: fraction of the ancestral noise (0: plain Euler, deterministic; 1: DDPM-like
        ancestral sampling; > 1 is capped at sigma_up = sigma').
      s_noise: scale of the added noise (1: unit-variance draws).
    """
    eta = check_nonnegative("euler_ancestral", "eta", eta)
    s_noise = check_nonnegative("euler_ancestral", "s_noise", s_noise)
    stochastic = eta > 0

    def prepare(sigmas):
        down, up = ancestral_step(sigmas, eta)
        return down, s_noise * up

    def step(evaluate, model, x, state, s, s_next, coeffs, *, is_last, num_steps,
             noise=None):
        down, up = coeffs
        denoised, d = evaluate(x, s)
        x = x + (down - s) * d
        if stochastic:
            require_noise("euler_ancestral", noise)
            x = x + up.astype(x.dtype) * noise
        return x, state, denoised

    return ODESolver("euler_ancestral", 0, prepare, no_state, step, stochastic=stochastic)


# ------------------------------------------------------------------ DPM-Solver++(2M) SDE


def dpmpp_2m_sde_coefficients(sigmas, eta: float, s_noise: float, variant: str):
    """Per step (a, b, c, noise scale), each (N-1,), of
    x' = a x + b D + c (D - D_prev) + scale z along ``sigmas`` (N,); c = 0 on step 0."""
    s, t = sigmas[:-1], sigmas[1:]
    lam = -jnp.log(sigmas)
    h = lam[1:] - lam[:-1]
    eta_h = eta * h
    a = t / s * jnp.exp(-eta_h)
    b = -jnp.expm1(-h - eta_h)
    r = shifted(h, 1, 1.0) / h
    if variant == "midpoint":
        c = 0.5 * b * (1 / r)
    else:
        c = (b / (-h - eta_h) + 1) * (1 / r)
    c = jnp.where(jnp.arange(h.shape[0]) == 0, 0.0, c).astype(h.dtype)
    scale = t * jnp.sqrt(-jnp.expm1(-2 * eta_h)) * s_noise
    return a, b, c, scale


def dpmpp_2m_sde(eta: float = 1.0, s_noise: float = 1.0,
                 variant: str = "midpoint") -> ODESolver:
    """DPM-Solver++(2M) SDE (data prediction). One model call per step.

    Args:
      eta: strength of the stochastic part (0: deterministic DPM-Solver++(2M)).
      s_noise: scale of the added noise.
      variant: second-order correction "midpoint" (k-diffusion's default) or "heun".
    """
    eta = check_nonnegative("dpmpp_2m_sde", "eta", eta)
    s_noise = check_nonnegative("dpmpp_2m_sde", "s_noise", s_noise)
    if variant not in DPMPP_SDE_VARIANTS:
        raise ValueError(f"dpmpp_2m_sde: variant must be one of {list(DPMPP_SDE_VARIANTS)}, "
                         f"got {variant!r}")
    stochastic = eta > 0

    def prepare(sigmas):
        return dpmpp_2m_sde_coefficients(sigmas, eta, s_noise, variant)

    def init(evaluate, model, x, sigma0):
        return jnp.zeros_like(x)                       # D_prev; unused on step 0 (c = 0)

    def step(evaluate, model, x, prev, s, s_next, coeffs, *, is_last, num_steps,
             noise=None):
        a, b, c, scale = (v.astype(x.dtype) for v in coeffs)
        denoised, _ = evaluate(x, s)
        x = a * x + b * denoised + c * (denoised - prev)
        if stochastic:
            require_noise("dpmpp_2m_sde", noise)
            x = x + scale * noise
        return x, denoised, denoised

    return ODESolver("dpmpp_2m_sde", 1, prepare, init, step, stochastic=stochastic)
