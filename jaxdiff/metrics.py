"""Inception FID and KID, as pytorch-fid and torch-fidelity / clean-fid compute them.

    variables = load_inception()                       # pytorch-fid's weights, see below
    real = fid_stats(real_images, variables)           # (N, H, W, 3) in [0, 1], or batches
    fake = fid_stats(samples, variables)
    score = fid(real, fake)
    kid_mean, kid_std = kid(inception_features(real_images, variables),
                            inception_features(samples, variables))

The features are the 2048-d pool3 activations of pytorch-fid's FID InceptionV3
(:mod:`jaxdiff.models.inception`, a Flax port checked against pytorch-fid to float32
rounding), so FID is comparable with pytorch-fid's numbers given the same images, the
same number of them and the same reference set (not with clean-fid's "clean" mode, which
resizes differently). Real weights were not available when the port was checked: the
agreement is shown with random weights of the same names and shapes.
(For the small-classifier Fréchet distance of the toy data sets see :mod:`jaxdiff.frechet`.)

Weights: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (~95 MB, from
:data:`WEIGHTS_URL`). Reading a ``.pth`` needs torch; convert it once to an ``.npz`` of
numpy arrays (same torch names) that loads without torch:

    python -m jaxdiff.inception_weights --convert=pt_inception-2015-12-05-6726825d.pth --out=inc.npz
    python -m jaxdiff.inception_weights --download      # fetch into the cache and convert (network)

:func:`load_inception` without a path looks in :func:`cache_dir` (``$JAXDIFF_CACHE`` or
``~/.cache/jaxdiff``) for the ``.npz``, then the ``.pth``.

Images: (N, H, W, 3) float in [0, 1] (or uint8, divided by 255 as pytorch-fid's
``ToTensor``), any size: they are resized to 299 x 299 as pytorch-fid does (torch's
bilinear, no antialiasing). Grayscale (N, H, W, 1) images are repeated to 3 channels,
as pytorch-fid's loader does (PIL ``convert("RGB")``). Anything else raises.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Iterable, NamedTuple

import jax
import numpy as np

from jaxdiff.frechet import FeatureStats, frechet_distance
from jaxdiff.models.inception import (
    FEATURE_DIM,
    FIDInceptionV3,
    preprocess,
    random_state_dict,
    variables_from_state_dict,
)
from jaxinfra.digests import file_sha256

__all__ = ["inception_features", "iter_inception_features", "fid_stats", "fid", "kid",
           "KID", "FeatureStats", "FeatureAccumulator", "load_inception", "read_state_dict",
           "convert", "download_weights", "cache_dir", "save_stats", "load_stats",
           "random_state_dict", "WEIGHTS_URL", "WEIGHTS_FILE", "NPZ_FILE"]

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_FILE)
_WEIGHTS_SHA256_PREFIX = "6726825d"        # torch.hub's convention: in the file name
NPZ_FILE = WEIGHTS_FILE[:-len(".pth")] + ".npz"
_SUFFIXES = (".npz", ".pth", ".pt")


# ------------------------------------------------------------------------ weights


def cache_dir() -> str:
    """``$JAXDIFF_CACHE`` or ``~/.cache/jaxdiff``: where the Inception weights are looked for."""
    return os.environ.get("JAXDIFF_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "jaxdiff"))


def _how_to_get(looked_for: str) -> str:
    return (f"FID Inception weights not found: {looked_for}. Get {WEIGHTS_FILE} from "
            f"{WEIGHTS_URL} (pytorch-fid's release), then pass its path, or convert it once "
            f"with `python -m jaxdiff.inception_weights --convert=<pth> --out="
            f"{os.path.join(cache_dir(), NPZ_FILE)}` (needs torch) and load that without "
            f"torch; or run `python -m jaxdiff.inception_weights --download` with a network.")


def _read_pth(path: str) -> dict:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs torch (pip install torch, or the project's [bench] "
            f"extra); without torch, convert it to .npz elsewhere with `python -m "
            f"jaxdiff.inception_weights --convert={path} --out=<npz>` and load the .npz") from e
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """Torch-named arrays from a ``.pth`` / ``.pt`` (needs torch) or an ``.npz`` (does not).

    Args:
      path: the file.

    Returns:
      name -> numpy array, names and layouts as in pytorch-fid's weight file.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"weight file {path!r} has suffix {suffix!r}; accepted: {_SUFFIXES}")
    if not os.path.isfile(path):
        raise FileNotFoundError(_how_to_get(f"no file {path}"))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    return _read_pth(path)


def convert(pth_path: str, out_path: str) -> str:
    """Writes the state dict of ``pth_path`` (needs torch) as an ``.npz`` (no torch needed
    to read it); checks the keys and shapes first. Returns ``out_path``."""
    if not os.fspath(out_path).endswith(".npz"):
        raise ValueError(f"--out must end in .npz, got {out_path!r}")
    state = read_state_dict(pth_path)
    variables_from_state_dict(state)                 # strict key / shape check
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    np.savez(out_path, **state)
    return out_path


def download_weights(dest: str | None = None, *, timeout: float = 60.0) -> str:
    """Downloads pytorch-fid's weight file (network needed) and checks its SHA-256 prefix.

    Args:
      dest: target path (default ``cache_dir()/pt_inception-2015-12-05-6726825d.pth``).
      timeout: seconds to wait for the server to answer.

    Returns:
      The path of the ``.pth`` file.
    """
    dest = dest or os.path.join(cache_dir(), WEIGHTS_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    try:
        with urllib.request.urlopen(WEIGHTS_URL, timeout=timeout) as r, open(part, "wb") as f:
            for block in iter(lambda: r.read(1 << 20), b""):
                f.write(block)
    except (urllib.error.URLError, OSError) as e:
        raise OSError(f"could not download {WEIGHTS_URL} ({e}); offline? Download it on a "
                      f"machine with a network and copy it to {dest}") from e
    digest = file_sha256(part)
    if not digest.startswith(_WEIGHTS_SHA256_PREFIX):
        raise ValueError(f"downloaded {WEIGHTS_URL} has SHA-256 {digest[:16]}..., expected "
                         f"a prefix {_WEIGHTS_SHA256_PREFIX}")
    os.replace(part, dest)
    return dest


def load_inception(path: str | None = None) -> dict:
    """The FID Inception's Flax variables, from a weight file.

    Args:
      path: an ``.npz`` (see :func:`convert`) or pytorch-fid's ``.pth`` (needs torch).
        None: the ``.npz``, else the ``.pth``, in :func:`cache_dir`.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` on the default device.
    """
    if path is None:
        candidates = [os.path.join(cache_dir(), f) for f in (NPZ_FILE, WEIGHTS_FILE)]
        found = [p for p in candidates if os.path.isfile(p)]
        if not found:
            raise FileNotFoundError(_how_to_get(f"neither {candidates[0]} nor {candidates[1]}"))
        path = found[0]
    return jax.device_put(variables_from_state_dict(read_state_dict(path)))


# ----------------------------------------------------------------------- features


def _check_images(images) -> np.ndarray:
    """(N, H, W, C) images -> (N, H, W, 3) float32 in [0, 1] (uint8 / 255, gray repeated)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"images must have 3 (RGB) or 1 (gray) channels last, got "
                         f"{images.shape[-1]} (shape {images.shape}; NCHW? use NHWC)")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be float in [0, 1] or uint8, got dtype {images.dtype}")
    images = images.astype(np.float32)
    finite = np.isfinite(images)
    if not finite.all():
        raise ValueError(f"images must be finite, got {images.size - int(finite.sum())} "
                         f"NaN/inf values")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise ValueError(f"images must lie in [0, 1], got [{images.min():.4g}, "
                         f"{images.max():.4g}]; from [-1, 1] use (x + 1) / 2")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


_preprocess = jax.jit(preprocess)                   # compiled per input shape (cheap)


@jax.jit
def _network(variables, x):
    """(B, 299, 299, 3) in [-1, 1] -> (B, 2048); compiled once per batch size."""
    return FIDInceptionV3(resize_input=False, normalize_input=False).apply(variables, x)


def iter_inception_features(batches: Iterable, variables, *, batch_size: int = 50):
    """Yields pool3 features (n_i, 2048) float32 of each chunk of the streamed images.

    Args:
      batches: iterable of (n_i, H, W, C) image arrays (see the module docstring); the
        sizes may vary, each is cut into chunks of ``batch_size``.
      variables: the network's variables (:func:`load_inception`).
      batch_size: images per network call; a short chunk is padded to it, so the
        network compiles once per ``batch_size``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    variables = jax.device_put(variables)
    for batch in batches:
        images = _check_images(batch)
        for lo in range(0, images.shape[0], batch_size):
            x = images[lo:lo + batch_size]
            n = x.shape[0]
            if n < batch_size:
                x = np.concatenate([x, np.zeros((batch_size - n,) + x.shape[1:], x.dtype)])
            yield np.asarray(_network(variables, _preprocess(x)))[:n]


def inception_features(images, variables, batch_size: int = 50) -> np.ndarray:
    """Pool3 features of pytorch-fid's FID InceptionV3.

    Args:
      images: (N, H, W, 3) float in [0, 1] or uint8; (N, H, W, 1) is repeated to RGB.
      variables: the network's variables (:func:`load_inception`).
      batch_size: images per network call (see :func:`iter_inception_features`).

    Returns:
      (N, 2048) float32 features.
    """
    chunks = list(iter_inception_features([images], variables, batch_size=batch_size))
    return np.concatenate(chunks) if chunks else np.zeros((0, FEATURE_DIM), np.float32)


# -------------------------------------------------------------------- statistics


class FeatureAccumulator:
    """Mean and covariance of streamed feature batches, from float64 running sums.

    Keeps n, the sum of ``x - c`` and the sum of outer products ``(x - c)(x - c)^T``, with
    ``c`` the first batch's mean (a shift against cancellation); memory O(d^2), not O(N d).
    """

    def __init__(self):
        self.n = 0
        self._shift = self._sum = self._outer = None

    def update(self, features) -> None:
        """Adds (n, d) features."""
        f = np.asarray(features, np.float64)
        if f.ndim != 2 or (self._sum is not None and f.shape[1] != self._sum.shape[0]):
            want = "(n, d)" if self._sum is None else f"(n, {self._sum.shape[0]})"
            raise ValueError(f"features must have shape {want}, got {f.shape}")
        if f.shape[0] == 0:
            return
        if self._sum is None:
            d = f.shape[1]
            self._shift = f.mean(axis=0)
            self._sum, self._outer = np.zeros(d), np.zeros((d, d))
        g = f - self._shift
        self.n += f.shape[0]
        self._sum += g.sum(axis=0)
        self._outer += g.T @ g

    def stats(self) -> FeatureStats:
        """:class:`FeatureStats` (mean, unbiased covariance, n) of everything added."""
        if self.n < 2:
            raise ValueError(f"feature statistics need at least 2 images, got {self.n}")
        mean = self._sum / self.n
        cov = (self._outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        return FeatureStats(self._shift + mean, cov, self.n)


def fid_stats(images, variables, *, batch_size: int = 50) -> FeatureStats:
    """Inception feature mean and covariance of images, streamed.

    Args:
      images: (N, H, W, C) images, or an iterable of such batches (a data pipeline), see
        :func:`inception_features`. N >= 2 in all.
      variables: the network's variables (:func:`load_inception`).
      batch_size: images per network call.

    Returns:
      :class:`FeatureStats`: mu (2048,), sigma (2048, 2048) float64, n.
    """
    batches = [images] if isinstance(images, np.ndarray) or hasattr(images, "shape") \
        else images
    acc = FeatureAccumulator()
    for f in iter_inception_features(batches, variables, batch_size=batch_size):
        acc.update(f)
    return acc.stats()


def save_stats(path: str, stats: FeatureStats) -> None:
    """Writes ``mu``, ``sigma`` (pytorch-fid's ``--save-stats`` keys) and ``n`` to an .npz."""
    np.savez(path, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n))


def load_stats(path: str) -> FeatureStats:
    """Reads :func:`save_stats` files and pytorch-fid's stats .npz (n = 0 when absent)."""
    with np.load(path) as data:
        return FeatureStats(data["mu"], data["sigma"], int(data["n"]) if "n" in data else 0)


def fid(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    """Fréchet Inception Distance ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``.

    :func:`jaxdiff.frechet.frechet_distance`: float64, the trace of the root from two
    symmetric eigendecompositions (pytorch-fid's ``scipy.linalg.sqrtm`` value to
    round-off, exact on singular covariances).
    """
    return frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma)


class KID(NamedTuple):
    """Kernel Inception Distance: mean and standard deviation over the subsets."""
    mean: float
    std: float


def _poly_kernel(x, y):
    """(m, d), (m', d) -> (m, m') kernel ``(x . y / d + 1)^3``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 of two equal-size samples (m, d) under :func:`_poly_kernel`."""
    m = x.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2.0 * kxy.mean())


def kid(features_a, features_b, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> KID:
    """Kernel Inception Distance: unbiased MMD^2, polynomial kernel, averaged over subsets.

    As torch-fidelity and clean-fid: kernel ``k(x, y) = (x . y / d + 1)^3`` (d = 2048),
    ``num_subsets`` times draw ``m`` rows of each set without replacement and compute
    ``[sum_{i!=j} k(a_i, a_j) + sum_{i!=j} k(b_i, b_j)] / (m (m - 1))
    - 2 / m^2 sum_{i,j} k(a_i, b_j)``. Their defaults are 100 subsets of 1000; as
    clean-fid, ``m = min(subset_size, N_a, N_b)`` (torch-fidelity raises instead). The
    draws: ``rng = np.random.default_rng(seed)``, per subset ``rng.choice(N_a, m,
    replace=False)`` then ``rng.choice(N_b, m, replace=False)``. Float64.

    Args:
      features_a, features_b: (N_a, d), (N_b, d) features (:func:`inception_features`).
      num_subsets: subsets to average (>= 1).
      subset_size: rows per subset, capped as above; the cap must be >= 2.
      seed: seed of the subset draws.

    Returns:
      :class:`KID` (mean, std over subsets; std with ddof 0, as torch-fidelity). Can be
      slightly negative (the estimator is unbiased).
    """
    a, b = (np.asarray(f, np.float64) for f in (features_a, features_b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N_a, d) and (N_b, d), got {a.shape}, {b.shape}")
    if int(num_subsets) < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs subsets of >= 2 rows: subset_size={subset_size}, "
                         f"N_a={a.shape[0]}, N_b={b.shape[0]}")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(int(num_subsets)):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        values.append(_mmd2_unbiased(a[ia], b[ib]))
    return KID(float(np.mean(values)), float(np.std(values)))
