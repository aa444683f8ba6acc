"""Knowledge-graph link-prediction data: WN18RR, FB15k-237 and a small generated graph.

The two benchmarks ship with the package as the canonical ConvE tarballs
(``jaxgraph/data_files/kg/``, with their licences and a ``SHA256SUMS`` file), so nothing
needs a network. :func:`load_kg` reads them (or the same files from a directory the user
names), builds sorted entity / relation vocabularies and integer triples, checks the
published counts, and caches the result as ``.npz`` (built once per source checksum).

Triples are ``(N, 3)`` int32 arrays of ``(head, relation, tail)`` ids.

Formats accepted in a user data directory ``data_dir``:
  - ``<data_dir>/<Name>.tar.gz`` (members ``train.txt``, ``valid.txt``, ``test.txt``), or
  - ``<data_dir>/<Name>/{train,valid,test}.txt``, or ``<data_dir>/{train,valid,test}.txt``;
  - optionally ``entities.dict`` / ``relations.dict`` (``id<TAB>name`` per line, the
    RotatE format) next to the text files: then ids come from those files and a name not
    in them is an error naming the file and line.

Each text line is ``head<TAB>relation<TAB>tail`` (``\\r\\n`` endings are accepted; the
FB15k-237 members use them).
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.request
from typing import NamedTuple

import numpy as np

__all__ = ["KGData", "DATASETS", "load_kg", "parse_triples", "synthetic_kg",
           "package_data_dir", "sha256", "cache_dir"]

_CONVE_COMMIT = "f3c0eb286025410fa5b4c04696c918264163d0ca"


class _Spec(NamedTuple):
    archive: str
    sha256: str
    counts: tuple        # (train, valid, test, entities, relations)


DATASETS = {
    "wn18rr": _Spec("WN18RR.tar.gz",
                    "1eb9152f804c140d163462c0d49f65e5a0b30ab5fbb375c5e3353c11a6249060",
                    (86835, 3034, 3134, 40943, 11)),
    "fb15k-237": _Spec("FB15k-237.tar.gz",
                       "311df7930f842a02979eaa7a802484a6afe62303c07f915f1e6edbc30cbe05e8",
                       (272115, 17535, 20466, 14541, 237)),
}
_ALIASES = {"wn18rr": "wn18rr", "fb15k-237": "fb15k-237", "fb15k237": "fb15k-237",
            "fb237": "fb15k-237"}
SPLITS = ("train", "valid", "test")


class KGData(NamedTuple):
    """A link-prediction data set.

    Attributes:
      name: data set name.
      entities: entity names, index = id.
      relations: relation names, index = id.
      train, valid, test: (N, 3) int32 (head, relation, tail) ids.
    """
    name: str
    entities: tuple
    relations: tuple
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return getattr(self, name)

    def all_triples(self, splits=SPLITS) -> np.ndarray:
        """The union (concatenation) of ``splits``, e.g. the filter set."""
        return np.concatenate([self.split(s) for s in splits], axis=0)


def package_data_dir() -> str:
    """The folder holding the bundled tarballs, licences and SHA256SUMS."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_files", "kg")


def cache_dir() -> str:
    """``$JAXGRAPH_CACHE`` or ``~/.cache/jaxgraph``."""
    return os.environ.get("JAXGRAPH_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "jaxgraph"))


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_triples(text: str, source: str) -> list:
    """Splits ``head<TAB>relation<TAB>tail`` lines; blank lines are skipped.

    Raises:
      ValueError: a line without exactly 3 non-empty tab-separated fields; the message
        names ``source`` and the 1-based line number.
    """
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3 or not all(f.strip() for f in fields):
            raise ValueError(f"{source}:{i}: expected 3 tab-separated fields "
                             f"(head, relation, tail), got {len(fields)}: {line[:80]!r}")
        out.append(tuple(f.strip() for f in fields))
    return out


def _read_dict(path: str) -> dict:
    names = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f.read().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip().isdigit():
                raise ValueError(f"{path}:{i}: expected 'id<TAB>name', got {line[:80]!r}")
            names[fields[1].strip()] = int(fields[0])
    ids = sorted(names.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"{path}: ids must be 0..{len(ids) - 1} without gaps")
    return names


def _read_source(name: str, data_dir: str | None, download: bool):
    """Returns ({split: (text, source)}, dict_dir or None, checksum of the inputs)."""
    spec = DATASETS.get(name)
    dirs = [data_dir] if data_dir else [package_data_dir()]
    archive = spec.archive if spec else f"{name}.tar.gz"
    for d in dirs:
        tar = os.path.join(d, archive)
        if os.path.isfile(tar):
            if spec is not None and d == package_data_dir() and sha256(tar) != spec.sha256:
                raise ValueError(f"{tar}: SHA-256 mismatch (expected {spec.sha256})")
            texts = {}
            with tarfile.open(tar, "r:gz") as a:
                for s in SPLITS:
                    try:
                        member = a.extractfile(f"{s}.txt")
                    except KeyError:
                        member = None
                    if member is None:
                        raise ValueError(f"{tar}: no member {s}.txt")
                    texts[s] = (member.read().decode("utf-8"), f"{tar}:{s}.txt")
            return texts, None, sha256(tar)
        for folder in (os.path.join(d, archive[:-7]), os.path.join(d, name), d):
            if all(os.path.isfile(os.path.join(folder, f"{s}.txt")) for s in SPLITS):
                texts, h = {}, hashlib.sha256()
                for s in SPLITS:
                    p = os.path.join(folder, f"{s}.txt")
                    with open(p, "rb") as f:
                        raw = f.read()
                    h.update(raw)
                    texts[s] = (raw.decode("utf-8"), p)
                dict_dir = folder if os.path.isfile(os.path.join(folder, "entities.dict")) \
                    else None
                if dict_dir:
                    for f in ("entities.dict", "relations.dict"):
                        with open(os.path.join(folder, f), "rb") as fh:
                            h.update(fh.read())
                return texts, dict_dir, h.hexdigest()
    if download and spec is not None:
        target = os.path.join(cache_dir(), "kg", spec.archive)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        url = (f"https://github.com/TimDettmers/ConvE/raw/{_CONVE_COMMIT}/{spec.archive}")
        urllib.request.urlretrieve(url, target + ".part")
        if sha256(target + ".part") != spec.sha256:
            raise ValueError(f"downloaded {url} has the wrong SHA-256")
        os.replace(target + ".part", target)
        return _read_source(name, os.path.dirname(target), download=False)
    where = data_dir or package_data_dir()
    raise FileNotFoundError(
        f"knowledge graph {name!r} not found in {where!r}: expected {archive} or a folder "
        f"with train.txt, valid.txt, test.txt. The ConvE tarballs are at "
        f"https://github.com/TimDettmers/ConvE (commit {_CONVE_COMMIT[:8]}); pass "
        f"data_dir=<folder holding them> or download=True")


def _build(name, texts, dict_dir, vocabulary):
    rows = {s: parse_triples(*texts[s]) for s in SPLITS}
    if dict_dir is not None:
        ent = _read_dict(os.path.join(dict_dir, "entities.dict"))
        rel = _read_dict(os.path.join(dict_dir, "relations.dict"))
        vocab_splits = ()
    else:
        vocab_splits = SPLITS if vocabulary == "all" else ("train",)
        ents = sorted({x for s in vocab_splits for h, _, t in rows[s] for x in (h, t)})
        rels = sorted({r for s in vocab_splits for _, r, _ in rows[s]})
        ent = {e: i for i, e in enumerate(ents)}
        rel = {r: i for i, r in enumerate(rels)}
    arrays = {}
    for s in SPLITS:
        text, source = texts[s]
        out = np.empty((len(rows[s]), 3), np.int32)
        for i, (h, r, t) in enumerate(rows[s]):
            try:
                out[i] = (ent[h], rel[r], ent[t])
            except KeyError:
                kind, bad = next((k, x) for k, x, table in (
                    ("entity", h, ent), ("relation", r, rel), ("entity", t, ent))
                    if x not in table)
                known = "the id dictionaries" if dict_dir else "the train split"
                raise ValueError(f"{source}:{_line_of(text, i)}: unknown {kind} {bad!r} "
                                 f"(not in {known}; use vocabulary='all' to build ids over "
                                 "all splits)") from None
        arrays[s] = out
    names_e = [None] * len(ent)
    for k, v in ent.items():
        names_e[v] = k
    names_r = [None] * len(rel)
    for k, v in rel.items():
        names_r[v] = k
    return KGData(name, tuple(names_e), tuple(names_r), arrays["train"], arrays["valid"],
                  arrays["test"])


def _line_of(text: str, row: int) -> int:
    """1-based line number of the ``row``-th non-blank line."""
    n = -1
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            n += 1
            if n == row:
                return i
    return -1


def load_kg(name: str, *, data_dir: str | None = None, vocabulary: str = "all",
            download: bool = False, use_cache: bool = True) -> KGData:
    """Loads a knowledge graph (built once, then read from the ``.npz`` cache).

    Args:
      name: ``wn18rr``, ``fb15k-237`` (bundled) or the name of a data set in ``data_dir``.
      data_dir: a folder holding ``<Name>.tar.gz`` or the text files (see module doc);
        None: the bundled copies.
      vocabulary: ``all`` (ids over train + valid + test, sorted names: the data README's
        convention) or ``train`` (an entity or relation seen only in valid/test is an
        error naming the file and line).
      download: fetch the ConvE tarball into :func:`cache_dir` when it is not found
        (needs a network; the SHA-256 is checked).
      use_cache: read/write ``<cache_dir>/kg/<name>-<vocabulary>-<sha>.npz``.

    Raises:
      ValueError: unknown ``vocabulary``, malformed files, counts that differ from the
        published ones for the bundled data sets.
      FileNotFoundError: the data set is not found (the message says how to get it).
    """
    if vocabulary not in ("all", "train"):
        raise ValueError(f"unknown vocabulary {vocabulary!r}; valid: all, train")
    key = _ALIASES.get(name.strip().lower().replace("_", "-"), name)
    if key == "synthetic":
        return synthetic_kg()
    if data_dir is None and key not in DATASETS:
        raise ValueError(f"unknown knowledge graph {name!r}; bundled: "
                         f"{', '.join(DATASETS)}, synthetic (or pass data_dir=...)")
    texts, dict_dir, digest = _read_source(key, data_dir, download)
    cache = os.path.join(cache_dir(), "kg", f"{key}-{vocabulary}-{digest[:16]}.npz")
    if use_cache and os.path.isfile(cache):
        z = np.load(cache, allow_pickle=False)
        data = KGData(key, tuple(z["entities"].tolist()), tuple(z["relations"].tolist()),
                      z["train"], z["valid"], z["test"])
    else:
        data = _build(key, texts, dict_dir, vocabulary)
        if use_cache:
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            buf = io.BytesIO()
            np.savez(buf, entities=np.array(data.entities), relations=np.array(
                data.relations), train=data.train, valid=data.valid, test=data.test)
            tmp = f"{cache}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
            os.replace(tmp, cache)
    spec = DATASETS.get(key)
    if spec is not None and data_dir is None and vocabulary == "all":
        got = (len(data.train), len(data.valid), len(data.test), data.num_entities,
               data.num_relations)
        if got != spec.counts:
            raise ValueError(f"{key}: counts (train, valid, test, entities, relations) = "
                             f"{got}, expected {spec.counts}")
    return data


def synthetic_kg(num_entities: int = 40, num_relations: int = 4, *, seed: int = 0,
                 valid_fraction: float = 0.1, test_fraction: float = 0.1) -> KGData:
    """A small generated graph with learnable structure (for tests and demos).

    Relation 2j maps entity e to ``perm_j[e]`` (a random permutation) and relation 2j + 1
    is its inverse, so every (h, r) has exactly one tail and a held-out triple can be
    inferred from its inverse in train. All ``num_entities * num_relations`` triples are
    shuffled and split. Names are ``e<i>`` and ``r<j>``.
    """
    rng = np.random.default_rng(seed)
    trip = []
    for r in range(0, num_relations, 2):
        perm = rng.permutation(num_entities)
        trip.append(np.stack([np.arange(num_entities), np.full(num_entities, r), perm], 1))
        if r + 1 < num_relations:
            trip.append(np.stack([perm, np.full(num_entities, r + 1),
                                  np.arange(num_entities)], 1))
    trip = np.concatenate(trip).astype(np.int32)
    trip = trip[rng.permutation(len(trip))]
    n_va = int(round(valid_fraction * len(trip)))
    n_te = int(round(test_fraction * len(trip)))
    return KGData("synthetic", tuple(f"e{i}" for i in range(num_entities)),
                  tuple(f"r{j}" for j in range(num_relations)),
                  trip[n_va + n_te:], trip[:n_va], trip[n_va:n_va + n_te])
