"""Time schedules: decreasing noise levels sigma_0 = sigma_max > ... > sigma_{N-1} = sigma_min.

``num_steps`` counts timestamps, as in the reference code: N timestamps give N-1 steps.
All schedules return a 1-D float array of shape ``(num_steps,)`` in units of sigma (the
EDM noise standard deviation). There is no implicit final step to 0.

Parametric schedules (:data:`SCHEDULES`) span any [sigma_min, sigma_max]; the Align Your
Steps tables (:func:`align_your_steps`, names ``"ays_<model>"`` in :func:`get`) are
optimised for one model each and keep that model's range.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

__all__ = ["polynomial", "logsnr", "time_uniform", "get", "SCHEDULES", "vp_beta", "vp_sigma",
           "vp_sigma_inv", "align_your_steps", "AYS_TABLES", "AYS_NAMES"]


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


# Align Your Steps (Sabour, Fidler & Kreis 2024, arXiv:2404.14507, Appendix B.3, Table 3;
# also NVIDIA's quick-start note research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html):
# optimised 10-step schedules, sigma(t_10) > ... > sigma(t_0), in each model's EDM sigmas.
AYS_TABLES = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "deepfloyd_if": (160.41, 8.081, 3.315, 1.885, 1.207, 0.785, 0.553, 0.293, 0.186, 0.030,
                     0.006),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def align_your_steps(num_steps: int, model: str = "sd15") -> jnp.ndarray:
    """Align Your Steps schedule of ``model``, log-linearly resampled to ``num_steps``.

    The published table has 11 noise levels (10 steps) from the model's sigma_max to its
    sigma_min. Other step counts interpolate log sigma linearly over the table's index
    (a uniform grid on [0, 1]), as the authors' note does: the ends are kept, 11 gives the
    table itself, 21 inserts the geometric mean between neighbours. The table's last
    value is kept as the final sigma (no implicit 0; k-diffusion-style samplers that
    append a step to 0 match ``sample(..., denoise_to_zero=True)``, whose final call
    D(x; sigma_min) is an Euler step to 0). Fewer than 11 timestamps also interpolate,
    but only the tabulated counts were optimised.

    Args:
      num_steps: timestamps N >= 2 (N - 1 steps).
      model: a key of :data:`AYS_TABLES` ("sd15", "sdxl", "deepfloyd_if", "svd").

    Returns:
      (num_steps,) strictly decreasing sigmas, float (float64 math, then the default dtype).
    """
    if model not in AYS_TABLES:
        raise ValueError(f"unknown Align Your Steps model {model!r}; valid: {sorted(AYS_TABLES)}")
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2 (timestamps), got {num_steps!r}")
    table = np.asarray(AYS_TABLES[model], np.float64)
    last = table.shape[0] - 1
    pos = np.arange(int(num_steps)) * last / (int(num_steps) - 1)     # position in the table
    lo = np.minimum(np.floor(pos).astype(int), last - 1)
    w = pos - lo
    out = np.exp((1 - w) * np.log(table[lo]) + w * np.log(table[lo + 1]))
    on_table = pos == np.floor(pos)               # table entries exactly, not exp(log(.))
    out[on_table] = table[pos[on_table].astype(int)]
    return jnp.asarray(out)


SCHEDULES = {"polynomial": polynomial, "logsnr": logsnr, "time_uniform": time_uniform}
AYS_NAMES = {f"ays_{model}": model for model in AYS_TABLES}


def get(name: str, num_steps: int, sigma_min: float | None = None,
        sigma_max: float | None = None, **kw) -> jnp.ndarray:
    """Schedule by name, e.g. ``get("polynomial", 6, rho=7)``; shape (num_steps,).

    Parametric schedules (:data:`SCHEDULES`) default to sigma_min = 0.002 and
    sigma_max = 80. ``"ays_sd15"``, ``"ays_sdxl"``, ``"ays_deepfloyd_if"`` and
    ``"ays_svd"`` are :func:`align_your_steps` with their model's own range: they take
    no sigma_min, sigma_max or options.

    Raises:
      ValueError: unknown name (the message lists the valid ones), num_steps < 2,
        0 < sigma_min < sigma_max violated, or a range or option given to an AYS table.
    """
    if name in AYS_NAMES:
        given = {k: v for k, v in dict(kw, sigma_min=sigma_min, sigma_max=sigma_max).items()
                 if v is not None}
        if given:
            raise ValueError(f"{name} is a published table with its model's own sigma range; "
                             f"it takes no {sorted(given)}")
        return align_your_steps(num_steps, AYS_NAMES[name])
    if name not in SCHEDULES:
        valid = sorted(SCHEDULES) + sorted(AYS_NAMES)
        raise ValueError(f"unknown schedule {name!r}; valid: {valid}")
    sigma_min = 0.002 if sigma_min is None else sigma_min
    sigma_max = 80.0 if sigma_max is None else sigma_max
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
