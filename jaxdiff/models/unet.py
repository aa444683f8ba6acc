"""A small Flax U-Net denoiser with EDM preconditioning, for 8x8 to 32x32 images.

    model = UNet(image_size=8, in_channels=1, base_channels=32, channel_mults=(1, 2))
    params = init(model, jax.random.PRNGKey(0))
    denoise_fn = make_denoiser(model, params)         # denoise_fn(x, sigma (B,)) -> D
    x0 = jaxdiff.sample(denoise_fn, 80.0 * z, sigmas, solver="heun")

The network F is wrapped as in EDM's ``EDMPrecond``:
``D(x; sigma) = c_skip x + c_out F(c_in x; c_noise, label)`` with
c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4 (sd = ``sigma_data``).

Why Linen and not NNX: the rest of jaxdiff (e.g. the AMED predictor) is Linen, and Linen
parameters are a plain pytree of arrays, so a denoiser is just
``jax.tree_util.Partial(apply, params)``: traced by :func:`jaxdiff.sample` (new parameters
never recompile), checkpointed by Orbax as-is, and free of NNX graph-mode state.

Images are NHWC. Resolutions halve ``len(channel_mults) - 1`` times, so the image size
must be divisible by ``2 ** (len(channel_mults) - 1)``: 8 -> 4 for digits, 28 -> 14 -> 7
for Fashion-MNIST, 32 -> 16 -> 8 for CIFAR-sized images.

The AMED predictor's bottleneck feature (diffusion.md section 6) is the channel mean of
the output of the last encoder block at the lowest resolution, flattened to (B, h * w);
:func:`make_feature_fn` returns it without running the decoder, and
``model.apply(..., return_features=True)`` returns ``(D, feature)`` from one pass.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

__all__ = ["UNet", "edm_scalings", "init", "make_denoiser", "make_feature_fn",
           "feature_shape", "count_params"]

NOISE_EMBEDDINGS = ("fourier", "positional")


def edm_scalings(sigma, sigma_data: float = 0.5):
    """EDM preconditioning coefficients (EDMPrecond).

    Args:
      sigma: noise level(s), any shape, in data units.
      sigma_data: standard deviation of the data.

    Returns:
      (c_skip, c_out, c_in, c_noise), each shaped like ``sigma``.
    """
    sigma = jnp.asarray(sigma)
    sd2 = sigma_data ** 2
    total = sigma ** 2 + sd2
    c_skip = sd2 / total
    c_out = sigma * sigma_data / jnp.sqrt(total)
    c_in = 1.0 / jnp.sqrt(total)
    c_noise = jnp.log(sigma) / 4.0
    return c_skip, c_out, c_in, c_noise


def _groups(channels: int, max_groups: int) -> int:
    """Number of GroupNorm groups: a divisor of ``channels``, at most ``max_groups``."""
    return math.gcd(channels, max_groups)


def _noise_embedding(c_noise, channels: int, kind: str, fourier_scale: float):
    """(B,) -> (B, channels) sinusoidal embedding of the conditioning time ``c_noise``.

    "positional": EDM's frequencies (1/1e4)^(i / (n-1)); "fourier": fixed Gaussian
    frequencies with std ``fourier_scale`` (deterministic: drawn from PRNGKey(0) at trace
    time, so they are constants, not parameters).
    """
    half = channels // 2
    if kind == "positional":
        freqs = (1.0 / 1e4) ** (jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    elif kind == "fourier":
        freqs = 2.0 * jnp.pi * fourier_scale * jax.random.normal(
            jax.random.PRNGKey(0), (half,), jnp.float32)
    else:
        raise ValueError(f"unknown noise_embedding {kind!r}; valid: {NOISE_EMBEDDINGS}")
    arg = c_noise[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv, add the embedding, GroupNorm-SiLU-Conv, scaled residual."""
    channels: int
    norm_groups: int = 8

    @nn.compact
    def __call__(self, x, emb):
        h = nn.silu(nn.GroupNorm(_groups(x.shape[-1], self.norm_groups))(x))
        h = nn.Conv(self.channels, (3, 3))(h)
        h = h + nn.Dense(self.channels)(emb)[:, None, None, :]
        h = nn.silu(nn.GroupNorm(_groups(self.channels, self.norm_groups))(h))
        # Zero-initialised last conv: every block starts as the identity.
        h = nn.Conv(self.channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
        if x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), name="skip")(x)
        return (x + h) * (1.0 / math.sqrt(2.0))


class Attention(nn.Module):
    """Multi-head self-attention over the h * w positions, with a residual connection."""
    num_heads: int = 1
    norm_groups: int = 8

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"attention: {c} channels not divisible by {self.num_heads} heads")
        d = c // self.num_heads
        h = nn.GroupNorm(_groups(c, self.norm_groups))(x).reshape(b, hh * ww, c)
        qkv = nn.Dense(3 * c)(h).reshape(b, hh * ww, 3, self.num_heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]          # (B, L, heads, d)
        w = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d), axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hh * ww, c)
        out = nn.Dense(c, kernel_init=nn.initializers.zeros)(out)
        return x + out.reshape(b, hh, ww, c)


class UNet(nn.Module):
    """EDM-preconditioned U-Net denoiser D(x; sigma, label).

    Attributes:
      image_size: height = width of the images the model accepts.
      in_channels: image channels (1 for digits/Fashion-MNIST, 3 for RGB).
      base_channels: channels at the highest resolution.
      channel_mults: channels per resolution, as multiples of ``base_channels``; one
        entry per resolution, highest first.
      num_res_blocks: residual blocks per resolution in the encoder (decoder: one more).
      attention: self-attention after the blocks at the lowest resolution and in the
        middle.
      num_heads: attention heads.
      norm_groups: maximum GroupNorm groups (the gcd with the channel count is used).
      noise_embedding: "fourier" or "positional" embedding of c_noise.
      fourier_scale: std of the fixed Fourier frequencies.
      emb_channels: width of the noise/label embedding (0: 4 * base_channels).
      num_classes: 0 for an unconditional model; otherwise labels are ints in
        ``[0, num_classes)`` and ``num_classes`` itself is the "null" label (label
        dropout / unconditional sampling of a conditional model).
      sigma_data: data standard deviation of the EDM preconditioning.
    """
    image_size: int
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: Sequence[int] = (1, 2)
    num_res_blocks: int = 2
    attention: bool = False
    num_heads: int = 1
    norm_groups: int = 8
    noise_embedding: str = "fourier"
    fourier_scale: float = 16.0
    emb_channels: int = 0
    num_classes: int = 0
    sigma_data: float = 0.5

    def _check(self, x, sigma, labels):
        levels = len(self.channel_mults)
        if levels < 1:
            raise ValueError("channel_mults must have at least one entry")
        if self.image_size % (2 ** (levels - 1)):
            raise ValueError(
                f"image_size {self.image_size} is not divisible by 2^{levels - 1} "
                f"(channel_mults {tuple(self.channel_mults)} halves the resolution "
                f"{levels - 1} times); pad the images or use fewer resolutions")
        expected = (self.image_size, self.image_size, self.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape (B, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}) for this UNet (image_size={self.image_size}, "
                             f"in_channels={self.in_channels}), got {tuple(x.shape)}")
        if jnp.shape(sigma) != (x.shape[0],):
            raise ValueError(f"sigma must have shape ({x.shape[0]},), got {jnp.shape(sigma)}")
        if labels is not None:
            if self.num_classes <= 0:
                raise ValueError("labels given to an unconditional UNet (num_classes=0)")
            if jnp.shape(labels) != (x.shape[0],):
                raise ValueError(f"labels must have shape ({x.shape[0]},), "
                                 f"got {jnp.shape(labels)}")

    @nn.compact
    def __call__(self, x, sigma, labels=None, *, features_only: bool = False,
                 return_features: bool = False):
        """Denoises ``x`` at noise level ``sigma``.

        Args:
          x: (B, H, W, C) noisy images, H = W = ``image_size``, C = ``in_channels``.
          sigma: (B,) noise levels (data units, > 0).
          labels: (B,) int class labels, ``num_classes`` for "no label"; None means
            unconditional (the null label for a conditional model).
          features_only: return only the bottleneck feature and skip the decoder.
          return_features: return ``(D, feature)`` from one pass.

        Returns:
          D(x; sigma) (B, H, W, C) in x's dtype. The feature, (B, h * w) float32, is the
          channel mean of the last lowest-resolution encoder block, flattened; it is
          returned alone with ``features_only`` and as ``(D, feature)`` with
          ``return_features``.
        """
        self._check(x, sigma, labels)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma.astype(jnp.float32),
                                                    self.sigma_data)
        emb_ch = self.emb_channels or 4 * self.base_channels
        emb = _noise_embedding(c_noise, self.base_channels, self.noise_embedding,
                               self.fourier_scale)
        emb = nn.silu(nn.Dense(emb_ch, name="map_noise0")(emb))
        if self.num_classes > 0:
            if labels is None:
                labels = jnp.full((x.shape[0],), self.num_classes, jnp.int32)
            emb = emb + nn.Embed(self.num_classes + 1, emb_ch, name="map_label")(
                labels.astype(jnp.int32))
        emb = nn.silu(nn.Dense(emb_ch, name="map_noise1")(emb))

        h = nn.Conv(self.base_channels, (3, 3), name="conv_in")(
            x.astype(jnp.float32) * c_in[:, None, None, None])
        skips = [h]
        last = len(self.channel_mults) - 1
        for level, mult in enumerate(self.channel_mults):
            for i in range(self.num_res_blocks):
                h = ResBlock(self.base_channels * mult, self.norm_groups,
                             name=f"enc{level}_block{i}")(h, emb)
                if self.attention and level == last:
                    h = Attention(self.num_heads, self.norm_groups,
                                  name=f"enc{level}_attn{i}")(h)
                skips.append(h)
            if level != last:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), name=f"enc{level}_down")(h)
                skips.append(h)
        # The AMED tap: the last lowest-resolution encoder map, averaged over channels.
        feature = jnp.mean(h, axis=-1).reshape(h.shape[0], -1)
        if features_only:
            return feature

        ch = self.base_channels * self.channel_mults[-1]
        h = ResBlock(ch, self.norm_groups, name="mid_block0")(h, emb)
        if self.attention:
            h = Attention(self.num_heads, self.norm_groups, name="mid_attn")(h)
        h = ResBlock(ch, self.norm_groups, name="mid_block1")(h, emb)

        for level in reversed(range(len(self.channel_mults))):
            for i in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = ResBlock(self.base_channels * self.channel_mults[level], self.norm_groups,
                             name=f"dec{level}_block{i}")(h, emb)
                if self.attention and level == last:
                    h = Attention(self.num_heads, self.norm_groups,
                                  name=f"dec{level}_attn{i}")(h)
            if level != 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = nn.Conv(h.shape[-1], (3, 3), name=f"dec{level}_up")(h)
        h = nn.silu(nn.GroupNorm(_groups(h.shape[-1], self.norm_groups), name="norm_out")(h))
        f = nn.Conv(self.in_channels, (3, 3), kernel_init=nn.initializers.zeros,
                    name="conv_out")(h)
        bc = lambda c: c[:, None, None, None]
        out = (bc(c_skip) * x.astype(jnp.float32) + bc(c_out) * f).astype(x.dtype)
        return (out, feature) if return_features else out


def feature_shape(model: UNet) -> tuple[int, int]:
    """(h, w) of the lowest-resolution map; the feature has h * w entries."""
    s = model.image_size // 2 ** (len(model.channel_mults) - 1)
    return s, s


@functools.partial(jax.jit, static_argnums=(0,))
def _init(model: UNet, key):
    x = jnp.zeros((1, model.image_size, model.image_size, model.in_channels), jnp.float32)
    sigma = jnp.ones((1,), jnp.float32)
    labels = jnp.zeros((1,), jnp.int32) if model.num_classes > 0 else None
    # Why RBG: XLA compiles one threefry graph per parameter array, which takes ~10 s on
    # a loaded 2-core CPU for this network; RngBitGenerator draws compile ~3x faster.
    # The RBG stream is deterministic for a given backend and JAX version (restored
    # checkpoints, not re-initialisation, carry exact resume).
    seed = jax.random.bits(key, (), jnp.uint32)
    return model.init(jax.random.key(seed, impl="rbg"), x, sigma, labels)["params"]


def init(model: UNet, key):
    """Initial float32 parameters of ``model`` (jitted; cached per model).

    Args:
      model: the UNet.
      key: a PRNG key (raw ``PRNGKey`` or typed); it seeds an RBG key for the draws.

    Returns:
      The ``params`` pytree.
    """
    model._check(jnp.zeros((1, model.image_size, model.image_size, model.in_channels)),
                 jnp.ones((1,)), None)
    return _init(model, key)


def count_params(params) -> int:
    """Total number of parameters in a pytree."""
    return int(sum(p.size for p in jax.tree.leaves(params)))


def _as_input(x, sigma):
    """Returns sigma as an array of shape (B,) in x's dtype (scalars are broadcast)."""
    sigma = jnp.asarray(sigma, x.dtype)
    if sigma.ndim == 0:
        sigma = jnp.broadcast_to(sigma, (x.shape[0],))
    return sigma


@functools.partial(jax.jit, static_argnames=("model", "features_only"))
def _apply(model: UNet, params, labels, x, sigma, *, features_only: bool = False):
    # Jitted so that eager calls compile once; inside an outer jit it is simply inlined.
    return model.apply({"params": params}, x, sigma, labels, features_only=features_only)


@dataclasses.dataclass(frozen=True)
class _Denoise:
    """Static part of a denoiser: hashable and equal for equal models (no recompiles)."""
    model: UNet

    def __call__(self, params, labels, x, sigma):
        return _apply(self.model, params, labels, x, _as_input(x, sigma))


@dataclasses.dataclass(frozen=True)
class _Features:
    """Static part of a feature function (see :class:`_Denoise`)."""
    model: UNet

    def __call__(self, params, labels, x, sigma):
        f = _apply(self.model, params, labels, x, _as_input(x, sigma), features_only=True)
        return f.astype(x.dtype)


def _check_labels(model: UNet, labels):
    if labels is None:
        return None
    if model.num_classes <= 0:
        raise ValueError("labels given for an unconditional UNet (num_classes=0)")
    labels = jnp.asarray(labels, jnp.int32)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape (B,), got {labels.shape}")
    return labels


def make_denoiser(model: UNet, params: Any, labels=None) -> Partial:
    """``denoise_fn(x, sigma) -> D(x; sigma)`` for :func:`jaxdiff.sample`.

    Args:
      model: the :class:`UNet`.
      params: its parameters (e.g. the EMA parameters of a training run).
      labels: optional (B,) int labels for a class-conditional model (``num_classes``
        is the null label); the batch of ``x`` must then be B. None: unconditional.

    Returns:
      A ``jax.tree_util.Partial`` whose leaves are ``params`` (and ``labels``): sampling
      traces them, so new parameters or labels reuse the compiled program. Call it as
      ``denoise_fn(x (B, H, W, C), sigma (B,) or scalar) -> (B, H, W, C)``.
    """
    return Partial(_Denoise(model), params, _check_labels(model, labels))


def make_feature_fn(model: UNet, params: Any, labels=None) -> Partial:
    """``feature_fn(x, sigma) -> (B, h * w)``: AMED's bottleneck feature.

    The channel mean of the last encoder block at the lowest resolution (h = w =
    ``image_size / 2^(len(channel_mults) - 1)``), flattened; the decoder is not run.
    Arguments as for :func:`make_denoiser`.
    """
    return Partial(_Features(model), params, _check_labels(model, labels))
