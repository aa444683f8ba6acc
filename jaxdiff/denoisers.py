"""Exact denoisers ``D(x; sigma) = E[x0 | x0 + sigma * eps = x]`` (EDM convention).

Every constructor returns ``denoise_fn(x, sigma) -> D(x; sigma)`` where ``x`` has shape
(B, ...) (trailing dims are flattened to (B, D) internally), ``sigma`` is a noise level
in data units with shape (B,) or a scalar (broadcast), and the output has ``x``'s shape
and dtype. Parameters are cast to ``x.dtype`` inside, so one denoiser serves float32 and
float64 inputs (build it with x64 enabled if the data itself must stay float64). Eager
calls run a jitted core, compiled once per input shape and dtype.

The returned denoisers are ``jax.tree_util.Partial`` objects: hashable (usable as a
static ``jit`` argument, where the data become compile-time constants) and pytrees (pass
them as ordinary ``jit`` arguments to keep a large data set out of the compiled
program). They are pure and work under ``jit``, ``vmap`` and ``grad``.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

_HI = jax.lax.Precision.HIGHEST  # logits are scaled by 1/sigma^2: no TF32/bf16 matmuls.


def as_points(x, dim: int, name: str = "x"):
    """Flattens a floating (B, ...) array to (B, D), checking that D == ``dim``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (B, ...), got {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] != dim:
        raise ValueError(f"{name} of shape {x.shape} has {flat.shape[1]} features per row; "
                         f"the data have {dim}")
    return flat


def _flatten_inputs(x, sigma, dim):
    """Returns ``x`` as (B, D) and ``sigma`` as (B,), both in ``x.dtype``."""
    xf = as_points(x, dim)
    sigma = jnp.asarray(sigma, xf.dtype)
    if sigma.ndim == 0:
        sigma = jnp.broadcast_to(sigma, (xf.shape[0],))
    elif sigma.shape != (xf.shape[0],):
        raise ValueError(f"sigma must be a scalar or of shape ({xf.shape[0]},), "
                         f"got {sigma.shape}")
    return xf, sigma


# --------------------------------------------------------------------------- optimal


@jax.jit
def _optimal_apply(chunks, valid, x, sigma):
    """Streaming-softmax posterior mean over padded data ``chunks`` (C, c, D)."""
    xf, sigma = _flatten_inputs(x, sigma, chunks.shape[-1])
    dtype = xf.dtype
    inv_var = 1.0 / jnp.square(sigma)  # (B,)

    def step(carry, inp):
        m, norm, acc = carry  # (B,), (B,), (B, D): running max, normaliser, sum.
        y, ok = inp  # (c, D), (c,)
        y = y.astype(dtype)
        half_sq = 0.5 * jnp.sum(jnp.square(y), axis=-1)  # (c,)
        logits = (jnp.matmul(xf, y.T, precision=_HI) - half_sq) * inv_var[:, None]
        logits = jnp.where(ok, logits, -jnp.inf)  # (B, c); padded rows masked.
        m_new = jnp.maximum(m, jax.lax.stop_gradient(jnp.max(logits, axis=-1)))
        scale = jnp.exp(m - m_new)
        p = jnp.exp(logits - m_new[:, None])
        norm = norm * scale + jnp.sum(p, axis=-1)
        acc = acc * scale[:, None] + jnp.matmul(p, y, precision=_HI)
        return (m_new, norm, acc), None

    batch = xf.shape[0]
    init = (jnp.full((batch,), -jnp.inf, dtype), jnp.zeros((batch,), dtype),
            jnp.zeros_like(xf))
    (_, norm, acc), _ = jax.lax.scan(step, init, (chunks, valid))
    return (acc / norm[:, None]).reshape(jnp.shape(x))


def optimal(data, *, chunk=4096):
    """Exact denoiser of the empirical distribution of ``data``.

    ``D(x; sigma) = sum_i softmax_i(-|x - y_i|^2 / (2 sigma^2)) y_i``, evaluated with
    logits ``(x . y_i - |y_i|^2 / 2) / sigma^2`` (|x|^2 cancels in the softmax) and an
    online softmax scanned over chunks of the data, so memory is O(B * chunk + B * D)
    for a query batch of B (reverse-mode gradients additionally keep O(B * N)).

    Args:
      data: (N, ...) array of N >= 1 examples; trailing dims are flattened to D.
        Non-float data are converted to float32.
      chunk: number of data rows per scan step (int >= 1); clamped to N.

    Returns:
      ``denoise_fn(x, sigma)`` with x (B, ...) whose trailing dims flatten to D.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    data = jnp.asarray(data)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {data.shape}")
    if not jnp.issubdtype(data.dtype, jnp.floating):
        data = data.astype(jnp.float32)
    n = data.shape[0]
    flat = data.reshape(n, -1)
    chunk = int(min(chunk, n))
    num_chunks = -(-n // chunk)
    pad = num_chunks * chunk - n
    chunks = jnp.pad(flat, ((0, pad), (0, 0))).reshape(num_chunks, chunk, -1)
    valid = (jnp.arange(num_chunks * chunk) < n).reshape(num_chunks, chunk)
    # Device arrays: stored once, not copied to the device at every call.
    return Partial(_optimal_apply, jnp.asarray(chunks), jnp.asarray(valid))


# -------------------------------------------------------------------- Gaussian mixture


class GaussianMixture(NamedTuple):
    """Mixture sum_k weights[k] N(means[k], diag(variances[k])).

    Attributes:
      means: (K, D) component means.
      variances: (K,) isotropic or (K, D) diagonal component variances (>= 0).
      weights: (K,) positive mixing weights summing to 1.
    """

    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray


def _validate_gmm(means, variances, weights):
    """Checks shapes and values eagerly; returns float64 numpy arrays."""
    means = np.asarray(means, np.float64)
    variances = np.asarray(variances, np.float64)
    weights = np.asarray(weights, np.float64)
    if means.ndim != 2 or means.shape[0] < 1:
        raise ValueError(f"means must have shape (K, D) with K >= 1, got {means.shape}")
    k, d = means.shape
    if variances.shape not in ((k,), (k, d)):
        raise ValueError(f"variances must have shape (K,)=({k},) or (K, D)=({k}, {d}), "
                         f"got {variances.shape}")
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape (K,)=({k},), got {weights.shape}")
    if not np.all(np.isfinite(means)):
        raise ValueError("means must be finite")
    if not np.all(np.isfinite(variances) & (variances >= 0)):
        raise ValueError(f"variances must be finite and >= 0, min is {variances.min()}")
    if not np.all(np.isfinite(weights) & (weights > 0)):
        raise ValueError(f"weights must be finite and > 0, got {weights}")
    return means, variances, weights / weights.sum()


def _gmm_terms(params, x, sigma):
    """Per-component log joint (B, K), x (B, D), params in x.dtype with (K, D) vars."""
    means, variances, log_w = params
    xf, sigma = _flatten_inputs(x, sigma, means.shape[1])
    dtype = xf.dtype
    means = jnp.asarray(means, dtype)
    variances = jnp.asarray(variances, dtype)
    if variances.ndim == 1:
        variances = jnp.broadcast_to(variances[:, None], means.shape)
    log_w = jnp.asarray(log_w, dtype)
    total = variances[None] + jnp.square(sigma)[:, None, None]  # (B, K, D)
    diff = xf[:, None, :] - means[None]  # (B, K, D)
    log_norm = -0.5 * jnp.sum(jnp.log(2 * jnp.pi * total) + jnp.square(diff) / total,
                              axis=-1)
    return xf, means, variances, total, diff, log_w + log_norm


@jax.jit
def _gmm_apply(means, variances, log_w, x, sigma):
    """Posterior mean of a Gaussian mixture; see ``gaussian_mixture``."""
    xf, means, variances, total, diff, log_joint = _gmm_terms(
        (means, variances, log_w), x, sigma)
    resp = jax.nn.softmax(log_joint, axis=-1)  # (B, K)
    cond_mean = means[None] + variances[None] / total * diff  # (B, K, D)
    out = jnp.einsum("bk,bkd->bd", resp, cond_mean, precision=_HI)
    return out.reshape(jnp.shape(x))


def gaussian_mixture(means, variances=None, weights=None):
    """Exact denoiser of a Gaussian mixture with diagonal (or isotropic) covariances.

    With responsibilities ``g_k(x) ∝ w_k N(x; mu_k, diag(v_k + sigma^2))``,
    ``D(x; sigma) = sum_k g_k(x) (mu_k + v_k / (v_k + sigma^2) * (x - mu_k))``.
    Memory is O(B * K * D).

    Args:
      means: (K, D) component means, or a whole ``GaussianMixture`` (then omit the rest).
      variances: (K,) isotropic or (K, D) diagonal variances, >= 0.
      weights: (K,) positive weights; normalised to sum to 1.

    Returns:
      ``denoise_fn(x, sigma)`` with x (B, ...) whose trailing dims flatten to D.
    """
    if isinstance(means, GaussianMixture) and variances is None and weights is None:
        means, variances, weights = means
    if variances is None or weights is None:
        raise ValueError("gaussian_mixture needs means, variances and weights "
                         "(or one GaussianMixture)")
    means, variances, weights = _validate_gmm(means, variances, weights)
    return Partial(_gmm_apply, jnp.asarray(means), jnp.asarray(variances),
                   jnp.asarray(np.log(weights)))


def gaussian_mixture_log_density(gmm, x, sigma):
    """Log density ``log p_sigma(x)`` of the mixture convolved with N(0, sigma^2 I).

    Args:
      gmm: a ``GaussianMixture``.
      x: (B, ...) points whose trailing dims flatten to D.
      sigma: scalar or (B,) noise levels.

    Returns:
      (B,) log densities in ``x.dtype`` (nats).
    """
    means, variances, weights = _validate_gmm(*gmm)
    return _gmm_log_density(means, variances, np.log(weights), x, sigma)


@jax.jit
def _gmm_log_density(means, variances, log_w, x, sigma):
    """Jitted core of ``gaussian_mixture_log_density``."""
    *_, log_joint = _gmm_terms((means, variances, log_w), x, sigma)
    return jax.nn.logsumexp(log_joint, axis=-1)


def sample_gaussian_mixture(gmm, key, n, dtype=jnp.float32):
    """Draws ``n`` samples of shape (n, D) from ``gmm``.

    Args:
      gmm: a ``GaussianMixture``.
      key: a JAX PRNG key.
      n: number of samples (int >= 0).
      dtype: output float dtype.
    """
    means, variances, weights = _validate_gmm(*gmm)
    if variances.ndim == 1:
        variances = np.broadcast_to(variances[:, None], means.shape)
    key_comp, key_eps = jax.random.split(key)
    comp = jax.random.categorical(key_comp, jnp.log(jnp.asarray(weights, dtype)),
                                  shape=(n,))
    eps = jax.random.normal(key_eps, (n, means.shape[1]), dtype)
    std = jnp.sqrt(jnp.asarray(variances, dtype))
    return jnp.asarray(means, dtype)[comp] + std[comp] * eps


def fit_gaussian_mixture(data, k, seed=0, *, reg_covar=1e-4, max_iter=200):
    """Fits a diagonal-covariance mixture with scikit-learn's EM.

    Args:
      data: (N, ...) array, flattened to (N, D).
      k: number of components, 1 <= k <= N.
      seed: random state for the k-means initialisation.
      reg_covar: variance floor added by scikit-learn (data units squared).
      max_iter: maximum number of EM iterations.

    Returns:
      ``GaussianMixture`` of float32 numpy arrays: means (k, D), variances (k, D),
      weights (k,).
    """
    from sklearn.mixture import GaussianMixture as _SkGMM  # Lazy: heavy import.

    data = np.asarray(data, np.float64)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (N, ...) with N >= 1, got {data.shape}")
    flat = data.reshape(data.shape[0], -1)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) \
            or not 1 <= k <= flat.shape[0]:
        raise ValueError(f"k must be an int in [1, N={flat.shape[0]}], got {k!r}")
    sk = _SkGMM(n_components=int(k), covariance_type="diag", reg_covar=reg_covar,
                max_iter=max_iter, random_state=seed).fit(flat)
    return GaussianMixture(sk.means_.astype(np.float32),
                           sk.covariances_.astype(np.float32),
                           (sk.weights_ / sk.weights_.sum()).astype(np.float32))


def error_by_sigma(denoise_fn, reference_fn, data, sigmas, *, key, num_samples: int = 256):
    """How far a denoiser is from a reference one, per noise level, on noisy data.

    For each sigma, ``num_samples`` data points x0 (drawn with replacement) are noised to
    x = x0 + sigma * eps, and the per-sample L2 distance ||D(x; sigma) - D_ref(x; sigma)||
    is averaged. With ``reference_fn = optimal(data)`` this is a trained network's error
    against the exact denoiser of its training set, band by band.

    Args:
      denoise_fn, reference_fn: ``fn(x (B, ...), sigma (B,)) -> (B, ...)``.
      data: (N, ...) clean data points.
      sigmas: (S,) noise levels.
      key: PRNG key (data draws and noise).
      num_samples: points per noise level.

    Returns:
      (S,) numpy float64 mean distances (data units).
    """
    data = jnp.asarray(data)
    out = []
    for i, sigma in enumerate(np.asarray(sigmas, np.float64)):
        k_pick, k_noise = jax.random.split(jax.random.fold_in(key, i))
        x0 = data[jax.random.randint(k_pick, (num_samples,), 0, data.shape[0])]
        x = x0 + sigma * jax.random.normal(k_noise, x0.shape, x0.dtype)
        s = jnp.full((num_samples,), sigma, x.dtype)
        diff = (denoise_fn(x, s) - reference_fn(x, s)).reshape(num_samples, -1)
        out.append(float(jnp.mean(jnp.linalg.norm(diff, axis=1))))
    return np.asarray(out)
