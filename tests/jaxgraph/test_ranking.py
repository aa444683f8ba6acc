"""Filtered ranks against a brute-force numpy ranking, with ties."""
import jax.numpy as jnp
import numpy as np
import pytest
from tie_graph import tie_graph

from jaxgraph import kge_models, ranking


@pytest.mark.parametrize("name", ["distmult", "transe"])
def test_filtered_ranks_match_brute_force(name):
    params, known, queries = tie_graph(dtype=jnp.float64)
    b = kge_models.get_backbone(name, 4, gamma=2.0)
    s = np.asarray(b.score_triples(params, jnp.arange(23)[None, :], queries[:, 1:2],
                                   queries[:, 2:3]))                             # heads
    s_t = np.asarray(b.score_triples(params, queries[:, :1], queries[:, 1:2],
                                     jnp.arange(23)[None, :]))                   # tails
    ks = {tuple(x) for x in known.tolist()}
    for side, scores, tgt_col in (("head", s, 0), ("tail", s_t, 2)):
        filt = []
        for h, r, t in queries.tolist():
            if side == "tail":
                filt.append({e for e in range(23) if (h, r, e) in ks})
            else:
                filt.append({e for e in range(23) if (e, r, t) in ks})
        want = ranking.brute_force_ranks(scores, queries[:, tgt_col], filt)
        # batch 5 (padding) and chunk 8 (three entity chunks, one padded)
        got = ranking.filtered_ranks(b, params, queries, known, 3, side, batch_size=5,
                                     chunk=8)
        np.testing.assert_array_equal(got, want)
        assert np.any(want[:, 1] > want[:, 0]), "the test needs ties"
        raw = ranking.filtered_ranks(b, params, queries, None, 3, side, batch_size=5,
                                     chunk=8)
        assert np.all(raw[:, 2] >= got[:, 2]) and np.any(raw[:, 2] > got[:, 2])


def test_hand_made_ties_and_metrics():
    # one relation, entity 0 is the head; tails scored by DistMult = entity value
    params = {"entity": jnp.array([[1.0], [3.0], [3.0], [2.0], [3.0]]),
              "relation": jnp.array([[1.0]])}
    b = kge_models.get_backbone("distmult", 1)
    queries = np.array([[0, 0, 1]])
    # scores of 0..4: 1 3 3 2 3; target 1 (3.0) ties with 2 and 4
    r = ranking.filtered_ranks(b, params, queries, None, 1, "tail")
    np.testing.assert_array_equal(r, [[1, 3, 2]])
    # filtering entity 4 (a known true tail) leaves one tie
    r = ranking.filtered_ranks(b, params, queries, np.array([[0, 0, 4], [0, 0, 1]]), 1,
                               "tail")
    np.testing.assert_array_equal(r, [[1, 2, 1.5]])
    m = ranking.rank_metrics(np.array([1.0, 2.0, 4.0, 20.0]))
    assert m == {"mrr": (1 + 0.5 + 0.25 + 0.05) / 4, "mr": 6.75, "hits@1": 0.25,
                 "hits@3": 0.5, "hits@10": 0.75}


def test_filter_pairs_excludes_target():
    idx = ranking.FilterIndex.build(np.array([[0, 0, 1], [0, 0, 2], [0, 0, 2], [1, 0, 3]]),
                                    1, "tail")
    rows, cols = ranking.filter_pairs(idx, np.array([[0, 0, 1], [1, 0, 0], [2, 0, 0]]),
                                      "tail")
    assert rows.tolist() == [0, 1] and cols.tolist() == [2, 3]
    with pytest.raises(ValueError, match="unknown side 'left'; valid: head, tail"):
        ranking.FilterIndex.build(np.zeros((1, 3), int), 1, "left")
