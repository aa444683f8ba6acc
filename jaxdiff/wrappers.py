"""Model wrappers: trained networks of other parameterisations as EDM denoisers.

Every constructor returns ``denoise_fn(x, sigma) -> D(x; sigma)`` as :func:`jaxdiff.sample`
takes it: x (B, ...) in EDM units (x = x0 + sigma * z), sigma (B,) or a scalar, output
shaped like x and in x's dtype.

    vp_eps(eps_fn, alphas_cumprod)   discrete-time VP, eps-prediction (DDPM, SD 1.x)
    vp_v(v_fn, alphas_cumprod)       discrete-time VP, v-prediction (SD 2.x-v)
    ve_eps(eps_fn)                   continuous VE, D = x - sigma * eps(x, sigma)
    edm(raw_fn, sigma_data)          EDM preconditioning around a raw network F
    flow(velocity_fn)                rectified flow / flow matching, v = z - x0

The VP conventions are k-diffusion's ``DiscreteEpsDDPMDenoiser`` /
``DiscreteVDDPMDenoiser`` (sigma_data = 1): the discrete noise levels are
``sigma_i = sqrt((1 - abar_i) / abar_i)``, the network sees ``x / sqrt(sigma^2 + 1)``
(the VP-scaled sample) and a float timestep t found from sigma by linear interpolation
of log sigma between the two neighbouring discrete levels (``quantize=True``: the
nearest level in log sigma, t integer-valued). Sigmas beyond the model's range clamp
to t = 0 or t = T - 1, as in k-diffusion.

Pytrees: each wrapper is a frozen dataclass registered as a pytree whose children are
the wrapped function and, for the VP wrappers, the ``alphas_cumprod`` array; options
(``quantize``, ``sigma_data``) are static. A wrapped function that is a pytree of arrays
(``jax.tree_util.Partial(apply_fn, params)``) stays one, so ``jax.tree.leaves`` of the
wrapper is its parameters plus the schedule and :func:`jaxdiff.sample` traces them: new
parameters or a new schedule of the same shape never recompile. Any other callable is
held as a static child (compared by ``==``, hashed): reuse it to reuse the program.

Checks: constructors validate the schedule and options eagerly. Inside a trace (such as
:func:`jaxdiff.sample`, which jits the denoiser) only shapes are known, so a model whose
output shape differs from x is an error there too, while sigma values are not: an
out-of-range sigma clamps silently, as in k-diffusion. An eager call with concrete
sigmas checks them against the model's range; call
:meth:`VPDenoiser.check_sigmas` on a schedule before sampling to get the same error.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import callables

__all__ = ["vp_eps", "vp_v", "vp_sigmas", "vp_sigma_to_t", "vp_t_to_sigma", "ve_eps", "edm",
           "flow", "VPDenoiser", "VEDenoiser", "EDMDenoiser", "FlowDenoiser", "RANGE_RTOL"]

# Relative slack of the eager sigma-range check: published schedules round the model's
# end points (Align Your Steps writes 0.029 for Stable Diffusion's sigma_min 0.02917).
RANGE_RTOL = 1e-2


def _hashable(value):
    """``value`` if it hashes, else a stand-in compared by identity (arrays, tracers)."""
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


class _ByFields:
    """Equality and hash over the dataclass fields, unhashable ones (arrays) by identity:
    ``jax.jit(D)`` works, and wrappers of the same static callable and options are equal,
    so a rebuilt wrapper reuses the compiled program."""

    def _key(self):
        return (type(self),) + tuple(_hashable(getattr(self, f.name))
                                     for f in dataclasses.fields(self))

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())


@dataclasses.dataclass(frozen=True, eq=False)
class _Static(_ByFields):
    """A callable held as static pytree data (no leaves)."""

    fn: Callable

    def __call__(self, *args):
        return self.fn(*args)


jax.tree_util.register_static(_Static)


def _as_child(fn, name: str):
    """``fn`` itself when it is a pytree of arrays (traced), else ``_Static(fn)``."""
    if not callable(fn):
        raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
    return fn if callables.split(fn)[1] else _Static(fn)


def _concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _batch(x, sigma):
    """``x`` as an array (B, ...) and ``sigma`` as (B,), both in x's floating dtype."""
    x = jnp.asarray(x)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating array of shape (batch, ...), got {x.dtype} "
                         f"{x.shape}")
    sigma = jnp.asarray(sigma)
    if sigma.ndim == 0:
        sigma = jnp.broadcast_to(sigma, x.shape[:1])
    elif sigma.shape != x.shape[:1]:
        raise ValueError(f"sigma must be a scalar or of shape ({x.shape[0]},), got "
                         f"{sigma.shape}")
    return x, sigma.astype(x.dtype)


def _per_row(c, x):
    """(B,) coefficients broadcast against x (B, ...)."""
    return c.reshape(c.shape + (1,) * (x.ndim - 1))


def _checked(out, x, name: str):
    """The network output as an array of x's shape and dtype (ValueError otherwise)."""
    shape = getattr(out, "shape", None)
    if shape != x.shape:
        raise ValueError(f"{name} returned shape {shape if shape is not None else type(out)}, "
                         f"expected x's shape {x.shape}")
    return out.astype(x.dtype)


# ------------------------------------------------------------------ discrete VP


def _validate_alphas_cumprod(alphas_cumprod):
    """ValueError unless 1-D, length >= 2 and (when concrete) strictly decreasing in (0, 1)."""
    a = jnp.asarray(alphas_cumprod)
    if a.ndim != 1 or a.shape[0] < 2 or not jnp.issubdtype(a.dtype, jnp.floating):
        raise ValueError(f"alphas_cumprod must be a 1-D floating array of length >= 2, got "
                         f"{a.dtype} {a.shape}")
    if not _concrete(a):
        return a
    v = np.asarray(a, np.float64)
    bad = np.flatnonzero(~(np.isfinite(v) & (v > 0) & (v < 1)))
    if bad.size:
        raise ValueError(f"alphas_cumprod must lie in (0, 1) so that sigma = sqrt((1 - a) / a) "
                         f"is finite and > 0; alphas_cumprod[{bad[0]}] = {v[bad[0]]}")
    up = np.flatnonzero(np.diff(v) >= 0)
    if up.size:
        i = up[0]
        raise ValueError(f"alphas_cumprod must be strictly decreasing; alphas_cumprod[{i}] = "
                         f"{v[i]} <= alphas_cumprod[{i + 1}] = {v[i + 1]}")
    return a


def _log_sigmas(alphas_cumprod, dtype):
    """(T,) increasing log sigma_i of the discrete steps, computed in ``dtype``."""
    a = alphas_cumprod.astype(dtype)
    return jnp.log(jnp.sqrt((1 - a) / a))


def _sigma_to_t(sigma, log_sigmas, quantize: bool):
    """Float timestep of each sigma (B,): log-sigma interpolation or the nearest step."""
    log_sigma = jnp.log(sigma)
    last = log_sigmas.shape[0] - 1
    if quantize:
        hi = jnp.clip(jnp.searchsorted(log_sigmas, log_sigma, side="left"), 1, last)
        lo = hi - 1
        # Ties go to the lower step, as argmin's first match does.
        closer_hi = jnp.abs(log_sigmas[hi] - log_sigma) < jnp.abs(log_sigma - log_sigmas[lo])
        return jnp.where(closer_hi, hi, lo).astype(sigma.dtype)
    lo = jnp.clip(jnp.searchsorted(log_sigmas, log_sigma, side="right") - 1, 0, last - 1)
    low, high = log_sigmas[lo], log_sigmas[lo + 1]
    w = jnp.clip((low - log_sigma) / (low - high), 0, 1)
    return (1 - w) * lo + w * (lo + 1)


def _t_to_sigma(t, log_sigmas):
    """sigma(t) (B,) by linear interpolation of log sigma; t is clipped to [0, T - 1]."""
    t = jnp.clip(t, 0, log_sigmas.shape[0] - 1)
    lo = jnp.floor(t).astype(jnp.int32)
    hi = jnp.ceil(t).astype(jnp.int32)
    w = t - lo
    return jnp.exp((1 - w) * log_sigmas[lo] + w * log_sigmas[hi])


@functools.partial(jax.jit, static_argnames="quantize")
def _sigma_to_t_jit(sigma, alphas_cumprod, *, quantize):
    """Eager entry of :func:`vp_sigma_to_t`: one compiled program per shape and dtype."""
    log_sigmas = _log_sigmas(alphas_cumprod, sigma.dtype)
    return _sigma_to_t(sigma.reshape(-1), log_sigmas, quantize).reshape(sigma.shape)


@jax.jit
def _t_to_sigma_jit(t, alphas_cumprod):
    """Eager entry of :func:`vp_t_to_sigma`."""
    return _t_to_sigma(t.reshape(-1), _log_sigmas(alphas_cumprod, t.dtype)).reshape(t.shape)


def _work_dtype(dtype):
    """The dtype of the sigma <-> t mapping: x's dtype, at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def vp_sigmas(alphas_cumprod):
    """The model's discrete noise levels sigma_i = sqrt((1 - abar_i) / abar_i).

    Args:
      alphas_cumprod: (T,) strictly decreasing values in (0, 1), abar_i of timestep i.

    Returns:
      (T,) increasing sigmas (EDM units): ``[0]`` is the model's sigma_min (t = 0) and
      ``[-1]`` its sigma_max (t = T - 1), e.g. for a schedule
      ``jaxdiff.schedules.get("polynomial", n, float(s[0]), float(s[-1]))``. For Stable
      Diffusion's 1000 steps (scaled-linear betas 0.00085..0.012): 0.02917 .. 14.6146.
    """
    a = _validate_alphas_cumprod(alphas_cumprod)
    return jnp.sqrt((1 - a) / a)


def vp_sigma_to_t(sigma, alphas_cumprod, *, quantize: bool = False):
    """The discrete model's timestep for noise level(s) ``sigma`` (k-diffusion's mapping).

    Args:
      sigma: noise levels > 0, any shape.
      alphas_cumprod: (T,) as in :func:`vp_sigmas`.
      quantize: return the nearest step in log sigma (integer-valued floats).

    Returns:
      float t in [0, T - 1] shaped like sigma: linear in log sigma between the two
      neighbouring discrete levels; sigmas beyond the model's range clamp to 0 or T - 1.
    """
    a = _validate_alphas_cumprod(alphas_cumprod)
    sigma = jnp.asarray(sigma)
    dtype = _work_dtype(jnp.result_type(sigma, a))
    return _sigma_to_t_jit(sigma.astype(dtype), a.astype(dtype), quantize=bool(quantize))


def vp_t_to_sigma(t, alphas_cumprod):
    """Inverse of :func:`vp_sigma_to_t` on [0, T - 1]: log sigma linear between steps.

    ``t`` (any shape, float) is clipped to [0, T - 1]; integer t gives ``vp_sigmas[t]``.
    """
    a = _validate_alphas_cumprod(alphas_cumprod)
    t = jnp.asarray(t)
    dtype = _work_dtype(jnp.result_type(t, a))
    return _t_to_sigma_jit(t.astype(dtype), a.astype(dtype))


@dataclasses.dataclass(frozen=True, eq=False)
class VPDenoiser(_ByFields):
    """D(x; sigma) of a discrete-time VP network ``fn(x_in (B, ...), t (B,))``.

    Build it with :func:`vp_eps` or :func:`vp_v`. Attributes: ``fn`` and
    ``alphas_cumprod`` (T,) are pytree children; ``prediction`` ("eps" or "v") and
    ``quantize`` are static.
    """

    fn: Any
    alphas_cumprod: Any
    prediction: str = "eps"
    quantize: bool = False

    @property
    def sigma_min(self) -> float:
        """The model's smallest discrete sigma (t = 0), as a Python float (eager only)."""
        return float(vp_sigmas(self.alphas_cumprod)[0])

    @property
    def sigma_max(self) -> float:
        """The model's largest discrete sigma (t = T - 1), as a Python float (eager only)."""
        return float(vp_sigmas(self.alphas_cumprod)[-1])

    def check_sigmas(self, sigmas, *, rtol: float = RANGE_RTOL) -> None:
        """ValueError naming the first sigma outside [sigma_min / (1 + rtol),
        sigma_max * (1 + rtol)]; call it on a schedule before :func:`jaxdiff.sample`,
        which traces the denoiser (there, out-of-range sigmas clamp to the end steps)."""
        s = np.asarray(sigmas, np.float64).reshape(-1)
        lo, hi = self.sigma_min / (1 + rtol), self.sigma_max * (1 + rtol)
        bad = np.flatnonzero(~((s >= lo) & (s <= hi)))
        if bad.size:
            raise ValueError(f"sigma = {s[bad[0]]:.6g} lies outside this model's range "
                             f"[{self.sigma_min:.6g}, {self.sigma_max:.6g}] (relative slack "
                             f"{rtol}); build the schedule from vp_sigmas(alphas_cumprod)")

    def __call__(self, x, sigma):
        x, sigma = _batch(x, sigma)
        if _concrete(sigma, self.alphas_cumprod):
            self.check_sigmas(sigma)
        work = _work_dtype(x.dtype)
        t = _sigma_to_t(sigma.astype(work), _log_sigmas(self.alphas_cumprod, work),
                        self.quantize)
        scale = 1 / jnp.sqrt(sigma ** 2 + 1)                       # c_in, sigma_data = 1
        out = _checked(self.fn(x * _per_row(scale, x), t), x, f"{self.prediction}_fn")
        if self.prediction == "eps":
            return x - _per_row(sigma, x) * out
        c_skip, c_out = scale ** 2, -sigma * scale
        return _per_row(c_skip, x) * x + _per_row(c_out, x) * out


jax.tree_util.register_dataclass(VPDenoiser, data_fields=["fn", "alphas_cumprod"],
                                 meta_fields=["prediction", "quantize"])


def _vp(fn, alphas_cumprod, prediction: str, quantize) -> VPDenoiser:
    if not isinstance(quantize, (bool, np.bool_)):
        raise ValueError(f"quantize must be True or False, got {quantize!r}")
    a = _validate_alphas_cumprod(alphas_cumprod)
    return VPDenoiser(_as_child(fn, f"{prediction}_fn"), a, prediction, bool(quantize))


def vp_eps(eps_fn: Callable, alphas_cumprod, *, quantize: bool = False) -> VPDenoiser:
    """Denoiser of a discrete-time eps-prediction VP model (DDPM, Stable Diffusion 1.x).

    ``D(x; sigma) = x - sigma * eps_fn(x / sqrt(sigma^2 + 1), t(sigma))``.

    Args:
      eps_fn: ``eps_fn(x_in (B, ...), t (B,) float) -> eps`` shaped like x_in, the
        network's noise prediction at VP timestep t (0 = least noise).
      alphas_cumprod: (T,) strictly decreasing abar_t in (0, 1), as the model was trained.
      quantize: call the network at the nearest discrete timestep (t integer-valued)
        instead of the log-sigma interpolation.

    Returns:
      a :class:`VPDenoiser` ``D(x, sigma)``.
    """
    return _vp(eps_fn, alphas_cumprod, "eps", quantize)


def vp_v(v_fn: Callable, alphas_cumprod, *, quantize: bool = False) -> VPDenoiser:
    """Denoiser of a discrete-time v-prediction VP model (Stable Diffusion 2.x-v).

    With alpha = 1 / sqrt(sigma^2 + 1) and v = alpha * eps - sigma * alpha * x0 (the VP
    units' v), ``D(x; sigma) = alpha^2 x - sigma alpha v_fn(alpha x, t(sigma))``.
    Arguments as in :func:`vp_eps`.
    """
    return _vp(v_fn, alphas_cumprod, "v", quantize)


# ------------------------------------------------------------------ continuous


@dataclasses.dataclass(frozen=True, eq=False)
class VEDenoiser(_ByFields):
    """``D(x; sigma) = x - sigma * fn(x, sigma)``; build it with :func:`ve_eps`."""

    fn: Any

    def __call__(self, x, sigma):
        x, sigma = _batch(x, sigma)
        return x - _per_row(sigma, x) * _checked(self.fn(x, sigma), x, "eps_fn")


@dataclasses.dataclass(frozen=True, eq=False)
class EDMDenoiser(_ByFields):
    """Karras et al. (2022) preconditioning of a raw network; build it with :func:`edm`."""

    fn: Any
    sigma_data: float = 0.5

    def __call__(self, x, sigma):
        x, sigma = _batch(x, sigma)
        total = sigma ** 2 + self.sigma_data ** 2
        c_skip = self.sigma_data ** 2 / total
        c_out = sigma * self.sigma_data / jnp.sqrt(total)
        c_in = 1 / jnp.sqrt(total)
        raw = _checked(self.fn(x * _per_row(c_in, x), jnp.log(sigma) / 4), x, "raw_fn")
        return _per_row(c_skip, x) * x + _per_row(c_out, x) * raw


@dataclasses.dataclass(frozen=True, eq=False)
class FlowDenoiser(_ByFields):
    """Rectified-flow velocity as an EDM denoiser; build it with :func:`flow`."""

    fn: Any

    def __call__(self, x, sigma):
        x, sigma = _batch(x, sigma)
        t = sigma / (1 + sigma)
        x_t = x / _per_row(1 + sigma, x)
        return x_t - _per_row(t, x) * _checked(self.fn(x_t, t), x, "velocity_fn")


jax.tree_util.register_dataclass(VEDenoiser, data_fields=["fn"], meta_fields=[])
jax.tree_util.register_dataclass(EDMDenoiser, data_fields=["fn"], meta_fields=["sigma_data"])
jax.tree_util.register_dataclass(FlowDenoiser, data_fields=["fn"], meta_fields=[])


def ve_eps(eps_fn: Callable) -> VEDenoiser:
    """Denoiser of a continuous VE eps-prediction model: ``D = x - sigma * eps_fn(x, sigma)``.

    ``eps_fn(x (B, ...), sigma (B,)) -> eps`` sees the unscaled sample and the noise
    level itself (EDM units, no VP scaling).
    """
    return VEDenoiser(_as_child(eps_fn, "eps_fn"))


def edm(raw_fn: Callable, sigma_data: float = 0.5) -> EDMDenoiser:
    """EDM preconditioning (Karras et al. 2022, Table 1) around a raw network F.

    ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` with
    ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)`` and ``c_noise = log(sigma) / 4`` (shape (B,)).

    Args:
      raw_fn: ``F(x_in (B, ...), c_noise (B,)) -> (B, ...)``.
      sigma_data: standard deviation of the training data (data units, finite > 0).
    """
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float, np.floating)) \
            or not (math.isfinite(sigma_data) and sigma_data > 0):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
    return EDMDenoiser(_as_child(raw_fn, "raw_fn"), float(sigma_data))


def flow(velocity_fn: Callable) -> FlowDenoiser:
    """Denoiser of a rectified-flow / flow-matching model.

    The model's path is ``x_t = (1 - t) x0 + t z`` (t in [0, 1], t = 1 pure noise) and
    its target the velocity ``v = z - x0`` (negate a model trained on x0 - z). Dividing
    by 1 - t gives ``x_t / (1 - t) = x0 + t / (1 - t) z``, an EDM sample at
    ``sigma = t / (1 - t)``. Hence, for EDM's (x, sigma):
    ``t = sigma / (1 + sigma)``, ``x_t = x / (1 + sigma)``, and since
    ``x0 = x_t - t v``, ``D(x; sigma) = x_t - t * velocity_fn(x_t, t)``.

    Args:
      velocity_fn: ``velocity_fn(x_t (B, ...), t (B,)) -> v``, t a float in (0, 1).
    """
    return FlowDenoiser(_as_child(velocity_fn, "velocity_fn"))
