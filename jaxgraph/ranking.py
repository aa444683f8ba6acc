"""Filtered link-prediction ranking with PyKEEN's realistic tie handling (graph.md §4).

Each test triple (h, r, t) gives a tail query (h, r, ?) and a head query (?, r, t); every
entity is a candidate. Before ranking, the other known true answers (from the filter set,
e.g. train + valid + test) get score -inf. With s* the true entity's score:

  optimistic  = 1 + #(s > s*)
  pessimistic = #(s >= s*)                      (counts the true entity itself)
  realistic   = (optimistic + pessimistic) / 2  = 1 + #(s > s*) + #(s == s*, others) / 2

Reported: MRR, MR and Hits@{1,3,10} of the realistic rank, averaged over both sides.

Implementation: queries run in batches of B; per batch one jitted call computes the
(B, num_entities) score matrix (entity chunks via ``lax.map``; bilinear backbones use a
matmul), takes s* from that same matrix, scatters the batch's filter pairs to -inf and
counts. Filter pairs are precomputed in numpy (CSR lookup) and padded to one length per
evaluation, so an evaluation compiles once.
"""
from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FilterIndex", "filter_pairs", "score_all", "batch_ranks", "filtered_ranks",
           "rank_metrics", "evaluate", "brute_force_ranks"]


class FilterIndex(NamedTuple):
    """Known true answers per query key, CSR-style.

    Attributes:
      keys: (K,) int64 sorted unique query keys (tail side: h * R + r; head side:
        t * R + r).
      offsets: (K + 1,) int64; answers of keys[i] are values[offsets[i]:offsets[i+1]].
      values: (M,) int32 answer entity ids.
      num_relations: R.
    """
    keys: np.ndarray
    offsets: np.ndarray
    values: np.ndarray
    num_relations: int

    @classmethod
    def build(cls, triples, num_relations: int, side: str) -> "FilterIndex":
        """Index of ``triples`` (N, 3) for ``side`` ``tail`` ((h, r) -> tails) or ``head``."""
        _check_side(side)
        t = np.asarray(triples, np.int64)
        fixed, ans = (t[:, 0], t[:, 2]) if side == "tail" else (t[:, 2], t[:, 0])
        key = fixed * num_relations + t[:, 1]
        order = np.lexsort((ans, key))
        key, ans = key[order], ans[order]
        keep = np.ones(len(key), bool)            # drop duplicate triples
        keep[1:] = (key[1:] != key[:-1]) | (ans[1:] != ans[:-1])
        key, ans = key[keep], ans[keep]
        keys, starts = np.unique(key, return_index=True)
        offsets = np.append(starts, len(key)).astype(np.int64)
        return cls(keys, offsets, ans.astype(np.int32), int(num_relations))


def _check_side(side):
    if side not in ("head", "tail"):
        raise ValueError(f"unknown side {side!r}; valid: head, tail")


def filter_pairs(index: FilterIndex, queries, side: str):
    """All (query row, entity) pairs to filter: the known answers except the target.

    Args:
      index: :class:`FilterIndex` of the same ``side``.
      queries: (N, 3) int triples.
      side: ``tail`` or ``head``.

    Returns:
      (rows, cols) int64 arrays of equal length, sorted by row.
    """
    q = np.asarray(queries, np.int64)
    if len(index.keys) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    fixed, target = (q[:, 0], q[:, 2]) if side == "tail" else (q[:, 2], q[:, 0])
    key = fixed * index.num_relations + q[:, 1]
    pos = np.searchsorted(index.keys, key)
    pos_c = np.minimum(pos, len(index.keys) - 1)
    found = index.keys[pos_c] == key
    start = np.where(found, index.offsets[pos_c], 0)
    count = np.where(found, index.offsets[pos_c + 1] - index.offsets[pos_c], 0)
    rows = np.repeat(np.arange(len(q)), count)
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    cols = index.values[np.repeat(start, count) + within].astype(np.int64)
    keep = cols != target[rows]
    return rows[keep], cols[keep]


def score_all(backbone, q, table, chunk: int = 4096):
    """Scores of queries ``q`` (B, d) against every row of ``table`` (C, d) -> (B, C).

    Bilinear backbones (and tables of at most ``chunk`` rows) use one ``match_all``; the
    distance models score ``chunk`` rows per ``lax.map`` step (memory B * chunk * d).
    """
    num_rows = table.shape[0]
    if backbone.bilinear or num_rows <= chunk:
        return backbone.match_all(q, table)
    n_chunks = -(-num_rows // chunk)
    padded = jnp.pad(table, ((0, n_chunks * chunk - num_rows), (0, 0)))
    blocks = jax.lax.map(lambda c: backbone.match_all(q, c),
                         padded.reshape(n_chunks, chunk, -1))     # (n, B, chunk)
    return jnp.moveaxis(blocks, 0, 1).reshape(q.shape[0], -1)[:, :num_rows]


@functools.partial(jax.jit, static_argnames=("backbone", "side", "chunk"))
def batch_ranks(params, queries, mask_rows, mask_cols, *, backbone, side: str,
                chunk: int = 4096):
    """Filtered ranks of one batch of queries.

    Args:
      params: backbone parameters (``entity`` (V, d), ``relation``, [``core``]).
      queries: (B, 3) int32 triples.
      mask_rows, mask_cols: (P,) int32 filter pairs (row in batch, entity); padding pairs
        have row = B (dropped by the scatter).
      backbone: a :class:`jaxgraph.kge_models.Backbone`.
      side: ``tail`` (rank t among all entities for (h, r, ?)) or ``head``.
      chunk: entities scored per ``lax.map`` step (bounds memory at B * chunk * d).

    Returns:
      (B, 3) float32 (optimistic, pessimistic, realistic) ranks, 1-based.
    """
    h, r, t = queries[:, 0], queries[:, 1], queries[:, 2]
    if side == "tail":
        q, target = backbone.tail_query(params, h, r), t
    else:
        q, target = backbone.head_query(params, r, t), h
    scores = score_all(backbone, q, params["entity"], chunk)
    s_true = jnp.take_along_axis(scores, target[:, None], axis=1)
    scores = scores.at[mask_rows, mask_cols].set(-jnp.inf, mode="drop")
    gt = jnp.sum(scores > s_true, axis=1)
    ge = jnp.sum(scores >= s_true, axis=1)          # includes the target itself
    optimistic = 1.0 + gt
    pessimistic = ge.astype(jnp.float32)
    return jnp.stack([optimistic, pessimistic, 0.5 * (optimistic + pessimistic)], 1)


def filtered_ranks(backbone, params, queries, filter_triples, num_relations: int, side: str,
                   *, batch_size: int = 256, chunk: int = 4096, index=None, rank_batch=None):
    """Filtered (optimistic, pessimistic, realistic) ranks of ``queries`` on one side.

    Args:
      backbone, params: the model.
      queries: (N, 3) int triples.
      filter_triples: (M, 3) known true triples (None or empty: raw ranking).
      num_relations: R.
      side: ``tail`` or ``head``.
      batch_size: queries per jitted call; the last batch is padded.
      chunk: see :func:`batch_ranks`.
      index: a prebuilt :class:`FilterIndex` (overrides ``filter_triples``).
      rank_batch: ``rank_batch(params, queries, mask_rows, mask_cols, side=side)`` ->
        (B, 3) ranks of one padded batch (None: :func:`batch_ranks`; the entity-sharded
        ranking of :mod:`jaxgraph.kge.sharded` plugs in here).

    Returns:
      (N, 3) float64 numpy array of ranks.
    """
    _check_side(side)
    queries = np.asarray(queries, np.int32)
    n = len(queries)
    if index is None:
        ft = np.zeros((0, 3), np.int32) if filter_triples is None else filter_triples
        index = FilterIndex.build(ft, num_relations, side)
    if rank_batch is None:
        rank_batch = functools.partial(batch_ranks, backbone=backbone, chunk=chunk)
    rows, cols = filter_pairs(index, queries, side)
    n_batches = -(-n // batch_size)
    bounds = np.searchsorted(rows, np.arange(n_batches + 1) * batch_size)
    longest = int(np.max(np.diff(bounds))) if n_batches else 0
    p = max(1024, 1 << int(np.ceil(np.log2(max(longest, 1)))))   # few distinct shapes
    out = np.zeros((n, 3), np.float64)
    for i in range(n_batches):
        lo, hi = i * batch_size, min(n, (i + 1) * batch_size)
        qb = np.zeros((batch_size, 3), np.int32)
        qb[:hi - lo] = queries[lo:hi]
        mr = np.full(p, batch_size, np.int32)
        mc = np.zeros(p, np.int32)
        a, b = bounds[i], bounds[i + 1]
        mr[:b - a] = rows[a:b] - lo
        mc[:b - a] = cols[a:b]
        ranks = rank_batch(params, qb, mr, mc, side=side)
        out[lo:hi] = np.asarray(ranks)[:hi - lo]
    return out


def rank_metrics(ranks, prefix: str = "") -> dict:
    """MRR, MR, Hits@1/3/10 of a 1-D array of (realistic) ranks."""
    ranks = np.asarray(ranks, np.float64)
    return {f"{prefix}mrr": float(np.mean(1.0 / ranks)), f"{prefix}mr": float(np.mean(ranks)),
            **{f"{prefix}hits@{k}": float(np.mean(ranks <= k)) for k in (1, 3, 10)}}


def evaluate(backbone, params, triples, filter_triples, num_relations: int, *,
             batch_size: int = 256, chunk: int = 4096, indices=None,
             rank_batch=None) -> dict:
    """Filtered metrics of ``triples`` over both sides (realistic ranks).

    Args:
      indices: optional {"head": FilterIndex, "tail": FilterIndex} to reuse.
      rank_batch: see :func:`filtered_ranks`.

    Returns:
      dict with mrr, mr, hits@1, hits@3, hits@10 (both sides), the same per side with
      ``head_`` / ``tail_`` prefixes, ``optimistic_mrr``, ``pessimistic_mrr``,
      num_queries and seconds.
    """
    t0 = time.perf_counter()
    parts = {}
    for side in ("head", "tail"):
        idx = None if indices is None else indices[side]
        parts[side] = filtered_ranks(backbone, params, triples, filter_triples, num_relations,
                                     side, batch_size=batch_size, chunk=chunk, index=idx,
                                     rank_batch=rank_batch)
    both = np.concatenate([parts["head"], parts["tail"]])
    out = rank_metrics(both[:, 2])
    for side in ("head", "tail"):
        out.update(rank_metrics(parts[side][:, 2], prefix=f"{side}_"))
    out["optimistic_mrr"] = float(np.mean(1.0 / both[:, 0]))
    out["pessimistic_mrr"] = float(np.mean(1.0 / both[:, 1]))
    out["num_queries"] = int(len(both))
    out["seconds"] = time.perf_counter() - t0
    return out


def brute_force_ranks(scores, targets, filter_sets):
    """Reference ranks by plain numpy loops (for tests).

    Args:
      scores: (N, V) score matrix; targets: (N,) true entity ids; filter_sets: N sets of
        entity ids to ignore (the target is never ignored).

    Returns:
      (N, 3) (optimistic, pessimistic, realistic) ranks.
    """
    out = np.zeros((len(targets), 3))
    for i, (row, tgt) in enumerate(zip(np.asarray(scores), targets)):
        s = row[tgt]
        greater = equal = 0
        for e, v in enumerate(row):
            if e == tgt or e in filter_sets[i]:
                continue
            greater += v > s
            equal += v == s
        out[i] = (1 + greater, 1 + greater + equal, 1 + greater + equal / 2)
    return out
