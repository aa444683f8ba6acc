"""Features of the detectors in :mod:`jaxdiff.detect` (re-exported there).

Imperceptible features (frequency spectrum, high-pass residual) and the DIRE
reconstruction error. Images are (N, H, W, C) floats in [-1, 1]; all feature functions
are jitted and return float arrays of shape (N, F) (or maps (N, H, W, C)).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["quantize", "radial_spectrum", "highpass_residual", "frequency_features",
           "dire_error", "dire_features", "log_error_map", "check_images"]


def check_images(images, name: str = "images"):
    """``images`` as a jax array; ValueError unless it is a non-empty float (N, H, W, C)."""
    images = jnp.asarray(images)
    if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{name} must be a float array of shape (N, H, W, C), got "
                         f"{images.dtype} {images.shape}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} is empty: shape {images.shape}")
    return images


def quantize(images, levels: int = 17):
    """Clips to [-1, 1] and rounds to ``levels`` equally spaced values (as saving to a
    file with ``levels`` grey levels does; digits has 17). ``levels=0``: clip only."""
    x = jnp.clip(jnp.asarray(images), -1.0, 1.0)
    if levels == 0:
        return x
    if levels < 2:
        raise ValueError(f"levels must be 0 (off) or >= 2, got {levels}")
    step = 2.0 / (levels - 1)
    return jnp.round((x + 1.0) / step) * step - 1.0


@functools.lru_cache(maxsize=32)
def _radial_bins(h: int, w: int) -> np.ndarray:
    """(B, h*w) averaging matrix: bin b = floor(|f| * min(h, w)) of the frequency
    |f| = sqrt(fy^2 + fx^2) in cycles/pixel, B = floor(min(h, w) / sqrt(2)) + 1 bins."""
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    idx = np.floor(np.sqrt(fy ** 2 + fx ** 2) * min(h, w) + 1e-9).astype(int).ravel()
    onehot = np.eye(idx.max() + 1)[idx].T
    return onehot / onehot.sum(axis=1, keepdims=True)


@jax.jit
def radial_spectrum(images):
    """Log-magnitude radial spectrum.

    Args:
      images: (N, H, W, C); the channel mean is transformed, after subtracting each
        image's mean.

    Returns:
      (N, B) mean of log(|FFT|^2 + 1e-6) over each radial frequency band
      (see :func:`_radial_bins`: B = 6 bands for 8x8 images); band 0 holds only the
      (zero) DC term.
    """
    x = jnp.mean(images, axis=-1)
    x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
    power = jnp.abs(jnp.fft.fft2(x)) ** 2
    logp = jnp.log(power + 1e-6).reshape(x.shape[0], -1)
    return logp @ jnp.asarray(_radial_bins(*x.shape[1:]), logp.dtype).T


@jax.jit
def highpass_residual(images):
    """(N, H, W, C) residual of the 3x3 Laplacian high-pass filter
    ``x - mean of the 8 neighbours`` (edge padding)."""
    p = jnp.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = images.shape[1:3]
    neigh = sum(p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)
                if (i, j) != (1, 1))
    return images - neigh / 8.0


def _moments(r):
    """(N, 5) statistics of a (N, ...) residual: log mean |r|, log std, kurtosis,
    log max |r|, fraction of |r| < 1e-3 (exact flat regions)."""
    r = r.reshape(r.shape[0], -1)
    a = jnp.abs(r)
    std = jnp.std(r, axis=1) + 1e-8
    kurt = jnp.mean((r - r.mean(1, keepdims=True)) ** 4, axis=1) / std ** 4
    return jnp.stack([jnp.log(a.mean(1) + 1e-8), jnp.log(std), jnp.log(kurt),
                      jnp.log(a.max(1) + 1e-8), jnp.mean(a < 1e-3, axis=1)], axis=1)


@jax.jit
def frequency_features(images):
    """(N, B + 5) imperceptible features of (N, H, W, C) images: the radial spectrum
    without its DC band (:func:`radial_spectrum`, B - 1 values) and statistics of the
    high-pass residual (log mean |r|, log std, log kurtosis, log max |r|, fraction of
    |r| < 1e-3) plus the fraction of pixels at the extremes -1 / +1 (|x| > 0.99)."""
    spec = radial_spectrum(images)[:, 1:]
    sat = jnp.mean(jnp.abs(images) > 0.99, axis=(1, 2, 3))[:, None]
    return jnp.concatenate([spec, _moments(highpass_residual(images)), sat], axis=1)


def dire_error(denoise_fn: Callable, images, sigmas, *, solver: str = "euler",
               batch_size: int = 0, **options):
    """DIRE error map ``|x - reconstruct(x)|`` (N, H, W, C) >= 0.

    The images are inverted along ``sigmas[::-1]`` and regenerated along ``sigmas`` with
    :func:`jaxdiff.conditioning.reconstruct` (cost: 2 (N_sigmas - 1) denoiser calls per
    solver stage).

    Args:
      denoise_fn: ``D(x (B, H, W, C), sigma (B,))``.
      images: (N, H, W, C) in [-1, 1].
      sigmas: (S,) strictly decreasing sampling schedule.
      solver: any solver name (see jaxdiff.conditioning.invert).
      batch_size: process in chunks of this size (0: all at once).
      **options: solver options.
    """
    from jaxdiff import conditioning
    images = check_images(images)
    chunk = batch_size or images.shape[0]
    out = []
    for lo in range(0, images.shape[0], chunk):
        x = images[lo:lo + chunk]
        rec, _ = conditioning.reconstruct(denoise_fn, x, sigmas, solver=solver, **options)
        out.append(jnp.abs(x - rec))
    return jnp.concatenate(out, axis=0)


@jax.jit
def dire_features(error):
    """(N, 5 + B - 1) features of a (N, H, W, C) DIRE error map: log mean, log RMS,
    log max, log median and log 90th percentile of the error, and the radial
    log-spectrum of the error map without its DC band (:func:`radial_spectrum`)."""
    e = error.reshape(error.shape[0], -1)
    lg = lambda v: jnp.log(v + 1e-6)
    stats = jnp.stack([lg(e.mean(1)), lg(jnp.sqrt(jnp.mean(e ** 2, axis=1))), lg(e.max(1)),
                       lg(jnp.median(e, axis=1)), lg(jnp.quantile(e, 0.9, axis=1))], axis=1)
    return jnp.concatenate([stats, radial_spectrum(error)[:, 1:]], axis=1)


@jax.jit
def log_error_map(error):
    """(N, H, W, C) ``log(error + 1e-3)``: the DIRE map fed to the CNN head."""
    return jnp.log(error + 1e-3)
