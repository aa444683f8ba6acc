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
FB15k-237 members use them). Files must be UTF-8; a byte-order mark (BOM) is dropped. What
is refused, with a ValueError naming the file (and line where there is one): text in
another encoding (Latin-1, UTF-16), binary data, a line without three fields, an empty
split, a name missing from the id dictionaries.

Entities or relations of valid / test that do not occur in train (``unseen``):

  ``keep``    (default) keep those triples; they need ids, so ``vocabulary="all"``
              (with ``vocabulary="train"`` they are an error naming file and line);
  ``filter``  drop them with a warning giving the count per split (PyKEEN's behaviour);
  ``error``   refuse them, naming the first one (file, line, name) and the counts.

``vocabulary`` only decides which splits give ids: with ``all`` + ``filter`` an entity
seen only in a dropped triple keeps its id (the tables are as large as with ``keep``, so
runs compare; it is still a ranking candidate); with ``train`` + ``filter`` the ids are
the train names only (PyKEEN's setting).

The ``.npz`` cache holds the parsed splits before ``unseen`` is applied; a cache that
cannot be read (truncated, bit flip, wrong contents) is named in a warning and rebuilt
from the text files.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.request
import warnings
import zipfile
from typing import NamedTuple

import numpy as np

from jaxinfra.digests import file_sha256

__all__ = ["KGData", "DATASETS", "UNSEEN", "VOCABULARIES", "load_kg", "parse_triples",
           "decode_text", "synthetic_kg", "package_data_dir", "sha256", "cache_dir"]

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
VOCABULARIES = ("all", "train")
UNSEEN = ("keep", "filter", "error")
_CACHE_FORMAT = "v2"     # v2: BOM stripped, unseen names stored as -1 (vocabulary=train)


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

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the names and the triples: equal iff the data are equal."""
        h = hashlib.sha256()
        for names in (self.entities, self.relations):
            h.update("\n".join(names).encode("utf-8") + b"\0")
        for s in SPLITS:
            h.update(np.ascontiguousarray(self.split(s), "<i4").tobytes() + b"\0")
        return h.hexdigest()


def package_data_dir() -> str:
    """The folder holding the bundled tarballs, licences and SHA256SUMS."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_files", "kg")


def cache_dir() -> str:
    """``$JAXGRAPH_CACHE`` or ``~/.cache/jaxgraph``."""
    return os.environ.get("JAXGRAPH_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "jaxgraph"))


sha256 = file_sha256          # kept: the name other modules and tests use


def _control_fraction(raw: bytes) -> float:
    """Fraction of bytes that never occur in text (C0 controls other than tab, newlines,
    form feed, and DEL)."""
    if not raw:
        return 0.0
    bad = sum(raw.count(bytes([b])) for b in (*range(0, 9), *range(14, 32), 127))
    return bad / len(raw)


def decode_text(raw: bytes, source: str) -> str:
    """The UTF-8 text of a data file, without a leading byte-order mark.

    Raises:
      ValueError: binary data (a NUL byte, control bytes, a gzip header), UTF-16 text, or
        bytes that are not UTF-8 (e.g. Latin-1); the message names ``source``, the line
        and the offending byte, and what to do.
    """
    head = raw[:8192]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"{source}: UTF-16 text; save it as UTF-8 (e.g. iconv -f utf-16 "
                         "-t utf-8)")
    if head.startswith(b"\x1f\x8b"):
        raise ValueError(f"{source}: gzip-compressed binary data, not a text file of "
                         "head<TAB>relation<TAB>tail lines; decompress it first")
    if b"\x00" in head or _control_fraction(head) > 0.05:
        at = head.find(b"\x00")
        where = f" (NUL byte at offset {at})" if at >= 0 else ""
        raise ValueError(f"{source}: binary data{where}, not a UTF-8 text file of "
                         "head<TAB>relation<TAB>tail lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{source}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                         f"offset {err.start}; Latin-1 or cp1252?); save it as UTF-8 (e.g. "
                         "iconv -f latin1 -t utf-8)") from None
    return text[1:] if text.startswith("\ufeff") else text


def parse_triples(text: str, source: str) -> list:
    """Splits ``head<TAB>relation<TAB>tail`` lines; blank lines are skipped, and so is a
    byte-order mark at the start of a line (files concatenated with theirs).

    Raises:
      ValueError: a line without exactly 3 non-empty tab-separated fields; the message
        names ``source`` and the 1-based line number.
    """
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.lstrip("\ufeff")
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
    with open(path, "rb") as f:
        text = decode_text(f.read(), path)
        for i, line in enumerate(text.splitlines(), start=1):
            line = line.lstrip("\ufeff")
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
                    source = f"{tar}:{s}.txt"
                    texts[s] = (decode_text(member.read(), source), source)
            return texts, None, sha256(tar)
        for folder in (os.path.join(d, archive[:-7]), os.path.join(d, name), d):
            if all(os.path.isfile(os.path.join(folder, f"{s}.txt")) for s in SPLITS):
                texts, h = {}, hashlib.sha256()
                for s in SPLITS:
                    p = os.path.join(folder, f"{s}.txt")
                    with open(p, "rb") as f:
                        raw = f.read()
                    h.update(raw)
                    texts[s] = (decode_text(raw, p), p)
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
    """Parses the splits and maps names to ids; a name outside the vocabulary
    (``vocabulary="train"``) gets id -1 (:func:`_apply_unseen` decides about it)."""
    rows = {s: parse_triples(*texts[s]) for s in SPLITS}
    for s in SPLITS:
        if not rows[s]:
            raise ValueError(f"{texts[s][1]}: no triples (the {s} split is empty); "
                             "train.txt, valid.txt and test.txt each need at least one "
                             "head<TAB>relation<TAB>tail line")
    if dict_dir is not None:
        ent = _read_dict(os.path.join(dict_dir, "entities.dict"))
        rel = _read_dict(os.path.join(dict_dir, "relations.dict"))
    else:
        vocab_splits = SPLITS if vocabulary == "all" else ("train",)
        ents = sorted({x for s in vocab_splits for h, _, t in rows[s] for x in (h, t)})
        rels = sorted({r for s in vocab_splits for _, r, _ in rows[s]})
        ent = {e: i for i, e in enumerate(ents)}
        rel = {r: i for i, r in enumerate(rels)}
    arrays = {}
    for s in SPLITS:
        text, source = texts[s]
        out = np.array([(ent.get(h, -1), rel.get(r, -1), ent.get(t, -1))
                        for h, r, t in rows[s]], np.int32).reshape(-1, 3)
        if dict_dir is not None and (out < 0).any():
            i = int(np.flatnonzero((out < 0).any(axis=1))[0])
            h, r, t = rows[s][i]
            kind, bad = (("entity", h) if h not in ent else ("relation", r) if r not in rel
                         else ("entity", t))
            raise ValueError(f"{source}:{_line_of(text, i)}: unknown {kind} {bad!r} (not in "
                             f"the id dictionaries entities.dict / relations.dict of "
                             f"{dict_dir})")
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
        if line.lstrip("\ufeff").strip():
            n += 1
            if n == row:
                return i
    return -1


def _apply_unseen(data: KGData, texts: dict, unseen: str) -> KGData:
    """Keeps, drops (with a warning) or refuses the valid / test triples whose entity or
    relation does not occur in train (see the module doc)."""
    ents = np.unique(data.train[:, [0, 2]])
    rels = np.unique(data.train[:, 1])
    bad = {s: ~(np.isin(data.split(s)[:, 0], ents) & np.isin(data.split(s)[:, 1], rels)
                & np.isin(data.split(s)[:, 2], ents)) for s in ("valid", "test")}
    if not any(b.any() for b in bad.values()):
        return data
    if unseen == "filter":
        kept = {}
        for s, b in bad.items():
            source, n = texts[s][1], int(b.sum())
            if n == len(b):
                raise ValueError(f"{source}: all {n} {s} triples have an entity or relation "
                                 "that does not occur in the train split; unseen='filter' "
                                 "would leave the split empty")
            if n:
                warnings.warn(f"{source}: dropped {n} of {len(b)} {s} triples with an entity "
                              "or relation that does not occur in the train split "
                              "(unseen='filter')", UserWarning, stacklevel=3)
            kept[s] = data.split(s)[~b]
        return data._replace(**kept)
    counts = ", ".join(f"{s}: {int(b.sum())} of {len(b)}" for s, b in bad.items())
    for s in ("valid", "test"):
        rows = bad[s] if unseen == "error" else (data.split(s) < 0).any(axis=1)
        if not rows.any():
            continue
        i = int(np.flatnonzero(rows)[0])
        text, source = texts[s]
        line = _line_of(text, i)
        h, r, t = (f.strip() for f in
                   text.splitlines()[line - 1].lstrip("\ufeff").split("\t"))
        hi, ri, _ = data.split(s)[i]
        kind, name = (("entity", h) if hi not in ents else ("relation", r) if ri not in rels
                      else ("entity", t))
        if unseen == "keep":       # vocabulary="train": such a name has no id
            raise ValueError(f"{source}:{line}: unknown {kind} {name!r} (not in the train "
                             "split; use vocabulary='all' to build ids over all splits, or "
                             "unseen='filter' to drop such triples)")
        raise ValueError(f"{source}:{line}: {kind} {name!r} does not occur in the train "
                         f"split (unseen='error'; triples with an unseen entity or relation: "
                         f"{counts}); unseen='filter' drops them, unseen='keep' keeps them")
    return data


def _count_rows(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.lstrip("\ufeff").strip())


def _read_cache(path: str, key: str, texts: dict) -> KGData | None:
    """The cached data, or None (with a warning naming the file) when it is unreadable or
    does not match the text files."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = KGData(key, tuple(str(x) for x in z["entities"].tolist()),
                          tuple(str(x) for x in z["relations"].tolist()),
                          *(np.asarray(z[s]) for s in SPLITS))
        problem = None
        for s in SPLITS:
            a = data.split(s)
            if a.ndim != 2 or a.shape[1:] != (3,) or a.dtype != np.int32:
                problem = f"{s} has shape {a.shape} and dtype {a.dtype}, not (N, 3) int32"
            elif len(a) != _count_rows(texts[s][0]):
                problem = f"{s} has {len(a)} triples, {texts[s][1]} {_count_rows(texts[s][0])}"
            elif a.size and (a.min() < (0 if s == "train" else -1)
                             or a[:, [0, 2]].max() >= data.num_entities
                             or a[:, 1].max() >= data.num_relations):
                problem = f"{s} holds ids outside the vocabulary"
            if problem:
                break
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        problem = f"{type(err).__name__}: {first}"
    if problem is None:
        return data
    warnings.warn(f"KG cache {path} is unreadable ({problem}); rebuilding it from "
                  f"{', '.join(source for _, source in texts.values())}", RuntimeWarning,
                  stacklevel=3)
    return None


def _write_cache(path: str, data: KGData) -> None:
    buf = io.BytesIO()
    np.savez(buf, entities=np.array(data.entities), relations=np.array(data.relations),
             train=data.train, valid=data.valid, test=data.test)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)
    except OSError as err:
        warnings.warn(f"could not write the KG cache {path} ({err}); the data are rebuilt "
                      "from the text files next time", RuntimeWarning, stacklevel=3)


def load_kg(name: str, *, data_dir: str | None = None, vocabulary: str = "all",
            unseen: str = "keep", download: bool = False, use_cache: bool = True) -> KGData:
    """Loads a knowledge graph (built once, then read from the ``.npz`` cache).

    Args:
      name: ``wn18rr``, ``fb15k-237`` (bundled) or the name of a data set in ``data_dir``.
      data_dir: a folder holding ``<Name>.tar.gz`` or the text files (see module doc);
        None: the bundled copies.
      vocabulary: ``all`` (ids over train + valid + test, sorted names: the data README's
        convention) or ``train`` (ids over the train names only).
      unseen: what happens to valid / test triples with an entity or relation that does
        not occur in train: ``keep`` (they need ``vocabulary="all"``; with ``train`` they
        are an error naming the file and line), ``filter`` (dropped, with a warning giving
        the count per split) or ``error`` (see the module doc).
      download: fetch the ConvE tarball into :func:`cache_dir` when it is not found
        (needs a network; the SHA-256 is checked).
      use_cache: read/write ``<cache_dir>/kg/<name>-<vocabulary>-v2-<sha>.npz``.

    Raises:
      ValueError: unknown ``vocabulary`` or ``unseen``, files that are not UTF-8 text,
        malformed lines, an empty split, unseen names (see ``unseen``), counts that differ
        from the published ones for the bundled data sets.
      FileNotFoundError: the data set is not found (the message says how to get it).
    """
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; valid: {', '.join(VOCABULARIES)}")
    if unseen not in UNSEEN:
        raise ValueError(f"unknown unseen {unseen!r}; valid: {', '.join(UNSEEN)}")
    key = _ALIASES.get(name.strip().lower().replace("_", "-"), name)
    if key == "synthetic":
        return synthetic_kg()
    if data_dir is None and key not in DATASETS:
        raise ValueError(f"unknown knowledge graph {name!r}; bundled: "
                         f"{', '.join(DATASETS)}, synthetic (or pass data_dir=...)")
    texts, dict_dir, digest = _read_source(key, data_dir, download)
    cache = os.path.join(cache_dir(), "kg",
                         f"{key}-{vocabulary}-{_CACHE_FORMAT}-{digest[:16]}.npz")
    data = _read_cache(cache, key, texts) if use_cache and os.path.isfile(cache) else None
    if data is None:
        data = _build(key, texts, dict_dir, vocabulary)
        if use_cache:
            _write_cache(cache, data)
    spec = DATASETS.get(key)
    if spec is not None and data_dir is None and vocabulary == "all":
        got = (len(data.train), len(data.valid), len(data.test), data.num_entities,
               data.num_relations)
        if got != spec.counts:
            raise ValueError(f"{key}: counts (train, valid, test, entities, relations) = "
                             f"{got}, expected {spec.counts}")
    return _apply_unseen(data, texts, unseen)


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
