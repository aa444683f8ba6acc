"""KT's images: 28x28 grey train and test splits in [0, 1] (the paper's ``ToTensor``)."""
from __future__ import annotations

import numpy as np

from jaxinfra import datasets

__all__ = ["DATASETS", "IMAGE_SHAPE", "check_dataset", "load_data"]

DATASETS = ("fashion_mnist", "mnist")
IMAGE_SHAPE = (28, 28, 1)


def check_dataset(name) -> str:
    """``name`` as a string; a ValueError naming the valid ones when it is not one."""
    name = str(name)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")
    return name


def load_data(config):
    """Train and test images (N, 28, 28, 1) float32 in [0, 1] and labels (N,) int32.

    ``config.dataset``: "fashion_mnist" (offline IDX files, searched by
    :func:`jaxinfra.datasets.load_fashion_mnist` in ``$JAXINFRA_DATA_PATH``) or "mnist"
    (tensorflow_datasets; needs a network). ``config.max_train_examples`` /
    ``max_test_examples``: keep the first n (0: all). A missing data set raises the
    loader's error, which says how to get it.
    """
    name = check_dataset(config.dataset)
    out = []
    for split, n in (("train", config.max_train_examples), ("test", config.max_test_examples)):
        images, labels = datasets.load(name, split=split, max_examples=int(n) or None)
        if tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise ValueError(f"{name!r} images have shape {images.shape[1:]}; KT's networks "
                             f"need {IMAGE_SHAPE}")
        # The loaders give [-1, 1]; the paper feeds ToTensor's [0, 1] without normalising.
        out += [np.asarray((images + 1.0) * 0.5, np.float32), np.asarray(labels, np.int32)]
    return tuple(out)
