"""Trainable connectors between student and teacher feature maps (Flax Linen, NHWC).

- :class:`Embed`: CA-MKD's ``Embed`` (and DSKD's C_i): spatial alignment to the teacher
  map (adaptive average pooling when the student map is larger, bilinear upsampling
  when smaller), then a 1x1 convolution with bias -> BatchNorm -> ReLU.
- :class:`ConvReg`: RepDistiller's FitNet regressor: a strided 3x3 conv (student map
  twice as large), a 4x4 stride-2 transposed conv (half as large) or a "valid" conv of
  kernel 1 + s - t (otherwise), then BatchNorm -> ReLU.

BatchNorm uses PyTorch's settings (momentum 0.1 -> Flax ``momentum=0.9``, eps 1e-5); the
convolutions use PyTorch's default init U(+-1/sqrt(fan_in)). Connectors are trained with
the student and saved in the same train state.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["adaptive_avg_pool", "align_spatial", "Embed", "ConvReg", "PerTeacher"]

_torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


@functools.lru_cache(maxsize=64)
def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) averaging matrix of PyTorch's adaptive average pooling."""
    m = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        lo = (i * size_in) // size_out
        hi = -(-((i + 1) * size_in) // size_out)            # ceil
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x, size):
    """PyTorch ``adaptive_avg_pool2d`` on (B, H, W, C) to (B, h, w, C), ``size`` = (h, w)."""
    ph = jnp.asarray(_pool_matrix(x.shape[1], size[0]), x.dtype)
    pw = jnp.asarray(_pool_matrix(x.shape[2], size[1]), x.dtype)
    return jnp.einsum("hH,bHWc,wW->bhwc", ph, x, pw)


def align_spatial(x, size):
    """Resizes (B, H, W, C) maps to ``size`` = (h, w): adaptive average pooling when
    larger (CA-MKD ``CalWeight``), bilinear (half-pixel centres, PyTorch
    ``align_corners=False``) when smaller, unchanged when equal."""
    h, w = size
    if (x.shape[1], x.shape[2]) == (h, w):
        return x
    if x.shape[1] >= h and x.shape[2] >= w:
        return adaptive_avg_pool(x, (h, w))
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), method="linear")


def _bn(train: bool):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


class Embed(nn.Module):
    """Aligns a (B, H, W, C_s) student map to (B, h, w, C_t) teacher shape.

    Attributes:
      out_shape: (h, w, C_t), the teacher map's shape without the batch axis.
    """
    out_shape: tuple

    @nn.compact
    def __call__(self, x, train: bool = True):
        h, w, c = self.out_shape
        x = align_spatial(x, (h, w))
        x = nn.Conv(c, (1, 1), use_bias=True, kernel_init=_torch_default_init)(x)
        return nn.relu(_bn(train)(x))


class ConvReg(nn.Module):
    """FitNet's hint regressor from a (B, H, W, C_s) student map to (B, h, w, C_t).

    Attributes:
      out_shape: (h, w, C_t).
    """
    out_shape: tuple

    @nn.compact
    def __call__(self, x, train: bool = True):
        h, w, c = self.out_shape
        s_h, s_w = x.shape[1], x.shape[2]
        if s_h == 2 * h:
            x = nn.Conv(c, (3, 3), strides=2, padding=((1, 1), (1, 1)),
                        kernel_init=_torch_default_init)(x)
        elif 2 * s_h == h:
            x = nn.ConvTranspose(c, (4, 4), strides=(2, 2), padding="SAME",
                                 kernel_init=_torch_default_init)(x)
        elif s_h >= h and s_w >= w:
            x = nn.Conv(c, (1 + s_h - h, 1 + s_w - w), padding="VALID",
                        kernel_init=_torch_default_init)(x)
        else:
            raise ValueError(f"ConvReg cannot map a {s_h}x{s_w} student map to a {h}x{w} "
                             "teacher map (supported: 2x larger, 2x smaller, or larger)")
        return nn.relu(_bn(train)(x))


class PerTeacher(nn.Module):
    """K independent connectors (``Embed`` or ``ConvReg``) of ``feats[index]``, one per
    teacher, named ``<prefix>_<k>``; output stacked (K, B, h, w, C_t)."""
    connector: type
    prefix: str
    num: int
    index: int
    out_shape: tuple

    @nn.compact
    def __call__(self, feats, train: bool = True):
        x = feats[self.index]
        return jnp.stack([self.connector(self.out_shape, name=f"{self.prefix}_{k}")(x, train)
                          for k in range(self.num)])
