"""Planetoid loader: counts and public split, checksums, bad files (named in the error)."""
import os
import pickle
import shutil

import numpy as np
import pytest

from jaxgraph import planetoid
from jaxgraph.planetoid import PlanetoidDataError, load_planetoid

PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


@pytest.fixture(scope="module")
def cora():
    return load_planetoid("cora")


@pytest.fixture(scope="module")
def citeseer():
    return load_planetoid("citeseer")


def test_cora_counts_and_split(cora):
    assert (cora.num_nodes, cora.num_features, cora.num_classes) == (2708, 1433, 7)
    assert cora.num_undirected_edges == 5278 and cora.senders.size == 10556
    assert (cora.train_idx.size, cora.val_idx.size, cora.test_idx.size) == (140, 500, 1000)
    np.testing.assert_array_equal(cora.train_idx, np.arange(140))
    np.testing.assert_array_equal(cora.val_idx, np.arange(140, 640))
    assert cora.test_idx.min() == 1708 and cora.test_idx.max() == 2707
    assert not np.all(np.diff(cora.test_idx) > 0)          # file order, not sorted
    np.testing.assert_array_equal(np.bincount(cora.labels[cora.train_idx]), [20] * 7)
    # Symmetric, no self-loops, no duplicates.
    pairs = set(zip(cora.senders.tolist(), cora.receivers.tolist()))
    assert len(pairs) == 10556 and all((v, u) in pairs for u, v in pairs)
    assert np.all(cora.senders != cora.receivers)
    # Disjoint splits.
    assert not (cora.mask("train") & cora.mask("val")).any()
    assert not (cora.mask("val") & cora.mask("test")).any()


def test_citeseer_counts_and_padding(citeseer):
    assert (citeseer.num_nodes, citeseer.num_features, citeseer.num_classes) == (3327, 3703, 6)
    assert citeseer.num_undirected_edges == 4552
    assert (citeseer.train_idx.size, citeseer.val_idx.size, citeseer.test_idx.size) == (
        120, 500, 1000)
    np.testing.assert_array_equal(np.bincount(citeseer.labels[citeseer.train_idx]), [20] * 6)
    # The 15 isolated test positions have zero features and are not test nodes.
    empty = np.flatnonzero(np.asarray(citeseer.features.sum(axis=1)).ravel() == 0)
    span = np.arange(citeseer.test_idx.min(), citeseer.test_idx.max() + 1)
    padded = np.setdiff1d(span, citeseer.test_idx)
    assert padded.size == 15 and np.isin(padded, empty).all()
    assert not np.isin(padded, citeseer.test_idx).any()


def test_row_normalisation(cora):
    x = cora.row_normalized_features()
    np.testing.assert_allclose(np.asarray(x.sum(axis=1)).ravel(), 1.0, rtol=1e-5)


def test_checksums_match_the_data_readme():
    sums = planetoid._read_checksums(planetoid.PACKAGE_DATA_DIR)
    assert len(sums) == 16
    # Values from the shared data README, section 4.
    assert sums["ind.cora.x"] == ("23cfa55d91c6f624233f5eb7b6e3f141f1bd2b2ae39608a63cf5d084"
                                  "bb27baab")
    assert sums["ind.citeseer.test.index"] == ("2af990671580b6b2df5d158d1038f8292e30c9cd821b"
                                               "5453f399659b25b723d4")
    for name in ("LICENSE", "README.md"):
        assert os.path.exists(os.path.join(planetoid.PACKAGE_DATA_DIR, name))


@pytest.fixture()
def cora_copy(tmp_path):
    for part in PARTS:
        shutil.copy(os.path.join(planetoid.PACKAGE_DATA_DIR, f"ind.cora.{part}"), tmp_path)
    shutil.copy(os.path.join(planetoid.PACKAGE_DATA_DIR, "SHA256SUMS"), tmp_path)
    return tmp_path


def test_missing_file_is_named(cora_copy):
    os.remove(cora_copy / "ind.cora.tx")
    with pytest.raises(PlanetoidDataError, match=r"ind\.cora\.tx.*kimiyoung/planetoid"):
        load_planetoid("cora", cora_copy)


def test_corrupt_file_fails_checksum(cora_copy):
    data = bytearray((cora_copy / "ind.cora.allx").read_bytes())
    data[100] ^= 0xFF
    (cora_copy / "ind.cora.allx").write_bytes(bytes(data))
    with pytest.raises(PlanetoidDataError, match=r"corrupt.*ind\.cora\.allx.*sha256"):
        load_planetoid("cora", cora_copy)


def test_unparseable_file_without_checksums(cora_copy):
    os.remove(cora_copy / "SHA256SUMS")
    (cora_copy / "ind.cora.y").write_bytes(b"not a pickle")
    with pytest.raises(PlanetoidDataError, match=r"cannot unpickle .*ind\.cora\.y"):
        load_planetoid("cora", cora_copy)


def test_restricted_unpickler_refuses_code(cora_copy):
    os.remove(cora_copy / "SHA256SUMS")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (cora_copy / "ind.cora.graph").write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(PlanetoidDataError, match=r"ind\.cora\.graph.*refusing to load global"):
        load_planetoid("cora", cora_copy)


def test_bad_name_and_missing_pubmed(tmp_path):
    with pytest.raises(ValueError, match=r"unknown Planetoid dataset 'cor'.*cora, citeseer"):
        load_planetoid("cor")
    with pytest.raises(PlanetoidDataError, match=r"ind\.pubmed\.x.*download=True"):
        load_planetoid("pubmed", tmp_path)
