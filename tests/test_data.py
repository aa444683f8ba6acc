"""Offline data loaders: digits, Fashion-MNIST IDX parsing and dispatch."""
import gzip
import os

import numpy as np
import pytest

from jaxdiff import data


def _idx_bytes(array):
    """Serialises a uint8 array in IDX format."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def _write_split(directory, prefix, images, labels, compress):
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        path = directory / f"{prefix}-{kind}-ubyte"
        raw = _idx_bytes(arr)
        if compress:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
        else:
            path.write_bytes(raw)


def test_digits():
    images, labels = data.load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert images.min() == -1.0 and images.max() == 1.0
    assert set(np.unique(labels)) == set(range(10))
    first, _ = data.load("digits", max_examples=10)
    np.testing.assert_array_equal(first, images[:10])


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_synthetic_idx(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    _write_split(tmp_path, "t10k", images, labels, compress)
    x, y = data.load_fashion_mnist("test", data_dir=tmp_path)
    assert x.shape == (7, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[..., 0], images / 127.5 - 1.0, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(y, labels.astype(np.int32))
    x3, y3 = data.load("fashion_mnist", split="test", data_dir=tmp_path, max_examples=3)
    np.testing.assert_array_equal(x3, x[:3])
    np.testing.assert_array_equal(y3, y[:3])


def test_fashion_mnist_env_var(tmp_path, monkeypatch):
    _write_split(tmp_path, "train", np.zeros((2, 28, 28)), np.ones(2), compress=True)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    x, y = data.load_fashion_mnist()
    assert x.shape == (2, 28, 28, 1) and np.all(x == -1.0) and list(y) == [1, 1]


def test_fashion_mnist_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
        data.load_fashion_mnist(data_dir=tmp_path / "nope")
    assert "FASHION_MNIST_DIR" in str(err.value) and "load_tfds" in str(err.value)


@pytest.mark.parametrize("payload", [b"garbage bytes here", "truncated", "badgzip"])
def test_fashion_mnist_corrupt_file(tmp_path, payload):
    _write_split(tmp_path, "train", np.zeros((3, 28, 28)), np.zeros(3), compress=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    if payload == "truncated":
        payload = bad.read_bytes()[:-5]
    elif payload == "badgzip":
        bad.unlink()
        bad = tmp_path / "train-images-idx3-ubyte.gz"
        payload = gzip.compress(b"\x00" * 100)[:-10]
    bad.write_bytes(payload)
    with pytest.raises(ValueError, match=bad.name):
        data.load_fashion_mnist(data_dir=tmp_path)


def test_real_fashion_mnist():
    path = os.path.join(data.DEBIAN_FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")
    if not os.path.isfile(path):
        pytest.skip("Debian package dataset-fashion-mnist not installed "
                    "(real-file check only; parsing is tested on synthetic files)")
    x, y = data.load_fashion_mnist("train", data_dir=data.DEBIAN_FASHION_MNIST_DIR)
    assert x.shape == (60000, 28, 28, 1) and y.shape == (60000,)
    assert x.min() == -1.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_load_bad_names():
    for name in ("", None):
        with pytest.raises(ValueError, match="digits"):
            data.load(name)
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load("no_such_dataset_xyz")
