"""KG loaders: published counts and checksums of the bundled data; bad files."""
import os

import numpy as np
import pytest

from jaxgraph import kg_data

DATA = kg_data.package_data_dir()


def test_checksums_of_bundled_files():
    lines = open(os.path.join(DATA, "SHA256SUMS")).read().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line.strip())
    assert set(sums) == {"WN18RR.tar.gz", "FB15k-237.tar.gz", "Wordnet3.0-LICENSE",
                         "FB15k-237.README.txt"}
    for name, digest in sums.items():
        assert kg_data.sha256(os.path.join(DATA, name)) == digest
    assert kg_data.DATASETS["wn18rr"].sha256 == sums["WN18RR.tar.gz"]


@pytest.mark.parametrize("name,counts", [("wn18rr", (86835, 3034, 3134, 40943, 11)),
                                         ("fb15k-237", (272115, 17535, 20466, 14541, 237))])
def test_counts(name, counts, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXGRAPH_CACHE", str(tmp_path))
    d = kg_data.load_kg(name)
    assert (len(d.train), len(d.valid), len(d.test), d.num_entities,
            d.num_relations) == counts
    assert all(not e.endswith("\r") for e in d.entities)           # CRLF handled
    assert list(d.entities) == sorted(d.entities)
    d2 = kg_data.load_kg(name)                                      # from the cache
    np.testing.assert_array_equal(d2.test, d.test)
    assert d2.entities == d.entities
    if name == "wn18rr":
        assert "00260881" in d.entities                             # leading zeros kept
        seen = set(d.train[:, 0]) | set(d.train[:, 2])
        unseen = [not ({h, t} <= seen) for h, _, t in d.test]
        assert sum(unseen) == 210


def _write(folder, train, valid, test):
    os.makedirs(folder, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write(text)


def test_malformed_files(tmp_path):
    good = "a\tr\tb\nb\tr\tc\n"
    _write(tmp_path / "bad", good, "a\tr\tb\n\na\tr\n", good)
    with pytest.raises(ValueError, match=r"valid\.txt:3: expected 3 tab-separated fields"):
        kg_data.load_kg("bad", data_dir=str(tmp_path), use_cache=False)
    _write(tmp_path / "unk", good, "a\tr\tb\na\tq\tc\n", "c\tr\tz\n")
    with pytest.raises(ValueError, match=r"valid\.txt:2: unknown relation 'q'"):
        kg_data.load_kg("unk", data_dir=str(tmp_path), vocabulary="train", use_cache=False)
    d = kg_data.load_kg("unk", data_dir=str(tmp_path), use_cache=False)   # vocabulary=all
    assert d.entities == ("a", "b", "c", "z") and d.relations == ("q", "r")
    # id dictionaries (RotatE format): unknown names are errors with file and line
    _write(tmp_path / "dict", good, good, "a\tr\tc\nc\tr\tz\n")
    with open(tmp_path / "dict" / "entities.dict", "w") as f:
        f.write("0\ta\n1\tb\n2\tc\n")
    with open(tmp_path / "dict" / "relations.dict", "w") as f:
        f.write("0\tr\n")
    with pytest.raises(ValueError, match=r"test\.txt:2: unknown entity 'z'"):
        kg_data.load_kg("dict", data_dir=str(tmp_path), use_cache=False)


def test_missing_and_unknown():
    with pytest.raises(ValueError, match="unknown knowledge graph 'yago'.*wn18rr"):
        kg_data.load_kg("yago")
    with pytest.raises(FileNotFoundError, match="not found.*ConvE"):
        kg_data.load_kg("wn18rr", data_dir="/nonexistent")
    with pytest.raises(ValueError, match="unknown vocabulary"):
        kg_data.load_kg("wn18rr", vocabulary="test")


def test_synthetic():
    d = kg_data.synthetic_kg(10, 2, seed=1)
    assert len(d.train) + len(d.valid) + len(d.test) == 20
    allt = d.all_triples()
    fwd = {(h, t) for h, r, t in allt if r == 0}
    inv = {(t, h) for h, r, t in allt if r == 1}
    assert fwd == inv and len(fwd) == 10
