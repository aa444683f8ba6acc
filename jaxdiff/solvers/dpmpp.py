"""Multistep DPM-Solver++ (orders 1..3) in the VE form used by the reference code.

With lambda = -log(sigma), h = lambda_t - lambda_s (s the current, t the next sigma):
  data prediction (predict_x0=True): x_t = (t/s) x - phi1 D0 [- phi1/2 D1 | + phi2 D1 - phi3 D2]
  noise prediction: the same formulas on d with phi1 = expm1(+h) and a factor t.
Every update is linear in the stored outputs, so ``prepare`` turns it into (a_i, c_i).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxdiff.solvers.base import (
    ODESolver,
    check_order,
    dynamic_thresholding,
    select_by_order,
    shifted,
)
from jaxdiff.solvers.multistep import linear_multistep


def lower_order_final_orders(num_steps: int, max_order: int, lower_order_final: bool):
    """Per-step orders: warm-up i + 1, then max_order, lowered near the end if asked."""
    i = np.arange(num_steps - 1)
    if not lower_order_final:
        return np.minimum(max_order, i + 1)
    return np.where(i + 1 < max_order, i + 1, np.minimum(max_order, num_steps - (i + 1)))


def log_sigma_ratios(sigmas, depth: int):
    """h_i and r_{k,i} = (lambda_{i-k} - lambda_i) / h_i for k = 1..depth; each (N-1,).

    Missing past nodes get distinct placeholder values (never selected).
    """
    lam = -jnp.log(sigmas)
    lam_s = lam[:-1]
    h = lam[1:] - lam_s
    idx = jnp.arange(lam_s.shape[0])
    ratios = [(jnp.where(idx < k, lam_s - k, shifted(lam_s, k, 0.0)) - lam_s) / h
              for k in range(1, depth + 1)]
    return h, ratios


def dpmpp_coefficients(s, t, q1, q2, predict_x0: bool):
    """DPM-Solver++ update from sigma s to t as (a, {order: c (..., 3)}), elementwise.

    ``q_k = (lambda_{-k} - lambda_s) / h`` locate the two previous outputs (lambda = -log
    sigma, h = lambda_t - lambda_s); x_t = a x + sum_k c[k] m_{-k}. Inputs share one shape
    (per step here, per sample in AMED-Plugin).
    """
    h = jnp.log(s) - jnp.log(t)
    r0, r1 = -q1, q1 - q2            # h0/h and h1/h, as in the reference
    e = jnp.eye(3, dtype=jnp.result_type(s))
    col = lambda v: v[..., None]
    d1_0 = (e[0] - e[1]) / col(r0)
    d1_1 = (e[1] - e[2]) / col(r1)
    d1 = d1_0 + col(r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / col(r0 + r1)
    if predict_x0:
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1
        a, scale = t / s, jnp.ones_like(t)
        o3 = -col(phi1) * e[0] + col(phi2) * d1 - col(phi2 / h - 0.5) * d2
    else:
        phi1 = jnp.expm1(h)
        phi2 = phi1 / h - 1
        a, scale = jnp.ones_like(t), t
        o3 = -col(phi1) * e[0] - col(phi2) * d1 - col(phi2 / h - 0.5) * d2
    tables = {1: -col(phi1) * e[0], 2: -col(phi1) * (e[0] + 0.5 * d1_0), 3: o3}
    return a, {k: col(scale) * v for k, v in tables.items()}


def _dpmpp_tables(sigmas, predict_x0: bool):
    """(a, {order: c (N-1, 3)}) for orders 1..3 along a schedule."""
    _, (q1, q2) = log_sigma_ratios(sigmas, 2)
    return dpmpp_coefficients(sigmas[:-1], sigmas[1:], q1, q2, predict_x0)


def dpmpp(max_order: int = 3, *, predict_x0: bool = True, lower_order_final: bool = True,
          thresholding: bool = False) -> ODESolver:
    """Multistep DPM-Solver++.

    Args:
      max_order: 1..3.
      predict_x0: keep denoised outputs D (data prediction) instead of d.
      lower_order_final: order min(max_order, N - (i + 1)) on the final steps.
      thresholding: dynamic thresholding of D (the reference always applies it in
        data-prediction mode; only sensible for pixel models in [-1, 1]).
    """
    max_order = check_order("dpmpp", max_order, 1, 3)

    def prepare(sigmas):
        orders = lower_order_final_orders(sigmas.shape[0], max_order, lower_order_final)
        a, tables = _dpmpp_tables(sigmas, predict_x0)
        return a, select_by_order(orders, tables)[:, :max_order]

    def output(denoised, d):
        if not predict_x0:
            return d
        return dynamic_thresholding(denoised) if thresholding else denoised

    return linear_multistep("dpmpp", max_order, prepare, output)
