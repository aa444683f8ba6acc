"""Every use of Jraph in jaxgraph: ``GraphsTuple`` building, padding, message passing.

Graphs are ``jraph.GraphsTuple`` (nodes = features, both directions of an undirected edge
listed, ``senders[e] -> receivers[e]``). Message passing is written directly on
``jax.ops.segment_sum`` / ``jraph.segment_softmax`` with a *static* ``num_segments`` (the
padded node count), so a jitted step compiles once per padded size. jraph 0.0.6 helpers that
no longer work with current JAX (``zero_out_padding``, ``get_fully_connected_graph``: they
call the removed ``jax.tree_map`` / ``jax.tree_leaves``) are not used.

Node features may be dense ``(N, F)`` arrays or :class:`SparseFeatures` (bag-of-words rows
are ~1% dense; a sparse first layer is ~100x cheaper on Planetoid).

Padding (:func:`pad_graph`) appends padding nodes with zero features and padding edges that
join the first padding node to itself, as ``jraph.pad_with_graphs`` does, so degrees and
messages of real nodes are unchanged; :func:`node_mask` marks the real nodes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

__all__ = ["GraphsTuple", "SparseFeatures", "sparse_features", "build_graph",
           "add_self_loops", "pad_graph", "pad_nodes", "padded_size", "node_mask",
           "edge_mask", "num_nodes", "linear", "feature_dropout", "degrees",
           "gcn_aggregate", "mean_aggregate", "attention_aggregate", "dense_adjacency"]

GraphsTuple = jraph.GraphsTuple


@struct.dataclass
class SparseFeatures:
    """A sparse (N, F) matrix in COO form (a pytree; ``shape`` is static).

    Attributes:
      rows, cols: (nnz,) int32 row / column ids.
      values: (nnz,) float values.
      shape: (N, F), static.
    """
    rows: jnp.ndarray
    cols: jnp.ndarray
    values: jnp.ndarray
    shape: tuple = struct.field(pytree_node=False)

    def todense(self):
        """(N, F) dense array."""
        return jnp.zeros(self.shape, self.values.dtype).at[self.rows, self.cols].add(
            self.values)


def sparse_features(matrix, dtype=np.float32) -> SparseFeatures:
    """:class:`SparseFeatures` from a scipy sparse matrix or a dense (N, F) array."""
    import scipy.sparse as sp
    coo = sp.coo_matrix(matrix)
    return SparseFeatures(rows=np.asarray(coo.row, np.int32), cols=np.asarray(coo.col, np.int32),
                          values=np.asarray(coo.data, dtype), shape=tuple(coo.shape))


def add_self_loops(senders, receivers, n: int):
    """Appends one (i, i) edge per node to (E,) int arrays; returns (E + n,) arrays."""
    loop = np.arange(n, dtype=np.int32)
    return (np.concatenate([np.asarray(senders, np.int32), loop]),
            np.concatenate([np.asarray(receivers, np.int32), loop]))


def build_graph(features, senders, receivers, *, self_loops: bool = False) -> GraphsTuple:
    """One graph as a ``GraphsTuple`` (host arrays; no globals, no edge features).

    Args:
      features: (N, F) dense array or :class:`SparseFeatures` (``nodes``).
      senders, receivers: (E,) int edge endpoints, ``senders[e] -> receivers[e]``.
      self_loops: append an (i, i) edge for every node.
    """
    n = int(features.shape[0])
    senders = np.asarray(senders, np.int32)
    receivers = np.asarray(receivers, np.int32)
    if senders.shape != receivers.shape or senders.ndim != 1:
        raise ValueError(f"senders and receivers must be equal-length 1-d arrays, got "
                         f"{senders.shape} and {receivers.shape}")
    if senders.size and (min(senders.min(), receivers.min()) < 0
                         or max(senders.max(), receivers.max()) >= n):
        raise ValueError(f"edge endpoints must lie in [0, {n})")
    if self_loops:
        senders, receivers = add_self_loops(senders, receivers, n)
    return GraphsTuple(nodes=features, edges=None, senders=senders, receivers=receivers,
                       globals=None, n_node=np.array([n], np.int32),
                       n_edge=np.array([senders.size], np.int32))


def padded_size(n: int, multiple: int = 64) -> int:
    """Smallest multiple of ``multiple`` strictly greater than ``n`` (room for padding)."""
    return (int(n) // multiple + 1) * multiple


def pad_nodes(array, n_node: int, value=0):
    """Pads a node-level host array (N, ...) to (n_node, ...) with ``value``."""
    array = np.asarray(array)
    if array.shape[0] > n_node:
        raise ValueError(f"cannot pad {array.shape[0]} rows to {n_node}")
    pad = [(0, n_node - array.shape[0])] + [(0, 0)] * (array.ndim - 1)
    return np.pad(array, pad, constant_values=value)


def pad_graph(graph: GraphsTuple, n_node: int, n_edge: int) -> GraphsTuple:
    """Pads a single graph to exactly ``n_node`` nodes and ``n_edge`` edges.

    Adds one padding graph (``n_node``/``n_edge`` get a second entry) whose nodes have zero
    features and whose edges all join the first padding node to itself (as
    ``jraph.pad_with_graphs``), so real nodes keep their neighbourhoods.

    Args:
      graph: a graph from :func:`build_graph` (one graph, host arrays).
      n_node: total node budget, > the real node count.
      n_edge: total edge budget, >= the real edge count.
    """
    n_real = int(np.sum(graph.n_node))
    e_real = int(np.sum(graph.n_edge))
    if n_node <= n_real or n_edge < e_real:
        raise ValueError(f"padding budget (n_node={n_node}, n_edge={n_edge}) must exceed the "
                         f"graph ({n_real} nodes, needs n_node > {n_real}; {e_real} edges)")
    nodes = graph.nodes
    if isinstance(nodes, SparseFeatures):
        nodes = nodes.replace(shape=(n_node, nodes.shape[1]))
    elif nodes is not None:
        nodes = pad_nodes(nodes, n_node)
    fill = np.full(n_edge - e_real, n_real, np.int32)
    return GraphsTuple(
        nodes=nodes, edges=None, globals=None,
        senders=np.concatenate([np.asarray(graph.senders, np.int32), fill]),
        receivers=np.concatenate([np.asarray(graph.receivers, np.int32), fill]),
        n_node=np.concatenate([np.asarray(graph.n_node, np.int32), [n_node - n_real]]
                              ).astype(np.int32),
        n_edge=np.concatenate([np.asarray(graph.n_edge, np.int32), [n_edge - e_real]]
                              ).astype(np.int32))


def num_nodes(graph: GraphsTuple) -> int:
    """Static (padded) node count, from the shape of ``graph.nodes``."""
    return int(graph.nodes.shape[0])


def node_mask(graph: GraphsTuple):
    """(N,) bool, True on real nodes (all but the last graph when padded)."""
    if graph.n_node.shape[0] == 1:
        return jnp.ones(num_nodes(graph), bool)
    return jnp.arange(num_nodes(graph)) < jnp.sum(graph.n_node[:-1])


def edge_mask(graph: GraphsTuple):
    """(E,) bool, True on real edges."""
    if graph.n_edge.shape[0] == 1:
        return jnp.ones(graph.senders.shape[0], bool)
    return jnp.arange(graph.senders.shape[0]) < jnp.sum(graph.n_edge[:-1])


def linear(x, kernel):
    """``x @ kernel`` for a dense (N, F) array or :class:`SparseFeatures`; (N, F_out)."""
    if isinstance(x, SparseFeatures):
        msg = x.values[:, None].astype(kernel.dtype) * kernel[x.cols]
        return jax.ops.segment_sum(msg, x.rows, num_segments=x.shape[0])
    return x @ kernel


def feature_dropout(x, rate: float, rng, deterministic: bool):
    """Inverted dropout on dense features or on the stored values of sparse features
    (zeros stay zero either way, so both are the same distribution)."""
    if deterministic or rate == 0.0:
        return x
    values = x.values if isinstance(x, SparseFeatures) else x
    keep = jax.random.bernoulli(rng, 1.0 - rate, values.shape)
    values = jnp.where(keep, values / (1.0 - rate), 0.0).astype(values.dtype)
    return x.replace(values=values) if isinstance(x, SparseFeatures) else values


def degrees(graph: GraphsTuple):
    """(out_degree (N,), in_degree (N,)) as float32 edge counts (padding edges included:
    they only touch the padding node)."""
    n = num_nodes(graph)
    ones = jnp.ones(graph.senders.shape[0], jnp.float32)
    return (jax.ops.segment_sum(ones, graph.senders, n),
            jax.ops.segment_sum(ones, graph.receivers, n))


def gcn_aggregate(graph: GraphsTuple, h):
    """Symmetric-normalised sum: out_i = sum_{j -> i} h_j / sqrt(max(d_out(j),1) max(d_in(i),1)).

    DGL ``GraphConv(norm='both')`` (graph.md §5.1); with self-loops in ``graph`` this is
    Kipf's D^-1/2 (A + I) D^-1/2 h. h: (N, ...) -> (N, ...).
    """
    n = num_nodes(graph)
    d_out, d_in = degrees(graph)
    shape = (-1,) + (1,) * (h.ndim - 1)
    src = (jax.lax.rsqrt(jnp.maximum(d_out, 1.0)).astype(h.dtype)).reshape(shape)
    dst = (jax.lax.rsqrt(jnp.maximum(d_in, 1.0)).astype(h.dtype)).reshape(shape)
    msg = (h * src)[graph.senders]
    return jax.ops.segment_sum(msg, graph.receivers, n) * dst


def mean_aggregate(graph: GraphsTuple, h):
    """Mean over in-neighbours: out_i = mean_{j -> i} h_j (0 without in-edges). (N, ...)."""
    n = num_nodes(graph)
    _, d_in = degrees(graph)
    total = jax.ops.segment_sum(h[graph.senders], graph.receivers, n)
    return total / jnp.maximum(d_in, 1.0).astype(h.dtype).reshape((-1,) + (1,) * (h.ndim - 1))


def attention_aggregate(graph: GraphsTuple, h, score_src, score_dst, *,
                        negative_slope: float = 0.2, attn_dropout: float = 0.0, rng=None,
                        deterministic: bool = True):
    """GAT attention: out_i = sum_{j -> i} softmax_j(LeakyReLU(s_j + t_i)) h_j, per head.

    Args:
      h: (N, H, F) per-head projected features.
      score_src, score_dst: (N, H) per-node attention scores (a_l . h_j and a_r . h_i).
      attn_dropout: dropout rate on the normalised attention coefficients.

    Returns:
      (N, H, F).
    """
    n = num_nodes(graph)
    logits = jax.nn.leaky_relu(score_src[graph.senders] + score_dst[graph.receivers],
                               negative_slope)
    alpha = jraph.segment_softmax(logits, graph.receivers, n)
    if not deterministic and attn_dropout > 0.0:
        keep = jax.random.bernoulli(rng, 1.0 - attn_dropout, alpha.shape)
        alpha = jnp.where(keep, alpha / (1.0 - attn_dropout), 0.0)
    return jax.ops.segment_sum(alpha[..., None] * h[graph.senders], graph.receivers, n)


def dense_adjacency(graph: GraphsTuple) -> np.ndarray:
    """(N, N) host array A with A[receiver, sender] = number of such edges (for tests)."""
    n = num_nodes(graph)
    a = np.zeros((n, n))
    np.add.at(a, (np.asarray(graph.receivers), np.asarray(graph.senders)), 1.0)
    return a
