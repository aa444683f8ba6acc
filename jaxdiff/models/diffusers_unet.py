"""A Flax copy of diffusers' ``UNet2DModel``: the DDPM CIFAR-10 / CelebA-HQ / LSUN networks.

    config = UNet2DConfig.from_dict(json.load(open("unet/config.json")))
    model = DiffusersUNet2D(config)
    eps = model.apply({"params": params}, x, t)       # x (B, H, W, C), t (B,) -> (B, H, W, C)
    eps_fn = make_eps_fn(model, params)               # eps_fn(x, t): a pytree (Partial)

Parameters come from a diffusers checkpoint through :mod:`jaxdiff.hub` (``load_unet``),
which maps the PyTorch names one to one: ``down_blocks.1.attentions.0.to_q.weight`` is
``params["down_blocks_1"]["attentions_0"]["to_q"]["kernel"]`` (transposed). The module
reproduces the forward pass of the PyTorch model in eval mode (no dropout):

- time: the sinusoidal ``Timesteps`` embedding of t (float timesteps are fine), with
  ``flip_sin_to_cos`` and ``freq_shift``, then the ``TimestepEmbedding`` MLP
  (linear, SiLU, linear);
- ``conv_in``, the down blocks (``DownBlock2D`` / ``AttnDownBlock2D``: ResNet blocks,
  self-attention after each in the Attn variant, a stride-2 conv except at the last
  level), ``UNetMidBlock2D`` (ResNet, attention, ResNet), the up blocks (``UpBlock2D`` /
  ``AttnUpBlock2D``: ``layers_per_block + 1`` ResNet blocks on the concatenated skips,
  nearest x2 + conv except at the last level), GroupNorm, SiLU, ``conv_out``.

Layout: the module and :func:`make_eps_fn` take NHWC images like the rest of jaxdiff
(``layout="NCHW"`` in :func:`make_eps_fn` takes diffusers' (B, C, H, W) instead and
transposes at the boundary). Timesteps are the scheduler's training indices
``0 .. num_train_timesteps - 1`` as floats, shape (B,) or a scalar.

Supported configuration: positional time embedding, no class conditioning, ``act_fn``
silu, ``resnet_time_scale_shift`` default or scale_shift, conv down/upsampling, the four
block types above and ``UNetMidBlock2D`` (or no mid block). Anything else raises a
ValueError naming the key.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

__all__ = ["UNet2DConfig", "DiffusersUNet2D", "timestep_embedding", "batch_timesteps",
           "make_eps_fn", "apply_with_intermediates", "LAYOUTS"]

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")
MID_BLOCKS = ("UNetMidBlock2D", None)
TIME_SCALE_SHIFTS = ("default", "scale_shift")
ACTIVATIONS = ("silu", "swish")      # diffusers' get_activation: both are SiLU
LAYOUTS = ("NHWC", "NCHW")

# Keys of a UNet2DModel config.json that must hold one of a few values (with diffusers'
# default first); the architecture does not depend on them beyond that.
_FIXED_KEYS = {
    "time_embedding_type": ("positional",),
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
}
# Keys read without a constraint: dropout is inactive at inference, num_train_timesteps
# only sizes the "learned" time embedding.
_FREE_KEYS = ("dropout", "num_train_timesteps")


def _as_tuple(value, key: str) -> tuple:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        raise ValueError(f"config key {key!r} must be a list, got {value!r}")
    return tuple(value)


def _strip_prefix(block: str) -> str:
    """diffusers accepts "UNetResDownBlock2D" for "DownBlock2D" (and so on)."""
    return block[len("UNetRes"):] if block.startswith("UNetRes") else block


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
    """The architecture of a diffusers ``UNet2DModel`` (its config.json, validated).

    Field names and defaults are diffusers' (``UNet2DModel.__init__``); build it with
    :meth:`from_dict`, which rejects configurations this module does not implement.
    """
    sample_size: Any = None
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_dim: int | None = None
    freq_shift: float = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                               "AttnDownBlock2D")
    mid_block_type: str | None = "UNetMidBlock2D"
    up_block_types: tuple = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    act_fn: str = "silu"
    attention_head_dim: int | None = 8
    norm_num_groups: int = 32
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> UNet2DConfig:
        """Validated config from a UNet2DModel ``config.json`` dict.

        Keys starting with "_" (``_class_name``, ``_diffusers_version``) are ignored;
        an unknown key or an unsupported value raises a ValueError naming it.
        """
        class_name = config.get("_class_name", "UNet2DModel")
        if class_name != "UNet2DModel":
            raise ValueError(f"_class_name {class_name!r} is not supported; "
                             "valid: 'UNet2DModel'")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if not k.startswith("_") and k not in fields
                         and k not in _FIXED_KEYS and k not in _FREE_KEYS)
        if unknown:
            raise ValueError(f"unknown UNet2DModel config keys {unknown}; known: "
                             f"{sorted(fields | set(_FIXED_KEYS) | set(_FREE_KEYS))}")
        for key, valid in _FIXED_KEYS.items():
            if config.get(key, valid[0]) not in valid:
                raise ValueError(f"{key}={config[key]!r} is not supported; valid: {valid}")
        kwargs = {k: config[k] for k in fields if k in config}
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            if key in kwargs:
                kwargs[key] = _as_tuple(kwargs[key], key)
        for key in ("down_block_types", "up_block_types"):
            if key in kwargs:
                kwargs[key] = tuple(_strip_prefix(b) for b in kwargs[key])
        if isinstance(kwargs.get("sample_size"), list):
            kwargs["sample_size"] = tuple(kwargs["sample_size"])
        out = cls(**kwargs)
        out.validate()
        return out

    def validate(self) -> None:
        """Raises a ValueError naming the first unsupported or inconsistent value."""
        def one_of(key, valid):
            value = getattr(self, key)
            if value not in valid:
                raise ValueError(f"{key}={value!r} is not supported; valid: {valid}")

        one_of("act_fn", ACTIVATIONS)
        one_of("resnet_time_scale_shift", TIME_SCALE_SHIFTS)
        one_of("mid_block_type", MID_BLOCKS)
        for key, valid in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
            bad = [b for b in getattr(self, key) if b not in valid]
            if bad:
                raise ValueError(f"{key} entries {bad} are not supported; valid: {valid}")
        levels = len(self.block_out_channels)
        if levels < 1 or len(self.down_block_types) != levels or \
                len(self.up_block_types) != levels:
            raise ValueError(f"block_out_channels {self.block_out_channels}, down_block_types "
                             f"{self.down_block_types} and up_block_types "
                             f"{self.up_block_types} must have the same length >= 1")
        groups = self.norm_num_groups
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"norm_num_groups={groups!r} must be a positive int")
        bad = [c for c in self.block_out_channels if c % groups]
        if bad:
            raise ValueError(f"block_out_channels {bad} are not divisible by "
                             f"norm_num_groups={groups}")
        if self.attn_norm_num_groups is not None and \
                self.block_out_channels[-1] % self.attn_norm_num_groups:
            raise ValueError(f"attn_norm_num_groups={self.attn_norm_num_groups} does not "
                             f"divide the mid block's {self.block_out_channels[-1]} channels")
        head = self.attention_head_dim
        attended = self.attention_channels
        if head is not None and attended and (not isinstance(head, int) or head < 1 or
                                              head > min(attended)):
            raise ValueError(f"attention_head_dim={head!r} must be None or an int in "
                             f"[1, {min(attended)}] (the narrowest attention layer)")
        if self.downsample_padding < 0:
            raise ValueError(f"downsample_padding={self.downsample_padding} must be >= 0")
        if self.layers_per_block < 1:
            raise ValueError(f"layers_per_block={self.layers_per_block} must be >= 1")

    @property
    def attention_channels(self) -> tuple[int, ...]:
        """Channel counts of the levels (and mid block) that have self-attention."""
        down = [c for b, c in zip(self.down_block_types, self.block_out_channels)
                if b == "AttnDownBlock2D"]
        up = [c for b, c in zip(self.up_block_types, self.block_out_channels[::-1])
              if b == "AttnUpBlock2D"]
        mid = [self.block_out_channels[-1]] if self.mid_block_type and self.add_attention \
            else []
        return tuple(down + up + mid)

    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding fed to every ResNet block."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def downsamplings(self) -> int:
        """How many times the resolution halves (H and W must be divisible by 2^this)."""
        return len(self.block_out_channels) - 1


def timestep_embedding(t, dim: int, flip_sin_to_cos: bool, freq_shift: float,
                       max_period: float = 10000.0):
    """diffusers' ``Timesteps``: (B,) float timesteps -> (B, dim) sinusoids.

    Frequencies ``exp(-ln(max_period) i / (dim / 2 - freq_shift))`` for i < dim / 2;
    the output is [sin, cos] ([cos, sin] with ``flip_sin_to_cos``), zero-padded to
    ``dim`` when ``dim`` is odd.
    """
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32)
    freqs = jnp.exp(exponent / (half - freq_shift))
    arg = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    sin, cos = jnp.sin(arg), jnp.cos(arg)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def batch_timesteps(t, batch: int):
    """Timesteps as a (batch,) float32 array: a scalar or (1,) is broadcast, as diffusers
    does; any other shape but (batch,) is a ValueError."""
    t = jnp.asarray(t, jnp.float32)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, batch)):
        raise ValueError(f"t must be a scalar or of shape ({batch},), got {t.shape}")
    return jnp.broadcast_to(t.reshape(-1) if t.ndim else t, (batch,))


def _group_norm(groups: int, eps: float, name: str) -> nn.GroupNorm:
    # Two-pass variance, as torch's GroupNorm: E[x^2] - E[x]^2 loses digits at large means.
    return nn.GroupNorm(num_groups=groups, epsilon=eps, use_fast_variance=False, name=name)


def _conv(features: int, kernel: int, name: str, padding=None, strides: int = 1) -> nn.Conv:
    """Conv with PyTorch's symmetric padding (kernel // 2 unless ``padding`` is given)."""
    if padding is None:
        pad = kernel // 2
        padding = ((pad, pad), (pad, pad))
    return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=padding,
                   name=name)


class TimestepEmbedding(nn.Module):
    """``linear_1``, SiLU, ``linear_2``: (B, C) -> (B, features)."""
    features: int

    @nn.compact
    def __call__(self, emb):
        emb = nn.Dense(self.features, name="linear_1")(emb)
        return nn.Dense(self.features, name="linear_2")(nn.silu(emb))


class Downsample2D(nn.Module):
    """3x3 conv with stride 2: (B, H, W, C) -> (B, H / 2, W / 2, features).

    ``padding`` p > 0 pads p zeros on every side, as PyTorch; p = 0 pads one zero row
    and column at the bottom and right only, as diffusers does.
    """
    features: int
    padding: int = 1

    @nn.compact
    def __call__(self, h):
        p = self.padding
        pads = ((0, 1), (0, 1)) if p == 0 else ((p, p), (p, p))
        return _conv(self.features, 3, "conv", padding=pads, strides=2)(h)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv: (B, H, W, C) -> (B, 2H, 2W, features)."""
    features: int

    @nn.compact
    def __call__(self, h):
        h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        return _conv(self.features, 3, "conv")(h)


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv, time projection, GroupNorm-SiLU-conv, (shortcut + h) / factor.

    ``(B, H, W, C_in), (B, E) -> (B, H, W, out_channels)``; a 1x1 ``conv_shortcut``
    maps the input when C_in != out_channels. Time conditioning "default" adds the
    projected embedding before ``norm2``; "scale_shift" projects to 2 * out_channels and
    applies ``norm2(h) * (1 + scale) + shift``.
    """
    out_channels: int
    groups: int
    eps: float
    time_scale_shift: str = "default"
    output_scale_factor: float = 1.0

    @nn.compact
    def __call__(self, x, temb):
        h = nn.silu(_group_norm(self.groups, self.eps, "norm1")(x))
        h = _conv(self.out_channels, 3, "conv1")(h)
        width = self.out_channels * (2 if self.time_scale_shift == "scale_shift" else 1)
        proj = nn.Dense(width, name="time_emb_proj")(nn.silu(temb))[:, None, None, :]
        norm2 = _group_norm(self.groups, self.eps, "norm2")
        if self.time_scale_shift == "scale_shift":
            scale, shift = jnp.split(proj, 2, axis=-1)
            h = norm2(h) * (1.0 + scale) + shift
        else:
            h = norm2(h + proj)
        h = _conv(self.out_channels, 3, "conv2")(nn.silu(h))
        if x.shape[-1] != self.out_channels:
            x = _conv(self.out_channels, 1, "conv_shortcut")(x)
        return (x + h) / self.output_scale_factor


class SelfAttention2D(nn.Module):
    """diffusers' spatial ``Attention`` (a former AttentionBlock) over the H * W positions.

    ``(B, H, W, C) -> (B, H, W, C)``: optional GroupNorm, q/k/v projections to
    ``heads * head_dim``, softmax(q k^T / sqrt(head_dim)) v per head, ``to_out_0``
    back to C, plus the input, divided by ``rescale_output_factor``.
    """
    heads: int
    head_dim: int
    groups: int | None
    eps: float
    rescale_output_factor: float = 1.0

    @nn.compact
    def __call__(self, x):
        b, hh, ww, c = x.shape
        h = x if self.groups is None else _group_norm(self.groups, self.eps, "group_norm")(x)
        h = h.reshape(b, hh * ww, c)
        inner = self.heads * self.head_dim

        def heads(name):
            return nn.Dense(inner, name=name)(h).reshape(b, hh * ww, self.heads, self.head_dim)

        q, k, v = heads("to_q"), heads("to_k"), heads("to_v")
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, hh * ww, inner)
        out = nn.Dense(c, name="to_out_0")(out).reshape(b, hh, ww, c)
        return (out + x) / self.rescale_output_factor


def _attention(cfg: UNet2DConfig, channels: int, groups: int | None, name: str):
    head_dim = cfg.attention_head_dim or channels
    return SelfAttention2D(heads=channels // head_dim, head_dim=head_dim, groups=groups,
                           eps=cfg.norm_eps, name=name)


def _resnet(cfg: UNet2DConfig, channels: int, name: str, factor: float = 1.0):
    return ResnetBlock2D(channels, cfg.norm_num_groups, cfg.norm_eps,
                         cfg.resnet_time_scale_shift, factor, name=name)


class DownBlock(nn.Module):
    """``DownBlock2D`` (attention=False) or ``AttnDownBlock2D`` (attention=True).

    ``(B, H, W, C_in) -> (B, H / 2, W / 2, C_out)`` (H, W kept at the last level) and
    the skips: the output of every layer, then the downsampled map.
    """
    cfg: UNet2DConfig
    out_channels: int
    attention: bool
    downsample: bool

    @nn.compact
    def __call__(self, h, temb):
        skips = []
        for i in range(self.cfg.layers_per_block):
            h = _resnet(self.cfg, self.out_channels, f"resnets_{i}")(h, temb)
            if self.attention:
                h = _attention(self.cfg, self.out_channels, self.cfg.norm_num_groups,
                               f"attentions_{i}")(h)
            skips.append(h)
        if self.downsample:
            h = Downsample2D(self.out_channels, self.cfg.downsample_padding,
                             name="downsamplers_0")(h)
            skips.append(h)
        return h, skips


class UpBlock(nn.Module):
    """``UpBlock2D`` / ``AttnUpBlock2D``: each layer concatenates the last skip (channels
    last) before its ResNet block; then nearest x2 upsampling and a 3x3 conv, except at
    the last level. ``(B, H, W, C) -> (B, 2H, 2W, out_channels)``."""
    cfg: UNet2DConfig
    out_channels: int
    attention: bool
    upsample: bool

    @nn.compact
    def __call__(self, h, skips, temb):
        for i, skip in enumerate(skips):
            h = jnp.concatenate([h, skip], axis=-1)
            h = _resnet(self.cfg, self.out_channels, f"resnets_{i}")(h, temb)
            if self.attention:
                h = _attention(self.cfg, self.out_channels, self.cfg.norm_num_groups,
                               f"attentions_{i}")(h)
        if self.upsample:
            h = Upsample2D(self.out_channels, name="upsamplers_0")(h)
        return h


class MidBlock(nn.Module):
    """``UNetMidBlock2D``: ResNet, attention (if ``add_attention``), ResNet, all scaled
    by ``mid_block_scale_factor``. Shape-preserving."""
    cfg: UNet2DConfig

    @nn.compact
    def __call__(self, h, temb):
        cfg = self.cfg
        ch, factor = cfg.block_out_channels[-1], cfg.mid_block_scale_factor
        h = _resnet(cfg, ch, "resnets_0", factor)(h, temb)
        if cfg.add_attention:
            groups = cfg.attn_norm_num_groups
            if groups is None and cfg.resnet_time_scale_shift == "default":
                groups = cfg.norm_num_groups
            head_dim = cfg.attention_head_dim or ch
            h = SelfAttention2D(ch // head_dim, head_dim, groups, cfg.norm_eps, factor,
                                name="attentions_0")(h)
        return _resnet(cfg, ch, "resnets_1", factor)(h, temb)


class DiffusersUNet2D(nn.Module):
    """diffusers' ``UNet2DModel`` forward pass: ``(x, t) -> model output`` (NHWC).

    Attributes:
      config: the validated :class:`UNet2DConfig`.
    """
    config: UNet2DConfig

    def _check(self, x):
        cfg = self.config
        div = 2 ** cfg.downsamplings
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels or x.shape[1] % div or \
                x.shape[2] % div:
            raise ValueError(f"x must have shape (B, H, W, {cfg.in_channels}) with H and W "
                             f"divisible by {div}, got {tuple(x.shape)}")

    @nn.compact
    def __call__(self, x, t):
        """Runs the network.

        Args:
          x: (B, H, W, in_channels) images (NHWC), any float dtype (computed in float32).
          t: timesteps, (B,) or a scalar, int or float (fractional steps are fine).

        Returns:
          (B, H, W, out_channels) float32: the model output (eps for DDPM checkpoints).
          The outputs of ``time_embedding``, ``conv_in``, every ``down_blocks_<i>``
          (its last map), ``mid_block``, every ``up_blocks_<i>`` and ``conv_out`` are
          sown as one dict "taps" into the "intermediates" collection (see
          :func:`apply_with_intermediates`).
        """
        cfg = self.config
        self._check(x)
        x = x.astype(jnp.float32)
        t = batch_timesteps(t, x.shape[0])
        if cfg.center_input_sample:
            x = 2.0 * x - 1.0

        emb = timestep_embedding(t, cfg.block_out_channels[0], cfg.flip_sin_to_cos,
                                 cfg.freq_shift)
        emb = TimestepEmbedding(cfg.time_embed_dim, name="time_embedding")(emb)
        taps = {"time_embedding": emb}

        h = _conv(cfg.block_out_channels[0], 3, "conv_in")(x)
        taps["conv_in"] = h
        skips = [h]
        last = len(cfg.block_out_channels) - 1
        for i, (kind, ch) in enumerate(zip(cfg.down_block_types, cfg.block_out_channels)):
            h, out = DownBlock(cfg, ch, kind == "AttnDownBlock2D", i != last,
                               name=f"down_blocks_{i}")(h, emb)
            skips += out
            taps[f"down_blocks_{i}"] = h
        if cfg.mid_block_type is not None:
            h = MidBlock(cfg, name="mid_block")(h, emb)
            taps["mid_block"] = h
        channels = cfg.block_out_channels[::-1]
        for i, (kind, ch) in enumerate(zip(cfg.up_block_types, channels)):
            n = cfg.layers_per_block + 1
            block_skips, skips = skips[-n:][::-1], skips[:-n]
            h = UpBlock(cfg, ch, kind == "AttnUpBlock2D", i != last,
                        name=f"up_blocks_{i}")(h, block_skips, emb)
            taps[f"up_blocks_{i}"] = h
        h = nn.silu(_group_norm(cfg.norm_num_groups, cfg.norm_eps, "conv_norm_out")(h))
        h = _conv(cfg.out_channels, 3, "conv_out")(h)
        taps["conv_out"] = h
        self.sow("intermediates", "taps", taps)
        return h


@functools.partial(jax.jit, static_argnums=0)
def apply_with_intermediates(model: DiffusersUNet2D, params, x, t):
    """``(output, {name: map})``: the output and every sown block output (NHWC; the time
    embedding is (B, E)). Jitted (compiled once per model and input shapes)."""
    out, state = model.apply({"params": params}, x, t, mutable=["intermediates"])
    return out, dict(state["intermediates"]["taps"][0])


def _to_nhwc(x, layout: str):
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not supported; valid: {LAYOUTS}")
    return jnp.transpose(x, (0, 2, 3, 1)) if layout == "NCHW" else x


def _from_nhwc(x, layout: str):
    return jnp.transpose(x, (0, 3, 1, 2)) if layout == "NCHW" else x


@functools.partial(jax.jit, static_argnames=("model", "layout"))
def _eps(model: DiffusersUNet2D, layout: str, params, x, t):
    # Jitted so that eager calls compile once; inside an outer jit it is simply inlined.
    out = model.apply({"params": params}, _to_nhwc(x, layout), t)
    # Learned-variance checkpoints output [eps, variance]: eps is the first half.
    out = out[..., :model.config.in_channels]
    return _from_nhwc(out, layout).astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class _EpsFn:
    """Static part of an eps function: hashable, equal for equal models (no recompiles)."""
    model: DiffusersUNet2D
    layout: str

    def __call__(self, params, x, t):
        return _eps(self.model, self.layout, params, x, t)


def make_eps_fn(model: DiffusersUNet2D, params: Any, layout: str = "NHWC") -> Partial:
    """``eps_fn(x, t) -> eps`` for a discrete-time VP (DDPM) wrapper.

    Args:
      model: the :class:`DiffusersUNet2D`.
      params: its parameters (from :func:`jaxdiff.hub.load_unet`).
      layout: "NHWC" (jaxdiff's images) or "NCHW" (diffusers' (B, C, H, W)).

    Returns:
      A ``jax.tree_util.Partial`` whose leaves are ``params``: jitted code that takes it
      as an argument traces it, so other parameters reuse the compiled program. Call it
      as ``eps_fn(x (B, ...) in ``layout``, t (B,) or scalar float timesteps)``; the
      output has x's shape and dtype. A learned-variance model (out_channels =
      2 * in_channels) returns the first ``in_channels`` channels, the noise prediction.
    """
    cfg = model.config
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not supported; valid: {LAYOUTS}")
    if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
        raise ValueError(f"out_channels={cfg.out_channels} is neither in_channels="
                         f"{cfg.in_channels} (eps) nor 2 * in_channels (eps, variance)")
    return Partial(_EpsFn(model, layout), params)
