"""KG loaders: published counts and checksums of the bundled data; bad files (encodings,
binary data, empty splits, unseen names, corrupt caches)."""
import os
import warnings

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


# ------------------------------------------------------------------ reader faults
SMALL = kg_data.synthetic_kg(60, 4, seed=0)          # 60 entities, 4 relations, 192/24/24


def _text(split, extra=""):
    d = SMALL
    return "".join(f"{d.entities[h]}\t{d.relations[r]}\t{d.entities[t]}\n"
                   for h, r, t in d.split(split)) + extra


def _names(d, split):
    return [(d.entities[h], d.relations[r], d.entities[t]) for h, r, t in d.split(split)]


def _write_raw(folder, **raw):
    """train/valid/test.txt from ``raw`` bytes (default: SMALL's splits as UTF-8)."""
    os.makedirs(folder, exist_ok=True)
    for s in kg_data.SPLITS:
        data = raw.get(s, _text(s).encode())
        with open(os.path.join(folder, f"{s}.txt"), "wb") as f:
            f.write(data)


def test_a_bom_is_stripped_not_an_entity(tmp_path):
    bom = b"\xef\xbb\xbf"
    _write_raw(tmp_path / "plain")
    _write_raw(tmp_path / "bom", **{s: bom + _text(s).encode() for s in kg_data.SPLITS})
    plain = kg_data.load_kg("plain", data_dir=str(tmp_path), use_cache=False)
    d = kg_data.load_kg("bom", data_dir=str(tmp_path), use_cache=False)
    assert plain.num_entities == d.num_entities == 60        # was 63: "\ufeffe12" etc.
    assert not any("\ufeff" in e for e in d.entities)
    assert d.fingerprint() == plain.fingerprint()
    # files concatenated with their BOMs, and id dictionaries with one
    _write_raw(tmp_path / "cat", train=bom + _text("train").encode() + bom
               + b"e0\tr0\te1\n")
    with open(tmp_path / "cat" / "entities.dict", "wb") as f:
        f.write(bom + "".join(f"{i}\t{e}\n" for i, e in enumerate(SMALL.entities)).encode())
    with open(tmp_path / "cat" / "relations.dict", "wb") as f:
        f.write(bom + "".join(f"{i}\t{r}\n" for i, r in enumerate(SMALL.relations)).encode())
    d = kg_data.load_kg("cat", data_dir=str(tmp_path), use_cache=False)
    assert d.entities == SMALL.entities and len(d.train) == len(SMALL.train) + 1


@pytest.mark.parametrize("raw,message", [
    ("caf\u00e9\tr0\te1\n".encode("latin-1"),
     r"valid\.txt:25: not UTF-8 text \(byte 0xe9 at offset \d+; Latin-1 or cp1252\?\); "
     r"save it as UTF-8"),
    (b"\x00\x01\x02binary\xff" * 50, r"valid\.txt: binary data \(NUL byte at offset 0\)"),
    (b"\x1f\x8b\x08\x00" + bytes(range(256)), r"valid\.txt: gzip-compressed binary data"),
    ("e1\tr0\te2\n".encode("utf-16"), r"valid\.txt: UTF-16 text; save it as UTF-8"),
], ids=["latin1", "binary", "gzip", "utf16"])
def test_files_that_are_not_utf8_text_are_refused_by_name(tmp_path, raw, message):
    body = raw if not raw.startswith(b"caf") else _text("valid").encode() + raw
    _write_raw(tmp_path / "g", valid=body)
    with pytest.raises(ValueError, match=message):
        kg_data.load_kg("g", data_dir=str(tmp_path), use_cache=False)


def test_an_empty_split_is_refused_by_name(tmp_path):
    _write_raw(tmp_path / "g", test=b"\n  \n")
    with pytest.raises(ValueError, match=r"g/test\.txt: no triples \(the test split is "
                                         r"empty\)"):
        kg_data.load_kg("g", data_dir=str(tmp_path), use_cache=False)


def test_unseen_entities_and_relations_keep_filter_error(tmp_path):
    """valid has 2 triples naming what train lacks (entity 'new1', relation 'rX'); test has
    1 ('new2'). keep / filter / error combined with vocabulary all / train."""
    _write_raw(tmp_path / "g", valid=_text("valid", "new1\tr0\te1\ne2\trX\te3\n").encode(),
               test=_text("test", "e5\tr1\tnew2\n").encode())
    load = lambda **kw: kg_data.load_kg("g", data_dir=str(tmp_path), use_cache=False, **kw)
    d = load()                                                    # keep + all: as before
    assert (d.num_entities, d.num_relations, len(d.valid), len(d.test)) == (62, 5, 26, 25)
    with pytest.raises(ValueError, match=r"valid\.txt:25: unknown entity 'new1' \(not in the "
                       r"train split; use vocabulary='all'.* or unseen='filter'"):
        load(vocabulary="train")                                  # keep + train
    for vocabulary, sizes in (("all", (62, 5)), ("train", (60, 4))):
        with pytest.warns(UserWarning) as record:
            d = load(vocabulary=vocabulary, unseen="filter")
        messages = sorted(str(w.message) for w in record)
        assert len(messages) == 2
        assert messages[0].endswith("test.txt: dropped 1 of 25 test triples with an entity "
                                    "or relation that does not occur in the train split "
                                    "(unseen='filter')")
        assert "valid.txt: dropped 2 of 26 valid triples" in messages[1]
        assert (d.num_entities, d.num_relations) == sizes
        assert _names(d, "valid") == _names(SMALL, "valid")    # the original triples
        assert _names(d, "test") == _names(SMALL, "test")
    for vocabulary in ("all", "train"):
        with pytest.raises(ValueError, match=r"valid\.txt:25: entity 'new1' does not occur "
                           r"in the train split \(unseen='error'; triples with an unseen "
                           r"entity or relation: valid: 2 of 26, test: 1 of 25\)"):
            load(vocabulary=vocabulary, unseen="error")
    # relations are checked too; a split left empty by the filter is an error
    _write_raw(tmp_path / "r", valid=b"e0\trX\te1\n")
    with pytest.raises(ValueError, match=r"valid\.txt:1: relation 'rX' does not occur"):
        kg_data.load_kg("r", data_dir=str(tmp_path), use_cache=False, unseen="error")
    with pytest.raises(ValueError, match=r"valid\.txt: all 1 valid triples .*would leave "
                                         r"the split empty"):
        kg_data.load_kg("r", data_dir=str(tmp_path), use_cache=False, unseen="filter")
    with pytest.raises(ValueError, match="unknown unseen 'drop'; valid: keep, filter, error"):
        load(unseen="drop")


def test_unseen_through_the_config(tmp_path, monkeypatch):
    from configs.kge.kge import get_config as kge_config
    from jaxgraph.kge import experiment
    monkeypatch.setenv("JAXGRAPH_CACHE", str(tmp_path / "cache"))
    _write_raw(tmp_path / "g", valid=_text("valid", "new1\tr0\te1\n").encode())
    c = kge_config("tiny")
    c.dataset, c.data_dir, c.unseen = "g", str(tmp_path), "filter"
    with pytest.warns(UserWarning, match="dropped 1 of 25 valid triples"):
        d = experiment.load_data(c)
    assert len(d.valid) == 24
    c.unseen = "ignore"
    with pytest.raises(ValueError, match=r"unknown config.unseen 'ignore'; valid: keep, "
                                         r"filter, error"):
        experiment.check_config(c)


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _wrong_rows(path):
    np.savez(path, entities=np.array(["a"]), relations=np.array(["r"]),
             train=np.zeros((3, 3), np.int32), valid=np.zeros((1, 3), np.int32),
             test=np.zeros((1, 3), np.int32))


@pytest.mark.parametrize("fault,reason", [
    (_flip, r"BadZipFile: Bad CRC-32"),
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
     r"BadZipFile: File is not a zip file"),
    (lambda p: p.write_bytes(b""), r"(EOFError|ValueError|BadZipFile)"),
    (_wrong_rows, r"train has 3 triples, .*train\.txt 192"),
], ids=["bit-flip", "truncated", "empty", "wrong-contents"])
def test_a_corrupt_cache_is_named_and_rebuilt(tmp_path, monkeypatch, fault, reason):
    monkeypatch.setenv("JAXGRAPH_CACHE", str(tmp_path / "cache"))
    _write_raw(tmp_path / "g")
    first = kg_data.load_kg("g", data_dir=str(tmp_path))
    (cache,) = (tmp_path / "cache" / "kg").glob("g-all-v2-*.npz")
    fault(cache)
    with pytest.warns(RuntimeWarning, match=rf"KG cache {cache} is unreadable \({reason}.*"
                                            r"\); rebuilding it from .*g/train\.txt"):
        again = kg_data.load_kg("g", data_dir=str(tmp_path))
    assert again.fingerprint() == first.fingerprint() and again.num_entities == 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # rewritten: read quietly
        assert kg_data.load_kg("g", data_dir=str(tmp_path)).fingerprint() == \
            first.fingerprint()
