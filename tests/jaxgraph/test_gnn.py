"""GNN layers and models against dense-adjacency computations; padding; sparse features.
(The single-GNN trainer end to end: test_train_faults.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import gnn, graphs


def small_graph(seed=0, n=7, f=5):
    """A directed multigraph-free graph with an isolated node (index n-1)."""
    rng = np.random.default_rng(seed)
    pairs = {(int(u), int(v)) for u, v in rng.integers(0, n - 1, size=(14, 2)) if u != v}
    s, r = np.array(sorted(pairs)).T
    x = rng.normal(size=(n, f)) * (rng.random((n, f)) < 0.5)
    return graphs.build_graph(x, s, r), x


def dense_gcn_operator(a):
    """D_in^-1/2 A D_out^-1/2 with degrees clipped at 1 (a[receiver, sender])."""
    d_in = np.maximum(a.sum(1), 1)
    d_out = np.maximum(a.sum(0), 1)
    return a / np.sqrt(d_in)[:, None] / np.sqrt(d_out)[None, :]


def test_gcn_and_mean_aggregation_match_dense():
    for self_loops in (False, True):
        g0, x = small_graph()
        g = graphs.build_graph(x, g0.senders, g0.receivers, self_loops=self_loops)
        a = graphs.dense_adjacency(g)
        h = np.random.default_rng(1).normal(size=(x.shape[0], 3))
        np.testing.assert_allclose(graphs.gcn_aggregate(g, jnp.asarray(h)),
                                   dense_gcn_operator(a) @ h, atol=1e-12)
        mean = (a @ h) / np.maximum(a.sum(1), 1)[:, None]
        np.testing.assert_allclose(graphs.mean_aggregate(g, jnp.asarray(h)), mean, atol=1e-12)
    # The isolated node receives nothing without self-loops.
    assert np.all(np.asarray(graphs.gcn_aggregate(g0, jnp.ones((7, 2))))[-1] == 0)


def test_attention_matches_dense_softmax():
    g, x = small_graph(seed=2)
    g = graphs.build_graph(x, g.senders, g.receivers, self_loops=True)
    rng = np.random.default_rng(3)
    n, heads, f = x.shape[0], 2, 3
    h = rng.normal(size=(n, heads, f))
    s, t = rng.normal(size=(n, heads)), rng.normal(size=(n, heads))
    out = np.asarray(graphs.attention_aggregate(g, jnp.asarray(h), jnp.asarray(s),
                                                jnp.asarray(t), negative_slope=0.2))
    a = graphs.dense_adjacency(g) > 0
    for k in range(heads):
        e = t[:, k][:, None] + s[:, k][None, :]                # e[i, j] for edge j -> i
        e = np.where(e > 0, e, 0.2 * e)
        e = np.where(a, e, -np.inf)
        w = np.exp(e - e.max(1, keepdims=True))
        w = w / w.sum(1, keepdims=True)
        np.testing.assert_allclose(out[:, k], w @ h[:, k], atol=1e-12)


def test_gcn_model_matches_dense_formula():
    g, x = small_graph()
    model = gnn.GCN(num_classes=4, hidden=6, dropout=0.5)
    params = model.init(jax.random.PRNGKey(0), g, jnp.asarray(x))["params"]
    logits, hidden = model.apply({"params": params}, g, jnp.asarray(x), True)
    op = dense_gcn_operator(graphs.dense_adjacency(g))
    p0, p1 = params["GCNConv_0"], params["GCNConv_1"]
    h = op @ x @ np.asarray(p0["kernel"]) + np.asarray(p0["bias"])
    z = op @ np.maximum(h, 0) @ np.asarray(p1["kernel"]) + np.asarray(p1["bias"])
    np.testing.assert_allclose(hidden, h, atol=1e-10)
    np.testing.assert_allclose(logits, z, atol=1e-10)


def test_sage_model_matches_dense_formula():
    g, x = small_graph()
    model = gnn.SAGE(num_classes=3, hidden=4)
    params = model.init(jax.random.PRNGKey(1), g, jnp.asarray(x))["params"]
    logits, _ = model.apply({"params": params}, g, jnp.asarray(x), True)
    a = graphs.dense_adjacency(g)
    mean = lambda v: (a @ v) / np.maximum(a.sum(1), 1)[:, None]  # noqa: E731
    p0, p1 = (jax.tree.map(np.asarray, params[k]) for k in ("SAGEConv_0", "SAGEConv_1"))
    h = np.maximum(x @ p0["kernel_self"] + mean(x) @ p0["kernel_neigh"] + p0["bias"], 0)
    z = h @ p1["kernel_self"] + mean(h) @ p1["kernel_neigh"] + p1["bias"]
    np.testing.assert_allclose(logits, z, atol=1e-10)


@pytest.mark.parametrize("arch", gnn.ARCHS)
def test_padding_and_sparse_features_leave_outputs_unchanged(arch):
    g, x = small_graph(seed=4)
    g = graphs.build_graph(x, g.senders, g.receivers, self_loops=True)
    model = gnn.make_model(arch, 3, **({"hidden": 2, "heads": 2} if arch == "gat" else {}))
    apply = jax.jit(model.apply, static_argnums=3)     # one compile per shape, not per op
    params = jax.jit(model.init)(jax.random.PRNGKey(0), g, jnp.asarray(x))["params"]
    ref, ref_h = apply({"params": params}, g, jnp.asarray(x), True)
    padded = graphs.pad_graph(g, 16, int(g.n_edge.sum()) + 9)
    out, out_h = apply({"params": params}, padded, padded.nodes, True)
    np.testing.assert_allclose(out[:7], ref, atol=1e-10)
    np.testing.assert_allclose(out_h[:7], ref_h, atol=1e-10)
    np.testing.assert_array_equal(graphs.node_mask(padded), np.arange(16) < 7)
    np.testing.assert_array_equal(graphs.edge_mask(padded),
                                  np.arange(padded.senders.size) < g.senders.size)
    sp_x = graphs.sparse_features(x, np.float64)
    padded_sp = graphs.pad_graph(graphs.build_graph(sp_x, g.senders, g.receivers), 16,
                                 int(g.n_edge.sum()) + 3)
    out_sp, _ = apply({"params": params}, padded_sp, padded_sp.nodes, True)
    np.testing.assert_allclose(out_sp[:7], ref, atol=1e-10)


def test_sparse_linear_and_dropout():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5)) * (rng.random((6, 5)) < 0.4)
    w = rng.normal(size=(5, 3))
    sx = graphs.sparse_features(x, np.float64)
    np.testing.assert_allclose(graphs.linear(sx, jnp.asarray(w)), x @ w, atol=1e-12)
    np.testing.assert_allclose(sx.todense(), x)
    dropped = graphs.feature_dropout(sx, 0.5, jax.random.PRNGKey(0), False).todense()
    kept = np.asarray(dropped) != 0
    np.testing.assert_allclose(np.asarray(dropped)[kept], 2 * x[kept])


def test_gat_shapes_and_bad_input():
    g, x = small_graph()
    model = gnn.make_model("gat", 3, hidden=4, heads=2, out_heads=3)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), g, jnp.asarray(x))["params"]
    logits, h = jax.jit(model.apply, static_argnums=3)(  # jit: one compile, not one per op
        {"params": params}, g, jnp.asarray(x), False, rngs={"dropout": jax.random.PRNGKey(1)})
    assert logits.shape == (7, 3) and h.shape == (7, 8) and gnn.hidden_dim(model) == 8
    assert params["GATConv_1"]["kernel"].shape == (8, 9)
    with pytest.raises(ValueError, match=r"unknown GNN architecture 'gin'.*gcn, gat, sage"):
        gnn.make_model("gin", 3)
    with pytest.raises(ValueError, match=r"unknown GCN option.*'heads'"):
        gnn.make_model("gcn", 3, heads=2)
    with pytest.raises(ValueError, match=r"unknown GAT activation 'tanh'"):
        gnn.make_model("gat", 3, activation="tanh")
    with pytest.raises(ValueError, match=r"edge endpoints must lie in \[0, 7\)"):
        graphs.build_graph(x, [0, 7], [1, 2])
