"""KGE scoring functions against hand-computed values; query/match forms agree; the
backbone records and their registry."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import kge_models as km


def _params(entity, relation, core=None):
    p = {"entity": jnp.asarray(entity, jnp.float64), "relation": jnp.asarray(relation,
                                                                          jnp.float64)}
    if core is not None:
        p["core"] = jnp.asarray(core, jnp.float64)
    return p


# entity 0 = h, entity 1 = t; relation 0 = r; expected values worked out by hand.
HAND = {
    # 6 - |[1, 2] + [0.5, -1] - [2, 0]|_1 = 6 - (0.5 + 1)
    "transe": (2, [[1, 2], [2, 0]], [[0.5, -1]], None, 4.5),
    # 1 * 0.5 * 2 + 2 * (-1) * 3
    "distmult": (2, [[1, 2], [2, 3]], [[0.5, -1]], None, -5.0),
    # Re((1 + 2i)(0.5 - i) conj(2 + 3i)) = Re(2.5 (2 - 3i))
    "complex": (2, [[1, 2], [2, 3]], [[0.5, -1]], None, 5.0),
    # phase = 4 * pi / emb_range, emb_range = (6 + 2) / 1 -> rotation by i:
    # 6 - |(1 + 2i) i - (1 + 5i)| = 6 - |-3 - 4i|
    "rotate": (2, [[1, 2], [1, 5]], [[4.0]], None, 1.0),
    # ((1*1*7 + 2*(-1)*8) + (5*2*3 + 6*0.5*4)) / 2
    "simple": (4, [[1, 2, 3, 4], [5, 6, 7, 8]], [[1, -1, 2, 0.5]], None, 16.5),
    # W_ijk = 4i + 2j + k; sum W_ijk h_i r_j t_k = 1 - 9 + 34 - 50
    "tucker": (2, [[1, 2], [3, 1]], [[1, -1]], np.arange(8.0).reshape(2, 2, 2), -24.0),
}


@pytest.mark.parametrize("name", km.BACKBONES)
def test_hand_computed_scores(name):
    dim, ent, rel, core, expected = HAND[name]
    b = km.get_backbone(name, dim, gamma=6.0)
    p = _params(ent, rel, core)
    got = jax.jit(b.score_triples)(p, jnp.array([0]), jnp.array([0]), jnp.array([1]))
    np.testing.assert_allclose(np.asarray(got), [expected], rtol=1e-9, atol=1e-5)


@pytest.mark.parametrize("name", km.BACKBONES)
def test_head_tail_and_all_candidate_forms_agree(name):
    b = km.get_backbone(name, 6 if name != "tucker" else 4, gamma=3.0)
    p = b.init_params(7, 3, jax.random.PRNGKey(0), init_range=0.5)
    p = jax.tree.map(lambda a: a.astype(jnp.float64), p)
    h, r = jnp.array([0, 3, 6]), jnp.array([2, 0, 1])
    ents = jnp.arange(7)

    @jax.jit
    def forms(p):
        full = b.score_triples(p, h[:, None], r[:, None], ents[None, :])   # (3, 7)
        tails = b.match_all(b.tail_query(p, h, r), p["entity"])
        heads = b.match_all(b.head_query(p, r, h), p["entity"])          # t := h
        ref_heads = b.score_triples(p, ents[None, :], r[:, None], h[:, None])
        cands = b.match(b.tail_query(p, h, r), p["entity"][None, :, :])   # (3, 7) rows
        return full, tails, heads, ref_heads, cands

    full, tails, heads, ref_heads, cands = forms(p)
    np.testing.assert_allclose(tails, full, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(heads, ref_heads, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cands, full, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", km.BACKBONES)
def test_init_shapes_and_ranges(name):
    b = km.get_backbone(name, 6 if name != "tucker" else 4, gamma=2.0)
    p = b.init_params(5, 2, jax.random.PRNGKey(1))
    want = {"entity": (5, b.dim), "relation": (2, b.rel_dim)}
    if name == "tucker":
        want["core"] = (4, 4, 4)
    assert {k: v.shape for k, v in p.items()} == want
    # default range: RotatE's emb_range for the distance models, 0.1 for the others
    a = {"transe": 4 / 6, "rotate": 4 / 3}.get(name, 0.1)
    assert float(jnp.max(jnp.abs(p["entity"]))) <= a
    assert b.bilinear == (name not in ("transe", "rotate"))


def test_registry_records_are_cached_and_hashable():
    b = km.get_backbone(" RotatE ", 8)
    assert b is km.BACKBONES["rotate"](8.0, 6) and b == km.rotate(8, gamma=6.0)
    assert hash(b) == hash(km.get_backbone("rotate", 8))
    assert b != km.get_backbone("rotate", 8, gamma=3.0)
    assert (b.name, b.dim, b.gamma, b.rel_dim) == ("rotate", 8, 6.0, 4)


def test_unknown_model_and_bad_dim():
    with pytest.raises(ValueError, match="unknown KGE model 'transh'.*transe.*tucker"):
        km.get_backbone("transh", 8)
    with pytest.raises(ValueError, match="rotate needs an even dim"):
        km.get_backbone("rotate", 7)
    with pytest.raises(ValueError, match="transe needs a dim >= 1"):
        km.get_backbone("transe", 0)
