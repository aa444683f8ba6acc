"""Image grids: many images tiled into one uint8 array or PNG file."""
from __future__ import annotations

import os

import numpy as np

__all__ = ["image_grid", "save_image_grid"]


def image_grid(images, cols: int = 0, value_range=(-1.0, 1.0)):
    """Tiles images into one uint8 image with 1-pixel borders.

    Args:
      images: (N, H, W) or (N, H, W, C) floats in ``value_range``.
      cols: images per row (0: about sqrt(N)).
      value_range: (low, high) mapped to (0, 255); values outside are clipped.

    Returns:
      (rows * (H + 1) + 1, cols * (W + 1) + 1, C) uint8 array.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, H, W[, C]) with N > 0, got "
                         f"{images.shape}")
    lo, hi = map(float, value_range)
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        out[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = images[i]
    return np.round(out * 255.0).astype(np.uint8)


def save_image_grid(images, path: str, *, cols: int = 0, scale: int = 4,
                    value_range=(-1.0, 1.0)):
    """Writes :func:`image_grid` of ``images`` to the PNG ``path``, upscaled ``scale`` times
    (nearest neighbour); returns the (unscaled) uint8 grid. Only process 0 writes
    (:func:`jaxinfra.distributed.is_main_process`); the others only return the grid."""
    from PIL import Image

    from jaxinfra import distributed
    g = image_grid(images, cols, value_range)
    if not distributed.is_main_process():
        return g
    big = np.repeat(np.repeat(g, scale, axis=0), scale, axis=1)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(big[..., 0] if big.shape[-1] == 1 else big).save(path)
    return g
