"""UniPC (bh1 / bh2): a multistep predictor (UniP) and a corrector (UniC), VE form.

The corrector evaluates the model at the predicted point; that evaluation becomes the
next history entry, so the corrector costs no extra call. No corrector on the final
step (unless the run is still in its warm-up, as in the reference). Like DPM-Solver++
every update is linear in the stored outputs; ``prepare`` builds the predictor and
corrector coefficients with small batched linear solves.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxdiff.solvers.base import (
    ODESolver,
    check_order,
    combine,
    dynamic_thresholding,
    model_evaluator,
    push,
    select_by_order,
)
from jaxdiff.solvers.dpmpp import log_sigma_ratios

_VARIANTS = ("bh1", "bh2")


def unipc_orders(num_steps: int, max_order: int, lower_order_final: bool) -> np.ndarray:
    i = np.arange(num_steps - 1)
    late = np.minimum(max_order, num_steps - i - 1) if lower_order_final else max_order
    return np.where(i + 1 < max_order, i + 1, late)


def _unipc_tables(sigmas, order: int, predict_x0: bool, variant: str):
    """(a, c_pred, c_corr, c_model_t) for one order, coefficient vectors of length 3."""
    s, t = sigmas[:-1], sigmas[1:]
    h, ratios = log_sigma_ratios(sigmas, 2)
    hh = -h if predict_x0 else h
    h_phi_1 = jnp.expm1(hh)
    b_h = hh if variant == "bh1" else jnp.expm1(hh)
    e = jnp.eye(3, dtype=sigmas.dtype)
    col = lambda v: v[:, None]

    rks = jnp.stack(ratios[:order - 1] + [jnp.ones_like(h)], axis=1)      # (N-1, K)
    rows, b = [], []
    h_phi_k, factorial = h_phi_1 / hh - 1, 1
    for j in range(1, order + 1):
        rows.append(rks ** (j - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= j + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    big_r, b = jnp.stack(rows, axis=1), jnp.stack(b, axis=1)             # (N-1, K, K), (N-1, K)
    d1s = [(e[k] - e[0]) / col(ratios[k - 1]) for k in range(1, order)]

    if order == 1:
        rhos_p, rhos_c = None, jnp.full((h.shape[0], 1), 0.5, h.dtype)
    else:
        rhos_c = jnp.linalg.solve(big_r, b[..., None])[..., 0]
        if order == 2:
            rhos_p = jnp.full((h.shape[0], 1), 0.5, h.dtype)
        else:
            rhos_p = jnp.linalg.solve(big_r[:, :-1, :-1], b[:, :-1, None])[..., 0]

    if predict_x0:
        a, base, scale = t / s, -col(h_phi_1) * e[0], b_h
    else:
        a, base, scale = jnp.ones_like(t), -col(t * h_phi_1) * e[0], t * b_h
    pred_res = sum((col(rhos_p[:, k]) * d1s[k] for k in range(order - 1)), jnp.zeros_like(base))
    corr_res = sum((col(rhos_c[:, k]) * d1s[k] for k in range(order - 1)), jnp.zeros_like(base))
    c_pred = base - col(scale) * pred_res
    c_corr = base - col(scale) * (corr_res - col(rhos_c[:, -1]) * e[0])
    c_model_t = -scale * rhos_c[:, -1]
    return a, c_pred, c_corr, c_model_t


def unipc(max_order: int = 3, *, variant: str = "bh2", predict_x0: bool = True,
          lower_order_final: bool = True, thresholding: bool = False) -> ODESolver:
    """UniPC solver.

    Args:
      max_order: 1..3 (the predictor order; the corrector adds one).
      variant: "bh1" (B(h) = h) or "bh2" (B(h) = expm1(h), the reference default).
      predict_x0: data prediction (keep D) instead of noise prediction (keep d).
      lower_order_final: lower the order on the final steps.
      thresholding: dynamic thresholding of D (the reference always applies it in
        data-prediction mode).
    """
    max_order = check_order("unipc", max_order, 1, 3)
    if variant not in _VARIANTS:
        raise ValueError(f"unipc: variant must be one of {_VARIANTS}, got {variant!r}")

    def output(denoised, d):
        if not predict_x0:
            return d
        return dynamic_thresholding(denoised) if thresholding else denoised

    def prepare(sigmas):
        orders = unipc_orders(sigmas.shape[0], max_order, lower_order_final)
        per_order = {k: _unipc_tables(sigmas, k, predict_x0, variant)
                     for k in sorted(set(orders.tolist()))}
        a = per_order[int(orders[0])][0]
        picked = [select_by_order(orders, {k: v[j] for k, v in per_order.items()})
                  for j in (1, 2, 3)]
        return a, picked[0][:, :max_order], picked[1][:, :max_order], picked[2]

    def init(evaluate, model, x, sigma0):
        denoised, d = evaluate(x, sigma0)
        hist = jnp.zeros((max_order,) + x.shape, x.dtype)
        return push(hist, output(denoised, d)), denoised

    def step(evaluate, model, x, state, s, t, coeffs, *, is_last, num_steps):
        hist, denoised = state
        a, c_pred, c_corr, c_model_t = coeffs
        a = a.astype(x.dtype)
        x_pred = a * x + combine(c_pred, hist)
        if is_last and num_steps - 1 >= max_order:   # no corrector on the final step
            return x_pred, state, denoised
        denoised_t, d_t = model_evaluator(model)(x_pred, t)
        m_t = output(denoised_t, d_t)
        x_next = a * x + combine(c_corr, hist) + c_model_t.astype(x.dtype) * m_t
        return x_next, (push(hist, m_t), denoised_t), denoised

    def nfe(num_steps):   # one call in init, one per corrector
        return num_steps - (1 if num_steps - 1 >= max_order else 0)

    return ODESolver("unipc", max_order, prepare, init, step, afs_in_init=True,
                     split_last=True, nfe=nfe)
