"""KT's limited-data augmentation of translator batches: random masking and Gaussian
noise on the translator's input (``t``, large-model params), its target (``s``,
compressed params) or ``both``."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["MASK_TARGETS", "AugmentConfig", "augment", "check_target"]

MASK_TARGETS = ("t", "s", "both")


class AugmentConfig(NamedTuple):
    """Limited-data augmentation (static; the default is none). ``*_target``: "t" (the
    translator's input, large-model params), "s" (the target, compressed params) or
    "both"."""
    mask_prob: float = 0.0
    mask_target: str = "t"
    noise_std: float = 0.0
    noise_target: str = "t"


def check_target(name, value):
    """A ValueError naming ``name`` and :data:`MASK_TARGETS` unless ``value`` is one."""
    if value not in MASK_TARGETS:
        raise ValueError(f"{name} must be one of {list(MASK_TARGETS)}, got {value!r}")


def augment(key, tokens, targets, cfg: AugmentConfig):
    """Random masking then Gaussian noise, each on the input, target or both.

    Masking zeroes each entry independently with probability ``mask_prob``; noise adds
    ``noise_std * N(0, 1)``. Independent draws for input and target.

    Args:
      key: PRNG key.
      tokens: (B, 72, 9) translator inputs; targets: (B, 36, 9) translator targets.
      cfg: the augmentation settings.

    Returns:
      (tokens, targets) of the same shapes and dtypes.
    """
    check_target("mask_target", cfg.mask_target)
    check_target("noise_target", cfg.noise_target)
    if cfg.mask_prob <= 0 and cfg.noise_std <= 0:
        return tokens, targets
    # One uniform draw for everything (a single PRNG site compiles much faster on CPU):
    # rows = (mask input, mask target, noise input, noise target) over the flattened
    # concatenation of tokens and targets; u is uniform on (-1, 1) (as inside
    # jax.random.normal): masks keep u >= 2p - 1, normals are sqrt(2) erfinv(u).
    nt = tokens[0].size
    flat = jnp.concatenate([tokens.reshape(tokens.shape[0], -1),
                            targets.reshape(targets.shape[0], -1)], axis=1)
    lo = jnp.nextafter(jnp.array(-1.0, flat.dtype), jnp.array(0.0, flat.dtype))
    u = jax.random.uniform(key, (4,) + flat.shape, flat.dtype, minval=lo, maxval=1.0)
    split = lambda a: (a[:, :nt].reshape(tokens.shape), a[:, nt:].reshape(targets.shape))
    on = lambda target, which: target in (which, "both")
    if cfg.mask_prob > 0:
        (m_t, _), (_, m_s) = split(u[0]), split(u[1])
        if on(cfg.mask_target, "t"):
            tokens = jnp.where(m_t < 2 * cfg.mask_prob - 1, jnp.zeros_like(tokens), tokens)
        if on(cfg.mask_target, "s"):
            targets = jnp.where(m_s < 2 * cfg.mask_prob - 1, jnp.zeros_like(targets),
                                targets)
    if cfg.noise_std > 0:
        normal = lambda v: jnp.sqrt(2.0).astype(v.dtype) * jax.scipy.special.erfinv(v)
        (n_t, _), (_, n_s) = split(u[2]), split(u[3])
        if on(cfg.noise_target, "t"):
            tokens = tokens + cfg.noise_std * normal(n_t)
        if on(cfg.noise_target, "s"):
            targets = targets + cfg.noise_std * normal(n_s)
    return tokens, targets
