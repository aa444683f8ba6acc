"""Time schedules: decreasing noise levels sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min.

``num_steps`` counts timestamps, as in the reference code: N timestamps give N-1 steps.
All schedules return a 1-D float array of shape ``(num_steps,)`` in units of sigma (the
EDM noise standard deviation). There is no implicit final step to 0.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

__all__ = ["polynomial", "logsnr", "time_uniform", "get", "SCHEDULES", "vp_beta", "vp_sigma",
           "vp_sigma_inv"]


def _index_ramp(num_steps: int) -> jnp.ndarray:
    """i / (N - 1) for i = 0..N-1, shape (num_steps,)."""
    return jnp.arange(num_steps) / (num_steps - 1)


def polynomial(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
               rho: float = 7.0) -> jnp.ndarray:
    """EDM (Karras) schedule: uniform in sigma^(1/rho)."""
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (a + _index_ramp(num_steps) * (b - a)) ** rho


def logsnr(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> jnp.ndarray:
    """Uniform in lambda = -log(sigma) (DPM-Solver's logSNR schedule)."""
    return jnp.exp(jnp.linspace(math.log(sigma_max), math.log(sigma_min), num_steps))


def vp_beta(sigma_min: float = 0.002, sigma_max: float = 80.0, eps: float = 1e-3):
    """(beta_d, beta_min) of the VP-linear schedule with sigma(1) = sigma_max and
    sigma(eps) = sigma_min.

    For 80 / 0.002 this gives beta_d ~ 17.538 and beta_min ~ -0.00477 (DEIS's mapping).
    """
    lmax, lmin = math.log(sigma_max ** 2 + 1), math.log(sigma_min ** 2 + 1)
    beta_d = 2.0 * (lmin / eps - lmax) / (eps - 1.0)
    return beta_d, lmax - 0.5 * beta_d


def vp_sigma(t, beta_d: float, beta_min: float):
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) for VP time t in (0, 1]."""
    return jnp.sqrt(jnp.expm1(0.5 * beta_d * t ** 2 + beta_min * t))


def vp_sigma_inv(sigma, beta_d: float, beta_min: float):
    """Inverse of :func:`vp_sigma`."""
    return (jnp.sqrt(beta_min ** 2 + 2 * beta_d * jnp.log1p(sigma ** 2)) - beta_min) / beta_d


def time_uniform(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 1.0, eps: float = 1e-3) -> jnp.ndarray:
    """Uniform (rho = 1) or polynomial (rho > 1) in the fitted VP time, mapped to sigma."""
    beta_d, beta_min = vp_beta(sigma_min, sigma_max, eps)
    t = (1.0 + _index_ramp(num_steps) * (eps ** (1.0 / rho) - 1.0)) ** rho
    return vp_sigma(t, beta_d, beta_min)


SCHEDULES = {"polynomial": polynomial, "logsnr": logsnr, "time_uniform": time_uniform}


def get(name: str, num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
        **kw) -> jnp.ndarray:
    """Schedule by name, e.g. ``get("polynomial", 6, rho=7)``; shape (num_steps,).

    Raises:
      ValueError: unknown name (the message lists the valid ones), num_steps < 2, or
        0 < sigma_min < sigma_max violated.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {sorted(SCHEDULES)}")
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2 (timestamps), got {num_steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    rho = kw.get("rho")
    if rho is not None and not (math.isfinite(float(rho)) and float(rho) > 0):
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    eps = kw.get("eps")
    if eps is not None and not 0 < float(eps) < 1:
        raise ValueError(f"eps must lie in (0, 1), got {eps!r}")
    return SCHEDULES[name](int(num_steps), sigma_min, sigma_max, **kw)
