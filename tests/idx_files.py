"""IDX files for tests, and a Fashion-MNIST-shaped fixture made from scikit-learn digits.

No test reads a data set installed on the machine: the session fixture of conftest.py
writes ``<tmp>/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` with this
module and points ``JAXINFRA_DATA_PATH`` at ``<tmp>``. The images are the 1797 digits,
upscaled 3x (8x8 -> 24x24) and zero-padded to 28x28 as uint8; the first 1437 are the
training split, the last 360 the test split (the split jaxkd.data uses for digits).
"""
import gzip

import numpy as np

FIXTURE_TRAIN = 1437


def idx_bytes(array):
    """Serialises a uint8 array in IDX format."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def write_split(directory, prefix, images, labels, compress=True):
    """Writes ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``."""
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        path = directory / f"{prefix}-{kind}-ubyte"
        raw = idx_bytes(arr)
        if compress:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
        else:
            path.write_bytes(raw)


def digits_as_28x28():
    """(1797, 28, 28) uint8 images and (1797,) uint8 labels made from sklearn's digits."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    big = np.kron(bunch.images, np.ones((3, 3)))                  # 24x24, values 0..16
    padded = np.pad(big, ((0, 0), (2, 2), (2, 2)))
    return np.round(padded * (255.0 / 16.0)).astype(np.uint8), bunch.target.astype(np.uint8)


def write_fashion_like(root):
    """Writes the fixture under ``root/fashion-mnist`` and returns ``root``."""
    directory = root / "fashion-mnist"
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = digits_as_28x28()
    write_split(directory, "train", images[:FIXTURE_TRAIN], labels[:FIXTURE_TRAIN])
    write_split(directory, "t10k", images[FIXTURE_TRAIN:], labels[FIXTURE_TRAIN:])
    return root
