"""Planetoid citation graphs (Cora, Citeseer, PubMed) with the public split.

The Planetoid files (``ind.<name>.{x,y,tx,ty,allx,ally,graph,test.index}``, Yang et al. 2016)
are Python-2 pickles of scipy CSR matrices, numpy arrays and a dict of adjacency lists.
They are read with a *restricted* unpickler that only resolves the numpy / scipy / builtin
classes these files use, so a tampered file cannot run code, and every shipped file is
checked against ``SHA256SUMS`` before it is read.

Cora and Citeseer ship with the package (``jaxgraph/data_files/planetoid``, MIT, see the
LICENSE there). PubMed is not shipped: pass ``data_dir`` with the complete ``ind.pubmed.*``
set, or ``download=True`` where a network exists.

Assembly follows Kipf's convention (graph.md §6, data README §3.2): test rows re-ordered
into place; Citeseer's 15 featureless test positions padded with zero rows; edges made
symmetric, self-loops dropped, duplicates removed; split train = ``range(len(y))``,
val = the next 500 nodes, test = ``test.index``.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import os
import pickle
import urllib.request

import numpy as np
import scipy.sparse as sp

__all__ = ["Planetoid", "load_planetoid", "PlanetoidDataError", "DATASETS",
           "PACKAGE_DATA_DIR"]

DATASETS = ("cora", "citeseer", "pubmed")
_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
PACKAGE_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_files",
                                "planetoid")
_URL = ("https://github.com/kimiyoung/planetoid/raw/"
        "af6abf468a772cc055bec88c52e4d6f51b7c37e3/data/ind.{name}.{part}")
# Expected (num_nodes, num_features, num_classes, undirected edges, train, val, test).
_COUNTS = {"cora": (2708, 1433, 7, 5278, 140, 500, 1000),
           "citeseer": (3327, 3703, 6, 4552, 120, 500, 1000),
           "pubmed": (19717, 500, 3, 44324, 60, 500, 1000)}


class PlanetoidDataError(RuntimeError):
    """A Planetoid file is missing, corrupt (checksum mismatch) or malformed."""


@dataclasses.dataclass(frozen=True)
class Planetoid:
    """One Planetoid graph with its public split (host numpy arrays).

    Attributes:
      name: ``"cora"``, ``"citeseer"`` or ``"pubmed"``.
      features: (N, F) float32 CSR matrix, raw binary / TF-IDF values (not normalised).
      labels: (N,) int32 class ids (0 for Citeseer's featureless padding rows).
      senders, receivers: (2E,) int32, both directions of every undirected edge, no
        self-loops, sorted by (receiver, sender).
      train_idx, val_idx, test_idx: int32 node ids of the public split.
    """
    name: str
    features: sp.csr_matrix
    labels: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def num_nodes(self) -> int:
        return self.features.shape[0]

    @property
    def num_features(self) -> int:
        return self.features.shape[1]

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    @property
    def num_undirected_edges(self) -> int:
        return self.senders.shape[0] // 2

    def mask(self, split: str) -> np.ndarray:
        """(N,) bool mask of ``split`` in {"train", "val", "test"}."""
        idx = {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}.get(split)
        if idx is None:
            raise ValueError(f"unknown split {split!r}; valid: train, val, test")
        m = np.zeros(self.num_nodes, bool)
        m[idx] = True
        return m

    def row_normalized_features(self) -> sp.csr_matrix:
        """Features divided by their row sums (rows summing to 0 stay 0), float32 CSR."""
        rowsum = np.asarray(self.features.sum(axis=1)).ravel()
        inv = np.where(rowsum > 0, 1.0 / np.where(rowsum > 0, rowsum, 1.0), 0.0)
        return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ self.features,
                             dtype=np.float32)


# ---------------------------------------------------------------- restricted unpickling

def _allowed_globals():
    from numpy.lib import format as _  # noqa: F401  (ensures numpy submodules are loaded)
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.multiarray", "scalar"): multiarray.scalar,
        ("numpy._core.multiarray", "scalar"): multiarray.scalar,
        # The files name the private module path scipy.sparse.csr (removed in SciPy 2).
        ("scipy.sparse.csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse._csr", "csr_matrix"): sp.csr_matrix,
        ("scipy.sparse", "csr_matrix"): sp.csr_matrix,
        ("collections", "defaultdict"): collections.defaultdict,
        ("__builtin__", "list"): list, ("builtins", "list"): list,
        ("__builtin__", "dict"): dict, ("builtins", "dict"): dict,
        ("__builtin__", "set"): set, ("builtins", "set"): set,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the numpy / scipy.sparse / builtin classes of the Planetoid files."""

    _allowed = None

    def find_class(self, module, name):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        obj = self._allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return obj


def _unpickle(data: bytes, path: str):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - reported with the file name
        raise PlanetoidDataError(f"cannot unpickle {path}: {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- file access

def _read_checksums(directory: str) -> dict:
    path = os.path.join(directory, "SHA256SUMS")
    if not os.path.exists(path):
        return {}
    sums = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                digest, fname = line.split()
                sums[fname.lstrip("*")] = digest
    return sums


def _read_file(directory: str, fname: str, checksums: dict, name: str, download: bool) -> bytes:
    path = os.path.join(directory, fname)
    if not os.path.exists(path):
        if download:
            os.makedirs(directory, exist_ok=True)
            part = fname[len(f"ind.{name}."):]
            urllib.request.urlretrieve(_URL.format(name=name, part=part), path)
        else:
            raise PlanetoidDataError(
                f"missing Planetoid file {path}. Get the complete ind.{name}.* set from "
                f"kimiyoung/planetoid (data/) or tkipf/gcn (gcn/data/) into that folder, "
                f"or call load_planetoid({name!r}, download=True) with a network.")
    with open(path, "rb") as f:
        data = f.read()
    expected = checksums.get(fname)
    if expected is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected:
            raise PlanetoidDataError(
                f"corrupt Planetoid file {path}: sha256 {digest} != expected {expected} "
                f"(from {os.path.join(directory, 'SHA256SUMS')})")
    return data


def load_planetoid(name: str, data_dir: str | None = None, *, download: bool = False,
                   check_counts: bool = True) -> Planetoid:
    """Loads a Planetoid graph with its public split.

    Args:
      name: ``"cora"``, ``"citeseer"`` or ``"pubmed"`` (case-insensitive).
      data_dir: folder with the ``ind.<name>.*`` files (default: the files shipped in
        the package, Cora and Citeseer only). A ``SHA256SUMS`` file there is enforced.
      download: fetch missing files from kimiyoung/planetoid (network needed).
      check_counts: verify node / feature / class / edge / split counts.

    Returns:
      A :class:`Planetoid`.

    Raises:
      ValueError: unknown ``name``.
      PlanetoidDataError: a file is missing, fails its checksum or cannot be parsed; the
        message names the file.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown Planetoid dataset {name!r}; valid: {', '.join(DATASETS)}")
    directory = PACKAGE_DATA_DIR if data_dir is None else os.fspath(data_dir)
    checksums = _read_checksums(directory)
    raw = {}
    for part in _PARTS:
        fname = f"ind.{key}.{part}"
        data = _read_file(directory, fname, checksums, key, download)
        path = os.path.join(directory, fname)
        if part == "test.index":
            try:
                raw[part] = np.array([int(v) for v in data.decode("ascii").split()], np.int64)
            except ValueError as e:
                raise PlanetoidDataError(f"malformed index file {path}: {e}") from e
        else:
            raw[part] = _unpickle(data, path)
    try:
        out = _assemble(key, raw)
    except (ValueError, IndexError, TypeError, AttributeError) as e:
        raise PlanetoidDataError(f"malformed Planetoid data in {directory} "
                                 f"(ind.{key}.*): {e}") from e
    if check_counts:
        _check_counts(out, directory)
    return out


def _assemble(name: str, raw: dict) -> Planetoid:
    x, tx, allx = (sp.csr_matrix(raw[k], dtype=np.float32) for k in ("x", "tx", "allx"))
    y, ty, ally = (np.asarray(raw[k]) for k in ("y", "ty", "ally"))
    idx = raw["test.index"]
    idx_sorted = np.sort(idx)
    if name == "citeseer":
        # 15 isolated test positions have no rows in tx/ty: insert zero rows (Kipf).
        span = idx_sorted[-1] - idx_sorted[0] + 1
        place = sp.csr_matrix((np.ones(len(idx_sorted), np.float32),
                               (idx_sorted - idx_sorted[0], np.arange(len(idx_sorted)))),
                              shape=(span, tx.shape[0]))
        tx = sp.csr_matrix(place @ tx, dtype=np.float32)
        ty_ext = np.zeros((span, ty.shape[1]), ty.dtype)
        ty_ext[idx_sorted - idx_sorted[0], :] = ty
        ty = ty_ext
    features = sp.vstack([allx, tx]).tocsr()
    labels_onehot = np.vstack([ally, ty])
    # Re-order the test rows: new[idx] = old[idx_sorted].
    perm = np.arange(features.shape[0])
    perm[idx] = idx_sorted
    features = features[perm]
    labels_onehot = labels_onehot[perm]
    labels = labels_onehot.argmax(axis=1).astype(np.int32)
    features = sp.csr_matrix(features, dtype=np.float32)
    n = features.shape[0]

    graph = raw["graph"]
    pairs = []
    for u, nbrs in graph.items():
        for v in nbrs:
            pairs.append((int(u), int(v)))
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError(f"edge endpoint out of range [0, {n})")
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[both[:, 0] != both[:, 1]]
    both = np.unique(both, axis=0)
    order = np.lexsort((both[:, 0], both[:, 1]))
    both = both[order]
    n_train = y.shape[0]
    return Planetoid(
        name=name, features=features, labels=labels,
        senders=both[:, 0].astype(np.int32), receivers=both[:, 1].astype(np.int32),
        train_idx=np.arange(n_train, dtype=np.int32),
        val_idx=np.arange(n_train, n_train + 500, dtype=np.int32),
        test_idx=idx.astype(np.int32))


def _check_counts(d: Planetoid, directory: str) -> None:
    expected = _COUNTS[d.name]
    got = (d.num_nodes, d.num_features, d.labels.max() + 1, d.num_undirected_edges,
           d.train_idx.size, d.val_idx.size, d.test_idx.size)
    if tuple(map(int, got)) != expected:
        names = "nodes, features, classes, undirected edges, train, val, test"
        raise PlanetoidDataError(f"ind.{d.name}.* in {directory}: counts ({names}) = "
                                 f"{tuple(map(int, got))}, expected {expected}")
