"""Image classification data for distillation: loaders, normalisation, augmentation.

Every loader returns a :class:`Dataset` of per-channel *normalised* float32 NHWC images
((x - mean) / std with x in [0, 1]) and int32 labels. Sources:

- "fashion_mnist": offline IDX files in ``<folder>/fashion-mnist`` for each folder of
  ``$JAXINFRA_DATA_PATH`` (default: the Debian package ``dataset-fashion-mnist``'s
  /usr/share/datasets), read by :func:`jaxinfra.datasets.load_fashion_mnist`;
  ``source="tfds"`` forces tfds.
- "digits": scikit-learn's 8x8 digits (offline; split 80/20 deterministically:
  the first 1437 images train, the last 360 test).
- "cifar100", "cifar10", "mnist": tensorflow-datasets (needs network the first time).

A data set that cannot be had raises an error saying how to get it; nothing is ever
replaced by random data. :func:`augment` is the reference training augmentation (random
crop with zero padding, horizontal flip) as a pure, jittable function of a key.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfra import datasets
from jaxinfra.mesh import epoch_permutation  # re-exported: the batch order of jaxkd.train

__all__ = ["Dataset", "STATS", "DATASETS", "load", "normalize", "augment",
           "epoch_permutation"]

# Per-channel (mean, std) of the training images in [0, 1]. CIFAR-100: RepDistiller /
# CA-MKD dataset/cifar100.py; CIFAR-10, MNIST, Fashion-MNIST: the usual torchvision
# values; digits: computed on all 1797 images (pixel / 16).
STATS = {
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3053,), (0.3760,)),
}
NUM_CLASSES = {"cifar100": 100, "cifar10": 10, "mnist": 10, "fashion_mnist": 10,
               "digits": 10}
DATASETS = tuple(STATS)
_DIGITS_TRAIN = 1437


class Dataset(NamedTuple):
    """A split of a data set.

    Attributes:
      images: (N, H, W, C) float32, normalised per channel.
      labels: (N,) int32.
      num_classes: number of classes.
      mean, std: the (C,) per-channel statistics used (of [0, 1] pixels).
    """
    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple


def normalize(images01, mean, std):
    """(x - mean) / std per channel for (N, H, W, C) images in [0, 1]; float32."""
    m = np.asarray(mean, np.float32)
    s = np.asarray(std, np.float32)
    return ((np.asarray(images01, np.float32) - m) / s).astype(np.float32)


def _canonical(name):
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, got {name!r}; valid: "
                         f"{DATASETS}")
    key = name.strip().lower().replace("-", "_")
    if key not in STATS:
        raise ValueError(f"unknown data set {name!r}; valid: {DATASETS}")
    return key


def load(name: str, split: str = "train", *, max_examples: int | None = None,
         source: str = "auto", data_dir: str | None = None) -> Dataset:
    """Loads and normalises one split.

    Args:
      name: one of :data:`DATASETS`.
      split: "train" or "test".
      max_examples: keep the first n examples (None: all).
      source: "auto" (offline files for fashion_mnist and digits, tfds otherwise),
        "offline" or "tfds".
      data_dir: IDX folder (fashion_mnist offline) or tfds data folder.

    Raises:
      ValueError: unknown name, split or source.
      FileNotFoundError / RuntimeError / ImportError: the data cannot be had (the
        message says how to get it).
    """
    key = _canonical(name)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if source not in ("auto", "offline", "tfds"):
        raise ValueError(f"source must be 'auto', 'offline' or 'tfds', got {source!r}")
    offline_ok = key in ("fashion_mnist", "digits")
    if source == "offline" and not offline_ok:
        raise ValueError(f"{name!r} has no offline source (offline: fashion_mnist, "
                         "digits); use source='tfds' where a network is available")
    use_tfds = source == "tfds" or (source == "auto" and not offline_ok)
    if use_tfds:
        if key == "digits":
            raise ValueError("digits comes from scikit-learn, not tfds")
        images, labels = datasets.load_tfds(key, split=split, max_examples=max_examples,
                                            data_dir=data_dir)
    elif key == "fashion_mnist":
        images, labels = datasets.load_fashion_mnist(split=split, data_dir=data_dir,
                                                     max_examples=max_examples)
    else:
        images, labels = datasets.load_digits()
        sl = slice(0, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
        images, labels = images[sl], labels[sl]
        if max_examples is not None:
            images, labels = images[:max_examples], labels[:max_examples]
    mean, std = STATS[key]
    images01 = (np.asarray(images, np.float32) + 1.0) * 0.5     # jaxinfra gives [-1, 1]
    return Dataset(normalize(images01, mean, std), np.asarray(labels, np.int32),
                   NUM_CLASSES[key], mean, std)


@functools.partial(jax.jit, static_argnames=("pad", "flip", "fill"))
def augment(key, images, *, pad: int = 4, flip: bool = True, fill: tuple = (0.0,)):
    """Random crop with ``pad``-pixel padding, then a random horizontal flip.

    Args:
      key: PRNG key; the result is a pure function of (key, images).
      images: (B, H, W, C) float.
      pad: padding on every side; the crop offset is uniform in [0, 2 pad] per image.
      flip: flip each image left-right with probability 1/2.
      fill: (C,) padding value per channel; use the normalised value of a black pixel,
        -mean / std, to match torchvision's zero padding before normalisation.

    Returns:
      (B, H, W, C) augmented images, same dtype.
    """
    b, h, w, c = images.shape
    k_off, k_flip = jax.random.split(key)
    out = images
    if pad > 0:
        fill_v = jnp.broadcast_to(jnp.asarray(fill, images.dtype), (c,))
        padded = jnp.broadcast_to(fill_v, (b, h + 2 * pad, w + 2 * pad, c))
        padded = padded.at[:, pad:pad + h, pad:pad + w, :].set(images)
        off = jax.random.randint(k_off, (b, 2), 0, 2 * pad + 1)
        crop = lambda im, o: jax.lax.dynamic_slice(im, (o[0], o[1], 0), (h, w, c))
        out = jax.vmap(crop)(padded, off)
    if flip:
        do = jax.random.bernoulli(k_flip, 0.5, (b,))
        out = jnp.where(do[:, None, None, None], out[:, :, ::-1, :], out)
    return out

