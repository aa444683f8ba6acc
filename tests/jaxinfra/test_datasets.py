"""jaxinfra.datasets: digits, Fashion-MNIST IDX parsing, the search path, dispatch."""
import gzip
import os

import numpy as np
import pytest
from idx_files import write_split as _write_split

from jaxinfra import datasets as data


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


def test_fashion_mnist_search_path(tmp_path, monkeypatch):
    (tmp_path / "b" / "fashion-mnist").mkdir(parents=True)
    _write_split(tmp_path / "b" / "fashion-mnist", "train", np.zeros((2, 28, 28)), np.ones(2),
                 compress=True)
    monkeypatch.setenv("JAXINFRA_DATA_PATH", os.pathsep.join([str(tmp_path / "a"),
                                                              str(tmp_path / "b")]))
    assert data.data_path() == [str(tmp_path / "a"), str(tmp_path / "b")]
    x, y = data.load_fashion_mnist()
    assert x.shape == (2, 28, 28, 1) and np.all(x == -1.0) and list(y) == [1, 1]
    monkeypatch.delenv("JAXINFRA_DATA_PATH")
    assert data.data_path() == [data.DEFAULT_DATA_PATH]


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as err:
        data.load_fashion_mnist(data_dir=tmp_path / "nope")
    assert "JAXINFRA_DATA_PATH" in str(err.value) and "load_tfds" in str(err.value)
    monkeypatch.setenv("JAXINFRA_DATA_PATH", str(tmp_path))      # an empty folder
    with pytest.raises(FileNotFoundError, match="make fashion-data"):
        data.load("fashion_mnist")


def test_session_fixture_is_what_tests_see(fixture_data_path):
    """conftest's fixture (digits upscaled to 28x28) is the only Fashion-MNIST tests read."""
    x, y = data.load_fashion_mnist("train")
    xt, yt = data.load_fashion_mnist("test")
    assert x.shape == (1437, 28, 28, 1) and xt.shape == (360, 28, 28, 1)
    digits, labels = data.load_digits()
    np.testing.assert_array_equal(np.concatenate([y, yt]), labels)
    # The 3x upscaled, 2-pixel padded copy of digit 0 (8-bit rounding: 255/16 per level).
    up = np.kron(digits[0, ..., 0], np.ones((3, 3)))
    np.testing.assert_allclose(x[0, 2:26, 2:26, 0], up, atol=1.0 / 255 + 1e-6)
    assert np.all(x[:, :2] == -1.0) and np.all(x[:, 26:] == -1.0)


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
    """Extra to the fixture tests above: the real files, where `make fashion-data` ran."""
    real_dir = os.path.join(data.DEFAULT_DATA_PATH, data.FASHION_MNIST_SUBDIR)
    if not os.path.isfile(os.path.join(real_dir, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"real Fashion-MNIST not in {real_dir} (`make fashion-data`); the "
                    "loader is tested on fixture files above")
    x, y = data.load_fashion_mnist("train", data_dir=real_dir)
    assert x.shape == (60000, 28, 28, 1) and y.shape == (60000,)
    assert x.min() == -1.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_load_bad_names():
    for name in ("", None):
        with pytest.raises(ValueError, match="digits"):
            data.load(name)
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="fashion_mnist"):
        data.load("no_such_dataset_xyz")
