"""Guidance: composable wrappers that turn denoisers into denoisers.

Every wrapper returns a ``jax.tree_util.Partial`` obeying the sampling contract
``denoise_fn(x (B, ...), sigma (B,)) -> D(x; sigma) (B, ...)``, so it can be passed to
:func:`jaxdiff.sample`, to :mod:`jaxdiff.conditioning`, or to another wrapper. Arrays
(parameters, labels, scales, weights) are pytree leaves of the returned ``Partial``:
sampling traces them, so a new guidance scale or new labels reuse the compiled program.
Callables that are themselves pytrees of arrays (``Partial(apply, params)``) are
flattened the same way; any other callable is a static part, hashed by identity.

Conventions (EDM, sigma as time; score s(x; sigma) = (D(x; sigma) - x) / sigma^2):

* Guidance is written in D-space. Since D = x - sigma eps, any affine combination
  ``D = sum_k w_k D_k`` with ``sum_k w_k = 1`` equals the same combination of the
  noise predictions ``eps = sum_k w_k eps_k``; classifier-free guidance in D-space is
  therefore exactly eps-space CFG.
* Adding ``g`` to the score adds ``sigma^2 g`` to D. Energy guidance adds
  ``-scale grad_x E`` to the score, i.e. ``D -= scale sigma^2 grad_x E``; E is
  dimensionless (nats), grad_x E has units 1/x and sigma^2 grad_x E units of x.

Mechanisms (reference survey: sec. 10 "noise blending" and "guidance"):
:func:`classifier_free`, :func:`blend`, :func:`energy`, :func:`classifier`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from jaxdiff import callables

__all__ = ["classifier_free", "blend", "energy", "classifier", "unet_model_fn"]


# --------------------------------------------------------------------------- helpers
def _check_callable(name: str, fn) -> None:
    if not callable(fn):
        raise ValueError(f"{name} must be callable, got {type(fn).__name__}")


def _as_scale(name: str, scale):
    """A real scalar as a traced-friendly 0-d array; ValueError otherwise."""
    arr = jnp.asarray(scale)
    if arr.ndim != 0 or not (jnp.issubdtype(arr.dtype, jnp.floating)
                             or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise ValueError(f"{name} must be a real scalar, got {scale!r}")
    if not isinstance(scale, jax.core.Tracer) and not np.isfinite(float(arr)):
        raise ValueError(f"{name} must be finite, got {scale!r}")
    return arr if jnp.issubdtype(arr.dtype, jnp.floating) else arr.astype(jnp.float32)


def _as_labels(labels):
    arr = jnp.asarray(labels)
    if arr.ndim != 1 or not jnp.issubdtype(arr.dtype, jnp.integer):
        raise ValueError(f"labels must be an integer array of shape (B,), got "
                         f"{arr.dtype} {arr.shape}")
    return arr.astype(jnp.int32)


def _sigma_like(x, sigma):
    """sigma as (B, 1, ..., 1) in x's dtype (accepts a scalar or (B,))."""
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (x.shape[0],))
    return sigma.reshape((-1,) + (1,) * (x.ndim - 1))


def _check_out(name: str, out, shape) -> None:
    if getattr(out, "shape", None) != tuple(shape):
        raise ValueError(f"{name} must return shape {tuple(shape)}, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")


# --------------------------------------------------------------- classifier-free
@dataclasses.dataclass(frozen=True)
class _CFG:
    model_def: Any

    def __call__(self, model_leaves, labels, null_label, scale, x, sigma):
        model_fn = callables.join(self.model_def, model_leaves)
        b = x.shape[0]
        if labels.shape[0] != b:
            raise ValueError(f"labels has batch {labels.shape[0]} but x has batch {b}")
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (b,))
        x2 = jnp.concatenate([x, x], axis=0)
        sigma2 = jnp.concatenate([sigma, sigma], axis=0)
        labels2 = jnp.concatenate([labels, jnp.broadcast_to(null_label, (b,))], axis=0)
        out = model_fn(x2, sigma2, labels2)
        _check_out("model_fn(x, sigma, labels)", out, x2.shape)
        d_c, d_u = out[:b], out[b:]
        w = scale.astype(out.dtype)
        # (1 - w) D_u + w D_c == D_u + w (D_c - D_u); this form is exact at w = 0 and 1.
        return (1 - w) * d_u + w * d_c


def classifier_free(model_fn: Callable, labels, null_label: int, scale) -> Partial:
    """Classifier-free guidance from one conditional model, in one doubled batch.

    ``D(x; sigma) = D_u + w (D_c - D_u)`` with ``D_c = model_fn(x, sigma, labels)`` and
    ``D_u = model_fn(x, sigma, null_label)``; both are evaluated in a single call on a
    batch of 2B. ``w = scale``: 0 is the unconditional denoiser, 1 the conditional one
    (both exactly: the combination is computed as ``(1 - w) D_u + w D_c``), w > 1
    extrapolates (the usual guidance). In the EDM D-space this equals eps-space CFG
    ``eps_u + w (eps_c - eps_u)``. With two separate denoisers use
    ``blend([uncond, cond], [1 - w, w])``.

    Args:
      model_fn: ``model_fn(x (2B, ...), sigma (2B,), labels (2B,) int) -> (2B, ...)``, a
        conditional denoiser where ``null_label`` means "no condition"; for a
        :class:`jaxdiff.unet.UNet` use :func:`unet_model_fn` (null label
        ``model.num_classes``).
      labels: (B,) int class labels; the batch of x must be B.
      null_label: the unconditional label (int).
      scale: guidance weight w (float, may be traced).

    Returns:
      ``denoise_fn(x (B, ...), sigma (B,)) -> (B, ...)`` as a ``Partial``.

    Raises:
      ValueError: labels not an int (B,) array, non-integer null label, non-scalar or
        non-finite scale; at call time, a batch mismatch or a model output whose shape
        differs from its input's.
    """
    _check_callable("model_fn", model_fn)
    labels = _as_labels(labels)
    if isinstance(null_label, bool) or int(null_label) != null_label:
        raise ValueError(f"null_label must be an int, got {null_label!r}")
    model_def, model_leaves = callables.split(model_fn)
    return Partial(_CFG(model_def), model_leaves, labels, jnp.asarray(null_label, jnp.int32),
                   _as_scale("scale", scale))


@dataclasses.dataclass(frozen=True)
class _UNetFn:
    model: Any

    def __call__(self, params, x, sigma, labels):
        from jaxdiff.models import unet
        return unet.make_denoiser(self.model, params, labels)(x, sigma)


def unet_model_fn(model, params) -> Partial:
    """``model_fn(x, sigma, labels) -> D`` of a class-conditional :class:`jaxdiff.unet.UNet`.

    Args:
      model: the UNet (``num_classes > 0``; the null label is ``model.num_classes``).
      params: its parameters (traced leaves of the returned ``Partial``).
    """
    if getattr(model, "num_classes", 0) <= 0:
        raise ValueError(f"unet_model_fn needs a class-conditional UNet, got num_classes="
                         f"{getattr(model, 'num_classes', None)!r}")
    return Partial(_UNetFn(model), params)


# --------------------------------------------------------------------- blending
@dataclasses.dataclass(frozen=True)
class _Blend:
    defs: tuple

    def __call__(self, leaves, weights, x, sigma):
        out = None
        for k, (static, lv) in enumerate(zip(self.defs, leaves)):
            d = callables.join(static, lv)(x, sigma)
            _check_out(f"denoisers[{k}]", d, x.shape)
            term = weights[k].astype(d.dtype) * d
            out = term if out is None else out + term
        return out


def blend(denoisers: Sequence[Callable], weights) -> Partial:
    """Noise blending: ``D = sum_k w_k D_k`` (Composable Diffusion, multi-condition CFG).

    The weights should sum to 1 for the result to be a denoiser of the same data scale
    (an affine combination, identical in eps-space); this is documented, not enforced, so
    that weights can be traced. Composable Diffusion's ``D_u + sum_k s_k (D_k - D_u)`` is
    ``blend([D_u, D_1, ..., D_K], [1 - sum_k s_k, s_1, ..., s_K])``. One-hot weights
    return the chosen denoiser exactly (finite outputs). Every denoiser is evaluated.

    Args:
      denoisers: K >= 1 denoisers ``D_k(x, sigma) -> (B, ...)``.
      weights: (K,) real weights (may be traced).

    Returns:
      ``denoise_fn(x (B, ...), sigma (B,)) -> (B, ...)`` as a ``Partial``.

    Raises:
      ValueError: no denoisers, a non-callable, weights not of shape (K,).
    """
    denoisers = list(denoisers)
    if not denoisers:
        raise ValueError("blend needs at least one denoiser, got 0")
    for k, fn in enumerate(denoisers):
        _check_callable(f"denoisers[{k}]", fn)
    weights = jnp.asarray(weights)
    if weights.shape != (len(denoisers),):
        raise ValueError(f"weights must have shape ({len(denoisers)},) (one per denoiser), "
                         f"got {weights.shape}")
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        weights = weights.astype(jnp.float32)
    split = [callables.split(fn) for fn in denoisers]
    return Partial(_Blend(tuple(s for s, _ in split)), [lv for _, lv in split], weights)


# ------------------------------------------------------------ gradient guidance
@dataclasses.dataclass(frozen=True)
class _Energy:
    denoise_def: Any
    energy_def: Any

    def __call__(self, denoise_leaves, energy_leaves, scale, x, sigma):
        denoise_fn = callables.join(self.denoise_def, denoise_leaves)
        energy_fn = callables.join(self.energy_def, energy_leaves)
        denoised, vjp = jax.vjp(lambda x_: denoise_fn(x_, sigma), x)
        _check_out("denoise_fn", denoised, x.shape)

        def total(y):
            e = energy_fn(y)
            _check_out("energy_fn", e, x.shape[:1])
            return jnp.sum(e)

        (grad_x,) = vjp(jax.grad(total)(denoised))
        s2 = _sigma_like(x, sigma) ** 2
        return denoised - scale.astype(denoised.dtype) * s2 * grad_x


def energy(denoise_fn: Callable, energy_fn: Callable, scale) -> Partial:
    """Energy guidance on the denoised estimate (universal guidance / DPS style).

    ``D_g(x; sigma) = D(x; sigma) - scale * sigma^2 * grad_x E(D(x; sigma))``: the score
    ``(D - x) / sigma^2`` receives ``-scale * grad_x E``, so sampling is tilted towards
    ``p(x) exp(-scale E)`` (approximately: E is evaluated on the posterior mean, and
    its gradient is taken through the denoiser with ``jax.vjp``). E is in nats; the
    correction ``sigma^2 grad_x E`` has the units of x. One denoiser forward and one
    backward pass per call. Per-sample gradients come from ``grad(sum_b E_b)``, valid
    because the denoiser treats batch elements independently.

    Args:
      denoise_fn: ``D(x (B, ...), sigma (B,)) -> (B, ...)``, differentiable in x.
      energy_fn: ``E(x0_hat (B, ...)) -> (B,)``, one energy per sample.
      scale: guidance strength (float, may be traced); 0 is the plain denoiser.

    Returns:
      ``denoise_fn(x (B, ...), sigma (B,)) -> (B, ...)`` as a ``Partial``.

    Raises:
      ValueError: non-callable arguments or a bad scale; at call time, an energy_fn that
        does not return shape (B,).
    """
    _check_callable("denoise_fn", denoise_fn)
    _check_callable("energy_fn", energy_fn)
    d_def, d_leaves = callables.split(denoise_fn)
    e_def, e_leaves = callables.split(energy_fn)
    return Partial(_Energy(d_def, e_def), d_leaves, e_leaves, _as_scale("scale", scale))


@dataclasses.dataclass(frozen=True)
class _Classifier:
    denoise_def: Any
    log_prob_def: Any

    def __call__(self, denoise_leaves, log_prob_leaves, labels, scale, x, sigma):
        denoise_fn = callables.join(self.denoise_def, denoise_leaves)
        log_prob_fn = callables.join(self.log_prob_def, log_prob_leaves)
        b = x.shape[0]
        if labels.shape[0] != b:
            raise ValueError(f"labels has batch {labels.shape[0]} but x has batch {b}")
        sigma_b = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), (b,))

        def total(x_):
            logp = log_prob_fn(x_, sigma_b)
            if getattr(logp, "ndim", None) != 2 or logp.shape[0] != b:
                raise ValueError(f"log_prob_fn must return shape (B={b}, num_classes), got "
                                 f"{getattr(logp, 'shape', type(logp).__name__)}")
            picked = jnp.take_along_axis(logp, labels[:, None], axis=1, mode="clip")
            return jnp.sum(picked)

        grad_x = jax.grad(total)(x)
        denoised = denoise_fn(x, sigma)
        _check_out("denoise_fn", denoised, x.shape)
        s2 = _sigma_like(x, sigma) ** 2
        return denoised + scale.astype(denoised.dtype) * s2 * grad_x.astype(denoised.dtype)


def classifier(denoise_fn: Callable, log_prob_fn: Callable, labels, scale) -> Partial:
    """Classifier guidance (Dhariwal & Nichol) with a noise-aware classifier on x_t.

    The special case ``E(x) = -log p(y | x, sigma)`` evaluated at the noisy x (not at
    D(x)): the score gets ``+scale * grad_x log p(y | x; sigma)``, i.e.
    ``D_g = D + scale * sigma^2 * grad_x log p(y | x; sigma)``. A classifier that does
    not depend on x leaves the denoiser unchanged. No gradient flows through the
    denoiser (one forward pass of each network, one backward pass of the classifier).

    Args:
      denoise_fn: ``D(x (B, ...), sigma (B,)) -> (B, ...)``.
      log_prob_fn: ``log_prob_fn(x (B, ...), sigma (B,)) -> (B, num_classes)`` class
        log-probabilities (e.g. ``jax.nn.log_softmax`` of logits), differentiable in x.
      labels: (B,) int target classes.
      scale: guidance strength w (float, may be traced).

    Returns:
      ``denoise_fn(x (B, ...), sigma (B,)) -> (B, ...)`` as a ``Partial``.

    Raises:
      ValueError: labels not an int (B,) array, bad scale; at call time, a batch
        mismatch or log_prob_fn not returning (B, num_classes).
    """
    _check_callable("denoise_fn", denoise_fn)
    _check_callable("log_prob_fn", log_prob_fn)
    labels = _as_labels(labels)
    d_def, d_leaves = callables.split(denoise_fn)
    c_def, c_leaves = callables.split(log_prob_fn)
    return Partial(_Classifier(d_def, c_def), d_leaves, c_leaves, labels,
                   _as_scale("scale", scale))
