"""Linear multistep solvers: x' = a_i x + sum_k c_{i,k} m_{i-k}.

``m`` is the model output a solver keeps (the derivative d, or the denoised D for
data-prediction solvers). The per-step coefficients (a_i, c_i) are computed once from
the (traced) sigmas in ``prepare``; the step itself is the same for every solver here
and for every order, so one ``lax.scan`` body serves all steps. Orders per step are
static because they depend only on the step index and the number of steps.
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxdiff.solvers.base import ODESolver, check_order, combine, push, select_by_order, shifted

# Adams-Bashforth coefficients for a fixed step, newest derivative first.
_AB = np.array([
    [1.0, 0.0, 0.0, 0.0],
    [3 / 2, -1 / 2, 0.0, 0.0],
    [23 / 12, -16 / 12, 5 / 12, 0.0],
    [55 / 24, -59 / 24, 37 / 24, -9 / 24],
])


def warmup_orders(num_steps: int, max_order: int) -> np.ndarray:
    """order_i = min(max_order, i + 1) for i = 0..num_steps-2."""
    return np.minimum(max_order, np.arange(num_steps - 1) + 1)


def linear_multistep(name: str, max_order: int, prepare: Callable,
                     output: Callable = lambda denoised, d: d) -> ODESolver:
    """Build a solver from ``prepare(sigmas) -> (a (N-1,), c (N-1, max_order))``.

    ``output(denoised, d)`` chooses what enters the history buffer.
    """
    def init(evaluate, model, x, sigma0):
        return jnp.zeros((max_order,) + x.shape, x.dtype)

    def step(evaluate, model, x, hist, s, s_next, coeffs, *, is_last, num_steps):
        denoised, d = evaluate(x, s)
        hist = push(hist, output(denoised, d))
        a, c = coeffs
        return a.astype(x.dtype) * x + combine(c, hist), hist, denoised

    return ODESolver(name, max_order, prepare, init, step)


def ipndm(max_order: int = 4) -> ODESolver:
    """Improved PNDM: fixed-step Adams-Bashforth in sigma on the last d's (order <= 4)."""
    max_order = check_order("ipndm", max_order, 1, 4)

    def prepare(sigmas):
        orders = warmup_orders(sigmas.shape[0], max_order)
        h = sigmas[1:] - sigmas[:-1]
        c = h[:, None] * jnp.asarray(_AB[orders - 1, :max_order], sigmas.dtype)
        return jnp.ones_like(h), c

    return linear_multistep("ipndm", max_order, prepare)


def _ipndm_v_tables(sigmas):
    """Variable-step AB coefficients (newest first) for orders 1..4, each (N-1, 4)."""
    h = sigmas[1:] - sigmas[:-1]
    h1, h2, h3 = (shifted(h, k, -1.0) for k in (1, 2, 3))   # h_{n-1}, h_{n-2}, h_{n-3}
    zero = jnp.zeros_like(h)
    one = jnp.ones_like(h)
    t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    t2 = (((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
          * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    o2 = [(2 + h / h1) / 2, -(h / h1) / 2, zero, zero]
    o3 = [o2[0] + t1, o2[1] - (1 + h1 / h2) * t1, t1 * h1 / h2, zero]
    o4 = [o3[0] + t2,
          o3[1] - (1 + h1 / h2 + q) * t2,
          o3[2] + (h1 / h2 + q * (1 + h2 / h3)) * t2,
          -t2 * q * h1 / h2]
    tables = {1: [one, zero, zero, zero], 2: o2, 3: o3, 4: o4}
    return h, {k: jnp.stack(v, axis=1) for k, v in tables.items()}


def ipndm_v(max_order: int = 4) -> ODESolver:
    """iPNDM with variable-step Adams-Bashforth coefficients from the step sizes."""
    max_order = check_order("ipndm_v", max_order, 1, 4)

    def prepare(sigmas):
        orders = warmup_orders(sigmas.shape[0], max_order)
        h, tables = _ipndm_v_tables(sigmas)
        c = select_by_order(orders, {k: tables[k] for k in range(1, max_order + 1)})
        return jnp.ones_like(h), h[:, None] * c[:, :max_order]

    return linear_multistep("ipndm_v", max_order, prepare)
