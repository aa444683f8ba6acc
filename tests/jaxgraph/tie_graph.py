"""The small graph of the ranking tests (tests/jaxgraph/test_ranking.py and
test_kge_sharded.py): integer-valued embeddings, so DistMult scores are small integers
with many exact ties."""
import jax.numpy as jnp
import numpy as np


def tie_graph(seed=0, num_ent=23, num_rel=3, dim=4, dtype=jnp.float32):
    """Returns (params {"entity": (num_ent, dim), "relation": (num_rel, dim)} with values
    in {-1, 0, 1} of ``dtype``, known (60, 3) int triples, queries: their first 17)."""
    rng = np.random.default_rng(seed)
    params = {"entity": jnp.asarray(rng.integers(-1, 2, (num_ent, dim)), dtype),
              "relation": jnp.asarray(rng.integers(-1, 2, (num_rel, dim)), dtype)}
    known = np.stack([rng.integers(0, num_ent, 60), rng.integers(0, num_rel, 60),
                      rng.integers(0, num_ent, 60)], 1)
    return params, known, known[:17]
