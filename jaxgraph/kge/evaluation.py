"""Evaluation of a KGE run: filtered metrics of a split, and a trained backbone read back
from a workdir's checkpoints."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxgraph import kg_data, kge_models, ranking
from jaxgraph.kge import sharded
from jaxinfra import checkpoints

__all__ = ["evaluate_split", "load_checkpoint"]


def evaluate_split(backbone: kge_models.Backbone, params, data: kg_data.KGData, split: str,
                   filter_splits=kg_data.SPLITS, *, batch_size: int = 256,
                   chunk: int = 4096, max_queries: int = 0, mesh=None) -> dict:
    """Filtered metrics (:func:`jaxgraph.ranking.evaluate`) of ``data``'s ``split``.

    Args:
      backbone, params: the model (backbone tables).
      data: the graph.
      split: "train", "valid" or "test".
      filter_splits: the splits whose triples are filtered (known true answers).
      batch_size, chunk: see :func:`jaxgraph.ranking.evaluate`.
      max_queries: > 0: a fixed random subset (seed 0) of this many triples, in order.
      mesh: None, or the mesh of entity-sharded ``params`` (:mod:`jaxgraph.kge.sharded`;
        the same ranks, computed without gathering the table).
    """
    triples = data.split(split)
    if max_queries and len(triples) > max_queries:
        idx = np.random.default_rng(0).permutation(len(triples))[:max_queries]
        triples = triples[np.sort(idx)]
    if mesh is not None:
        return sharded.evaluate(backbone, params, triples, data.all_triples(filter_splits),
                                data.num_relations, mesh=mesh, num_entities=data.num_entities,
                                batch_size=int(batch_size), chunk=int(chunk))
    return ranking.evaluate(backbone, params, triples, data.all_triples(filter_splits),
                            data.num_relations, batch_size=int(batch_size), chunk=int(chunk))


def load_checkpoint(workdir: str, epoch: int | None = None):
    """``(backbone, kge_params, meta)`` from a training workdir (latest epoch if None).

    The params are unsharded on this process's first device (an entity-sharded run's
    padding rows dropped).

    Raises:
      FileNotFoundError: no such checkpoint.
    """
    mngr, epoch = checkpoints.open_latest(
        workdir, what="KGE", step=epoch,
        hint=f"train first with python -m jaxgraph.kge --config=... --workdir={workdir}")
    try:
        meta = checkpoints.read_meta(mngr, epoch)
        state = checkpoints.read(mngr, epoch, state=None)["state"]
    finally:
        mngr.close()
    m = meta["model"]
    b = kge_models.get_backbone(m["name"], int(m["dim"]), float(m["gamma"]))
    kge = dict(state["params"]["kge"])
    kge["entity"] = kge["entity"][:int(meta["num_entities"])]
    return b, jax.tree.map(jnp.asarray, kge), meta
