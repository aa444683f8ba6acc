"""The FID InceptionV3 of pytorch-fid, in Flax: 2048-d pool3 features of images in [0, 1].

    variables = variables_from_state_dict(state_dict)      # torch names -> Flax
    feats = FIDInceptionV3().apply(variables, images)      # (B, H, W, 3) -> (B, 2048)

This is the network behind the FID numbers of pytorch-fid (``InceptionV3`` with output
block 3, ``resize_input=True``, ``normalize_input=True``), itself a port of TensorFlow's
2015-12-05 Inception graph. It differs from torchvision's ImageNet InceptionV3 in its
weights and in four blocks: the average-pooling branches of Mixed_5b-5d, 6b-6e and 7b
leave the zero padding out of the average (``count_include_pad=False``), and Mixed_7c
takes a *max* over its pooling window instead of an average.

Input handling, as pytorch-fid does it: images in [0, 1] are resized to 299 x 299 with
torch's ``F.interpolate(mode="bilinear", align_corners=False)`` (two-tap bilinear, no
antialiasing: see :func:`resize_bilinear`), then mapped to [-1, 1] by ``2 x - 1``.

Layout: images are NHWC (torch is NCHW); conv kernels are (kh, kw, in, out) (torch:
(out, in, kh, kw)). Every conv is a :class:`BasicConv2d`: conv without bias, BatchNorm
in inference mode (running statistics, eps 0.001), ReLU. Parameters live in the
``"params"`` collection (``conv/kernel``, ``bn/scale``, ``bn/bias``) and the running
statistics in ``"batch_stats"`` (``bn/mean``, ``bn/var``); module names are torch's
attribute names (``Mixed_6e/branch7x7dbl_3``), so torch's ``Mixed_6e.branch7x7dbl_3.bn.
running_var`` is ``variables["batch_stats"]["Mixed_6e"]["branch7x7dbl_3"]["bn"]["var"]``.

:func:`variables_from_state_dict` converts a state dict (numpy arrays keyed by torch
names) with strict key and shape checks; :func:`random_state_dict` makes a random one
with the same names and shapes (tests and fixtures, no weights needed).
"""
from __future__ import annotations

import functools
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FIDInceptionV3", "BasicConv2d", "resize_bilinear", "preprocess",
           "variables_from_state_dict", "random_state_dict", "state_dict_shapes",
           "FEATURE_DIM", "INPUT_SIZE", "BN_EPS", "NUM_CLASSES"]

FEATURE_DIM = 2048      # pool3 features
INPUT_SIZE = 299        # the network's input height and width
BN_EPS = 1e-3           # BatchNorm epsilon of every BasicConv2d
NUM_CLASSES = 1008      # rows of the (unused) ``fc`` layer in pytorch-fid's weight file
_POOLS = ("avg", "max")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (running statistics, eps 0.001) -> ReLU.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw) or an int.
      strides: (sh, sw) or an int.
      padding: (ph, pw) zeros added on both sides of each spatial axis, or an int.
    """
    features: int
    kernel_size: int | tuple[int, int] = 1
    strides: int | tuple[int, int] = 1
    padding: int | tuple[int, int] = 0

    @nn.compact
    def __call__(self, x):
        """(B, H, W, C_in) -> (B, H', W', features), H' = (H + 2 ph - kh) // sh + 1."""
        ph, pw = _pair(self.padding)
        x = nn.Conv(self.features, _pair(self.kernel_size), _pair(self.strides),
                    padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def _window_counts(n: int) -> np.ndarray:
    """(n,) in-image pixels of a size-3 window centred on each of n positions (2 at edges)."""
    i = np.arange(n)
    return np.minimum(i + 1, n - 1) - np.maximum(i - 1, 0) + 1


def _avg_pool_3x3(x):
    """3x3 stride-1 average over the in-image pixels only (padding left out), (B, H, W, C).

    Not ``nn.avg_pool(..., count_include_pad=False)``: its divisor is float64 when
    jax_enable_x64 is on, which would silently run the rest of the network in float64.
    """
    summed = nn.pool(x, 0.0, jax.lax.add, (3, 3), (1, 1), ((1, 1), (1, 1)))
    counts = np.outer(_window_counts(x.shape[1]), _window_counts(x.shape[2]))
    return summed / jnp.asarray(counts[None, :, :, None], x.dtype)


def _max_pool_3x3(x, stride: int = 1, pad: int = 1):
    return nn.max_pool(x, (3, 3), (stride, stride), padding=((pad, pad), (pad, pad)))


class FIDInceptionA(nn.Module):
    """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features."""
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv2d(64, name="branch1x1")(x)
        b5 = BasicConv2d(48, name="branch5x5_1")(x)
        b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(b5)
        b3 = BasicConv2d(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a (35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 384 + 96 + C_in."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(384, 3, strides=2, name="branch3x3")(x)
        bd = BasicConv2d(64, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, 3, strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3(x, 2, 0)], axis=-1)


class FIDInceptionC(nn.Module):
    """Mixed_6b-6e: 1x1 | 1x7-7x1 | 7x1-1x7-7x1-1x7 | avgpool-1x1 -> 768 channels."""
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, name="branch1x1")(x)
        b7 = BasicConv2d(c7, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, name="branch7x7dbl_1")(x)
        for i, (kernel, pad, out) in enumerate(
                [((7, 1), (3, 0), c7), ((1, 7), (0, 3), c7), ((7, 1), (3, 0), c7),
                 ((1, 7), (0, 3), 192)], start=2):
            bd = BasicConv2d(out, kernel, padding=pad, name=f"branch7x7dbl_{i}")(bd)
        bp = BasicConv2d(192, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a (17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 320 + 192 + C_in."""

    @nn.compact
    def __call__(self, x):
        b3 = BasicConv2d(192, name="branch3x3_1")(x)
        b3 = BasicConv2d(320, 3, strides=2, name="branch3x3_2")(b3)
        b7 = BasicConv2d(192, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, 3, strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, 2, 0)], axis=-1)


class FIDInceptionE(nn.Module):
    """Mixed_7b (``pool="avg"``) and Mixed_7c (``pool="max"``): 2048 channels.

    1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1; the pooling window is 3x3,
    stride 1, padding 1 (averages leave the padding out, maxima ignore it).
    """
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        if self.pool not in _POOLS:
            raise ValueError(f"FIDInceptionE pool must be one of {_POOLS}, got {self.pool!r}")
        b1 = BasicConv2d(320, name="branch1x1")(x)
        b3 = BasicConv2d(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
             BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
        bd = BasicConv2d(448, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
             BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x)
        bp = BasicConv2d(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's InceptionV3 up to the pool3 features (its output block 3).

    Attributes:
      resize_input: resize the images to 299 x 299 first (:func:`resize_bilinear`).
      normalize_input: map [0, 1] to [-1, 1] (``2 x - 1``) first.

    With both (the defaults, as pytorch-fid's FID) the input is (B, H, W, 3) float images
    in [0, 1] of any size; without, (B, h, w, 3) in [-1, 1] with h, w >= 75.
    """
    resize_input: bool = True
    normalize_input: bool = True

    @nn.compact
    def __call__(self, images):
        """(B, H, W, 3) images -> (B, 2048) float32 pool3 features (spatial mean)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"FIDInceptionV3 takes (B, H, W, 3) images, got shape "
                             f"{tuple(images.shape)}")
        x = preprocess(images, resize=self.resize_input, normalize=self.normalize_input)
        x = BasicConv2d(32, 3, strides=2, name="Conv2d_1a_3x3")(x)      # 149
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)                 # 147
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)      # 147
        x = _max_pool_3x3(x, 2, 0)                                      # 73
        x = BasicConv2d(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)                # 71
        x = _max_pool_3x3(x, 2, 0)                                      # 35
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = FIDInceptionA(pool_features, name=name)(x)              # 256, 288, 288
        x = InceptionB(name="Mixed_6a")(x)                              # 17 x 17 x 768
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = FIDInceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)                              # 8 x 8 x 1280
        x = FIDInceptionE("avg", name="Mixed_7b")(x)                    # 2048
        x = FIDInceptionE("max", name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


# ------------------------------------------------------------------ input handling


def _taps(in_size: int, out_size: int):
    """Source taps of torch's bilinear ``align_corners=False`` along one axis.

    Output pixel j reads input pixels ``i0[j]`` and ``i1[j]`` with weights
    ``1 - w[j]`` and ``w[j]``. As torch: the source coordinate is
    ``max(s (j + 0.5) - 0.5, 0)`` with ``s = in_size / out_size``, all in float32;
    i0 = floor (at most in_size - 1), i1 = min(i0 + 1, in_size - 1).

    Returns:
      (i0 (out,) int32, i1 (out,) int32, w (out,) float32).
    """
    scale = np.float32(np.float32(in_size) / np.float32(out_size))
    j = np.arange(out_size, dtype=np.float32)
    src = np.maximum(scale * (j + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    return i0, i1, w


def _lerp_axis(x, axis: int, out_size: int):
    """Two-tap linear interpolation of ``x`` along ``axis`` to ``out_size`` samples."""
    in_size = x.shape[axis]
    if in_size == out_size:
        return x
    i0, i1, w = _taps(in_size, out_size)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w = jnp.asarray(w, x.dtype).reshape(shape)
    return jnp.take(x, i0, axis=axis) * (1 - w) + jnp.take(x, i1, axis=axis) * w


def resize_bilinear(images, size: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)):
    """Bilinear resize as torch's ``F.interpolate(mode="bilinear", align_corners=False)``.

    Two taps per axis at pixel centres (edges clamped), no antialiasing when shrinking:
    each output pixel mixes at most 2 x 2 input pixels whatever the scale. This is NOT
    ``jax.image.resize(..., "bilinear")``, which antialiases when downsampling (its
    ``antialias=False`` samples the same points, up to float32 rounding).

    Args:
      images: (B, H, W, C) float array.
      size: (height, width) of the output, in pixels.

    Returns:
      (B, height, width, C) array of the input dtype.
    """
    if images.ndim != 4:
        raise ValueError(f"resize_bilinear takes (B, H, W, C) images, got shape "
                         f"{tuple(images.shape)}")
    height, width = size
    if height < 1 or width < 1:
        raise ValueError(f"resize_bilinear size must be positive, got {tuple(size)}")
    # Width first, then height: the order of torch's CPU kernel (float32 sums).
    return _lerp_axis(_lerp_axis(images, 2, width), 1, height)


def preprocess(images, *, resize: bool = True, normalize: bool = True):
    """pytorch-fid's input handling: resize to 299 x 299, then [0, 1] -> [-1, 1].

    Args:
      images: (B, H, W, 3) float images in [0, 1].
      resize: apply :func:`resize_bilinear` to (299, 299).
      normalize: apply ``2 x - 1``.

    Returns:
      (B, 299, 299, 3) images in [-1, 1] (other sizes when ``resize=False``).
    """
    x = jnp.asarray(images)
    if resize:
        x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
    if normalize:
        x = 2 * x - 1
    return x


# ------------------------------------------------------------ torch state dicts

_BN_LEAVES = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
# In pytorch-fid's weight file and in torch's state_dict() of its model, unused here.
_IGNORED_SUFFIXES = (".bn.num_batches_tracked",)
_IGNORED_KEYS = ("fc.weight", "fc.bias")


@functools.lru_cache(maxsize=1)
def _flax_shapes():
    """{(collection, path...): shape} of :class:`FIDInceptionV3`'s variables."""
    shapes = jax.eval_shape(FIDInceptionV3(resize_input=False).init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        flat[tuple(p.key for p in path)] = tuple(leaf.shape)
    return flat


def _torch_name(key) -> tuple[str, tuple]:
    """Flax variable key -> (torch name, how to turn the torch array into the Flax one)."""
    collection, *modules, layer, leaf = key
    prefix = ".".join(modules)
    if layer == "conv":
        return f"{prefix}.conv.weight", (2, 3, 1, 0)     # (O, I, kh, kw) -> (kh, kw, I, O)
    torch_leaf = {v: k for k, v in _BN_LEAVES.items()}[(collection, leaf)]
    return f"{prefix}.bn.{torch_leaf}", None


def state_dict_shapes() -> dict[str, tuple]:
    """The torch names and shapes the converter needs (conv weights (out, in, kh, kw),
    BatchNorm weight / bias / running_mean / running_var (C,)), sorted by module path."""
    out = {}
    for key, shape in _flax_shapes().items():
        name, perm = _torch_name(key)
        out[name] = tuple(shape[i] for i in np.argsort(perm)) if perm else shape
    return out


def _check_keys(state_dict: Mapping, needed: dict):
    names = set(state_dict)
    missing = sorted(set(needed) - names)
    unexpected = sorted(n for n in names - set(needed)
                        if n not in _IGNORED_KEYS and not n.endswith(_IGNORED_SUFFIXES))
    if missing or unexpected:
        raise KeyError(
            f"not a state dict of pytorch-fid's FID InceptionV3: {len(missing)} missing "
            f"keys {missing[:5]}{' ...' if len(missing) > 5 else ''}, {len(unexpected)} "
            f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")


def variables_from_state_dict(state_dict: Mapping) -> dict:
    """Flax variables of :class:`FIDInceptionV3` from a torch-named state dict.

    Strict: every conv / BatchNorm tensor of the network must be present with its torch
    shape, and no other key is accepted except those the FID features do not use
    (``fc.weight``, ``fc.bias``, ``*.bn.num_batches_tracked``).

    Args:
      state_dict: name -> array (numpy or anything ``np.asarray`` takes), torch names
        and layouts as in pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` float32 numpy arrays, for
      ``FIDInceptionV3().apply(variables, images)``.
    """
    needed = state_dict_shapes()
    _check_keys(state_dict, needed)
    variables: dict = {}
    for key in _flax_shapes():
        name, perm = _torch_name(key)
        value = np.asarray(state_dict[name])
        if value.shape != needed[name]:
            raise ValueError(f"{name} has shape {value.shape}, expected {needed[name]}")
        if perm:
            value = value.transpose(perm)
        node = variables
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = np.ascontiguousarray(value, dtype=np.float32)
    return variables


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """A random state dict with the names and shapes of pytorch-fid's weight file.

    Conv weights are He-normal (std sqrt(2 / fan_in)); BatchNorm weight in
    [0.8, 1.2], bias N(0, 0.05^2), running_mean N(0, 0.05^2), running_var in [0.8, 1.2]
    (positive), so activations stay O(1) through the network. Also ``fc.weight``
    (1008, 2048), ``fc.bias`` and ``*.bn.num_batches_tracked`` (int64 0), so the dict
    loads strictly into pytorch-fid's model. Needs no torch.

    Args:
      seed: seed of ``np.random.default_rng``.

    Returns:
      name -> float32 numpy array (int64 for ``num_batches_tracked``).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in state_dict_shapes().items():
        if name.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith(("bn.weight", "bn.running_var")):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.normal(0.0, 0.05, shape)
        out[name] = value.astype(np.float32)
        if name.endswith("bn.running_var"):
            out[name[:-len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    out["fc.weight"] = rng.normal(0.0, 0.01, (NUM_CLASSES, FEATURE_DIM)).astype(np.float32)
    out["fc.bias"] = np.zeros(NUM_CLASSES, np.float32)
    return out
