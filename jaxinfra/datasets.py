"""Offline image data sets as float32 NHWC arrays scaled to [-1, 1].

Every loader returns ``(images, labels)``: images (N, H, W, C) float32 in [-1, 1] and
labels (N,) int32. ``max_examples`` keeps the first n examples (deterministic).

Where data sets on disk are looked for: the folders of the ``JAXINFRA_DATA_PATH``
environment variable (``os.pathsep``-separated), by default :data:`DEFAULT_DATA_PATH`,
the folder of Debian's ``dataset-*`` packages. Fashion-MNIST is ``<folder>/fashion-mnist``.
Tests point the variable at fixture folders; CI points it at an empty one, so no test
can depend on what happens to be installed.
"""
import gzip
import os

import numpy as np

DATA_PATH_ENV = "JAXINFRA_DATA_PATH"
DEFAULT_DATA_PATH = "/usr/share/datasets"
FASHION_MNIST_SUBDIR = "fashion-mnist"
OFFLINE = ("digits", "fashion_mnist")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}
_HOW_TO_GET = ("Get it with `make fashion-data` (installs Debian's dataset-fashion-mnist "
               f"into {DEFAULT_DATA_PATH}/{FASHION_MNIST_SUBDIR}), or put the IDX files in "
               f"<folder>/{FASHION_MNIST_SUBDIR} and add <folder> to ${DATA_PATH_ENV}, or "
               "pass data_dir=, or on Colab use load_tfds('fashion_mnist').")


def data_path() -> list:
    """The folders searched for data sets on disk (``$JAXINFRA_DATA_PATH``, else
    :data:`DEFAULT_DATA_PATH`)."""
    value = os.environ.get(DATA_PATH_ENV)
    if value is None:
        value = DEFAULT_DATA_PATH
    return [d for d in value.split(os.pathsep) if d]


def _take(images, labels, max_examples):
    """Keeps the first ``max_examples`` rows (all when None)."""
    if max_examples is None:
        return images, labels
    n = max_examples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"max_examples must be an int >= 1 or None, got {n!r}")
    return images[:max_examples], labels[:max_examples]


def _to_unit_range(images, max_value):
    """Maps [0, max_value] to float32 [-1, 1]."""
    return (np.asarray(images, np.float32) * (2.0 / max_value) - 1.0).astype(np.float32)


def load_digits(max_examples=None):
    """scikit-learn's bundled 8x8 digits.

    Returns:
      images (1797, 8, 8, 1) float32 in [-1, 1] and labels (1797,) int32 in 0..9.
    """
    from sklearn.datasets import load_digits as _sk_digits  # Lazy: heavy import.

    bunch = _sk_digits()
    images = _to_unit_range(bunch.images[..., None], 16.0)
    return _take(images, bunch.target.astype(np.int32), max_examples)


def read_idx(path):
    """Parses an IDX file (gzip-compressed or plain) into a numpy array.

    Raises:
      ValueError: naming ``path`` when the header or size is inconsistent.
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as err:
        raise ValueError(f"corrupt gzip in IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"not an IDX file (bad magic number {raw[:4].hex()}): {path}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"truncated IDX header in {path}")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"IDX file {path} declares shape {shape} ({expected} bytes) "
                         f"but holds {len(raw) - header} bytes of data")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _find_idx(directory, stem):
    """Returns the path of ``stem`` or ``stem.gz`` in ``directory``, else None."""
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def load_fashion_mnist(split="train", data_dir=None, max_examples=None):
    """Fashion-MNIST from IDX files on disk (no network).

    Folders searched: ``data_dir`` alone when given; otherwise ``<folder>/fashion-mnist``
    for each folder of :func:`data_path`.

    Args:
      split: "train" (60000 examples) or "test" (10000; "t10k" also accepted).
      data_dir: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
      max_examples: keep the first n examples.

    Returns:
      images (N, 28, 28, 1) float32 in [-1, 1] and labels (N,) int32.
    """
    prefixes = {"train": "train", "test": "t10k", "t10k": "t10k"}
    if split not in prefixes:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = prefixes[split]
    if data_dir is not None:
        dirs = [os.fspath(data_dir)]
    else:
        dirs = [os.path.join(d, FASHION_MNIST_SUBDIR) for d in data_path()]
    for directory in dirs:
        image_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte")
        label_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte")
        if image_path and label_path:
            break
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST {split!r} IDX files not found in {dirs}. {_HOW_TO_GET}")
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"inconsistent IDX files: images {images.shape} in "
                         f"{image_path}, labels {labels.shape} in {label_path}")
    images, labels = _take(images, labels, max_examples)
    return _to_unit_range(images[..., None], 255.0), labels.astype(np.int32)


def load_tfds(name, split="train", max_examples=None, data_dir=None):
    """Any image data set from tensorflow_datasets (downloads; meant for Colab).

    Args:
      name: tfds name with "image" and "label" features, e.g. "fashion_mnist".
      split: tfds split name.
      max_examples: keep the first n examples (only those are read).
      data_dir: tfds data folder (tfds default when None).

    Returns:
      images (N, H, W, C) float32 in [-1, 1] and labels (N,) int32.
    """
    try:
        import tensorflow_datasets as tfds  # Lazy: optional and heavy.
    except ImportError as err:
        raise ImportError("load_tfds needs `pip install tensorflow tensorflow-datasets`"
                          f"; offline data sets: {OFFLINE}") from err
    _take(np.zeros(1), np.zeros(1), max_examples)  # Validates max_examples.
    if max_examples is not None:
        split = f"{split}[:{int(max_examples)}]"
    try:
        tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise ValueError(f"unknown data set {name!r}: not in tensorflow_datasets; "
                         f"offline data sets are {OFFLINE}") from err
    try:
        arrays = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1,
                                         data_dir=data_dir))
    except Exception as err:  # Network, missing tensorflow, bad split, ...
        raise RuntimeError(f"tensorflow_datasets could not load {name!r} split "
                           f"{split!r} ({type(err).__name__}: {err}). Without network "
                           f"use one of the offline data sets {OFFLINE}.") from err
    if "image" not in arrays or "label" not in arrays:
        raise ValueError(f"{name!r} has no 'image'/'label' features: {sorted(arrays)}")
    images = np.asarray(arrays["image"])
    if images.ndim == 3:
        images = images[..., None]
    return _to_unit_range(images, 255.0), np.asarray(arrays["label"], np.int32)


def load(name, **kwargs):
    """Dispatches to ``load_digits``, ``load_fashion_mnist`` or ``load_tfds``.

    Args:
      name: "digits", "fashion_mnist" (offline), or any other tfds image data set.
      **kwargs: forwarded to the loader (e.g. ``split``, ``max_examples``).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}; "
                         f"offline data sets are {OFFLINE}")
    key = name.strip().lower().replace("-", "_")
    if key == "digits":
        return load_digits(**kwargs)
    if key == "fashion_mnist":
        return load_fashion_mnist(**kwargs)
    return load_tfds(name, **kwargs)
