"""Entity-sharded KGE (jaxgraph.kge.sharded): memory per device and speed vs entity count.

    python -m benchmarks.kge_sharded_scaling --sizes=10000,100000,1000000 --dim=64

For each entity count V: a synthetic graph (``kg_data.synthetic_kg(V, relations)``), a
DistMult (``--model``) state created sharded over ``--shards`` host devices (default 4),
``--steps`` training steps of ``--batch`` triples with ``--negatives`` self-adversarial
negatives each, then a filtered evaluation of ``--queries`` test triples (both sides,
filtered with all triples). Reported per V:

  - bytes per device of the sharded tables + Adam moments (read from the arrays'
    addressable shards), and of the entity part alone per entity row;
  - XLA's temporary bytes per device of one compiled training epoch;
  - training triples/s and evaluation queries/s after compilation (the second call), and
    the same unsharded (``--compare_unsharded``, one device);
  - the projection to a TPU v5e-64 slice (64 chips, 16 GiB HBM each) from the measured
    bytes per entity row: per-chip bytes for this V, and the largest V whose tables and
    Adam state fit ``--hbm_fraction`` of every chip's HBM; and, with XLA's temporaries
    per device fitted as fixed + per-row bytes over the sizes run (CPU compiles: a TPU's
    may differ), the largest V that fits whole chips.

Host "devices" share the machine's CPU cores, so sharding over them adds communication
and no compute: the speeds show overhead, not the speed-up of real chips. Writes
``--out`` (default benchmarks/results/kge_sharded_scaling.json) with the load average.
"""
from __future__ import annotations

import os

_FLAG = "--xla_force_host_platform_device_count"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):          # before jax is imported
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_FLAG}=4".strip()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxgraph import kg_data, kge_models, ranking  # noqa: E402
from jaxgraph.kge import sharded, trainer  # noqa: E402
from jaxgraph.kge import step as kge_step  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2 ** 30
V5E_CHIPS, V5E_HBM = 64, 16 * GIB


def _timed(fn):
    """(result, seconds) of ``fn()``, waiting for its arrays."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def _batches(data, batch: int, steps: int):
    idx = trainer.epoch_indices(len(data.train), batch, 0, 0)[:steps]
    if len(idx) < steps:
        raise ValueError(f"--steps={steps} x --batch={batch} exceeds the "
                         f"{len(data.train)} training triples; accepted: fewer steps")
    return jnp.asarray(data.train[idx]), jnp.ones(idx.shape, jnp.float32)


def train_speed(state, cfg, tx, batches, weights, mesh):
    """(state, triples/s of the second call, compile seconds, XLA temp bytes per device)."""
    key, kd = jax.random.PRNGKey(1), jnp.float32(0)
    if mesh is None:
        fn = functools.partial(kge_step.train_epoch, cfg=cfg, tx=tx)
        lowered = kge_step.train_epoch.lower(state, batches, weights, key, kd, cfg=cfg, tx=tx)
    else:
        fn = functools.partial(sharded.train_epoch, cfg=cfg, tx=tx, mesh=mesh)
        lowered = sharded.train_epoch.lower(state, batches, weights, key, kd, cfg=cfg, tx=tx,
                                            mesh=mesh)
    compiled, compile_s = _timed(lowered.compile)
    temp = int(compiled.memory_analysis().temp_size_in_bytes)
    (state, _), _ = _timed(lambda: fn(state, batches, weights, key, kd))
    (state, metrics), steady = _timed(lambda: fn(state, batches, weights, key, kd))
    if not np.all(np.isfinite(np.asarray(metrics["loss"]))):
        raise FloatingPointError("non-finite training loss")
    return state, batches.shape[0] * batches.shape[1] / steady, compile_s, temp


def eval_speed(backbone, params, data, queries: int, mesh, batch_size: int, chunk: int):
    """(metrics, queries/s of the second call, first-call seconds, with compilation)."""
    test = data.test[:queries]
    indices = {side: ranking.FilterIndex.build(data.all_triples(), data.num_relations, side)
               for side in ("head", "tail")}
    rank_batch = (None if mesh is None else
                  sharded.rank_batch(backbone, mesh, data.num_entities, chunk))

    def run():
        return ranking.evaluate(backbone, params, test, None, data.num_relations,
                                batch_size=batch_size, chunk=chunk, indices=indices,
                                rank_batch=rank_batch)
    _, first = _timed(run)
    m, steady = _timed(run)
    return m, 2 * len(test) / steady, first


def project_v5e(entity_bytes_per_row: float, replicated_bytes: int, num_entities: int,
                hbm_fraction: float) -> dict:
    """A v5e-64 slice (64 chips x 16 GiB HBM), entity rows split over all 64 chips.

    Args:
      entity_bytes_per_row: measured bytes per entity row per device (table + moments).
      replicated_bytes: measured bytes every device holds whatever V is (relations,
        counters).
      num_entities: V of this measurement.
      hbm_fraction: share of HBM the tables + Adam state may use (the rest: activations,
        XLA temporaries, the runtime).
    """
    per_chip = replicated_bytes + entity_bytes_per_row * -(-num_entities // V5E_CHIPS)
    budget = V5E_HBM * hbm_fraction - replicated_bytes
    return {"bytes_per_chip_this_V": int(per_chip),
            "max_entities_one_chip": int(budget // entity_bytes_per_row),
            "max_entities_v5e_64": int(V5E_CHIPS * (budget // entity_bytes_per_row))}


def temporaries_fit(rows) -> dict:
    """XLA's temporary bytes per device as ``fixed + per_row * rows_per_device`` (least
    squares over the measured sizes; the dense gradient and Adam's update of the local
    block grow with it), and the v5e-64 projection with them: the largest V whose tables,
    Adam moments and these temporaries fit a whole chip's HBM."""
    x = np.array([r["rows_per_device"] for r in rows], float)
    y = np.array([r["xla_temp_bytes"] for r in rows], float)
    per_row, fixed = np.polyfit(x, y, 1) if len(rows) > 1 else (0.0, y[0])
    state_row = rows[-1]["entity_bytes_per_row"]
    free = V5E_HBM - fixed - rows[-1]["replicated_bytes_per_device"]
    return {"temp_fixed_bytes": float(fixed), "temp_bytes_per_row": float(per_row),
            "max_entities_v5e_64_with_temporaries": int(
                V5E_CHIPS * (free // (state_row + max(per_row, 0.0))))}


def run_size(num_entities: int, args, mesh) -> dict:
    """One row of the benchmark: memory, speeds and the projection for V entities."""
    data = kg_data.synthetic_kg(num_entities, args.relations, seed=0)
    backbone = kge_models.get_backbone(args.model, args.dim)
    cfg = kge_step.StepConfig(backbone, num_entities, num_negatives=args.negatives)
    tx = optax.adam(args.lr)
    batches, weights = _batches(data, args.batch, args.steps)
    state, init_s = _timed(lambda: sharded.init_state(cfg, data.num_relations, tx,
                                                      jax.random.PRNGKey(0), mesh))
    per_device = sharded.bytes_per_device(state)
    rows_per_device = state.params["kge"]["entity"].addressable_shards[0].data.shape[0]
    entity_bytes = sum(leaf.addressable_shards[0].data.nbytes
                       for leaf, split in _split_leaves(state) if split)
    row = {"num_entities": num_entities, "train_triples": len(data.train),
           "rows_per_device": int(rows_per_device),
           "state_bytes_per_device": max(per_device.values()),
           "entity_bytes_per_device": int(entity_bytes),
           "entity_bytes_per_row": entity_bytes / rows_per_device,
           "replicated_bytes_per_device": int(max(per_device.values()) - entity_bytes),
           "unsharded_state_bytes": _unsharded_bytes(state, num_entities),
           "init_s": init_s}
    state, row["train_triples_per_s"], row["train_compile_s"], row["xla_temp_bytes"] = (
        train_speed(state, cfg, tx, batches, weights, mesh))
    m, row["eval_queries_per_s"], row["eval_first_call_s"] = eval_speed(
        backbone, state.params["kge"], data, args.queries, mesh, args.eval_batch, args.chunk)
    row["eval_mrr"] = m["mrr"]
    row["v5e_64"] = project_v5e(row["entity_bytes_per_row"],
                                row["replicated_bytes_per_device"], num_entities,
                                args.hbm_fraction)
    if args.compare_unsharded:
        del state
        st = kge_step.init_state(cfg, data.num_relations, tx, jax.random.PRNGKey(0))
        st, row["unsharded_train_triples_per_s"], _, row["unsharded_xla_temp_bytes"] = (
            train_speed(st, cfg, tx, batches, weights, None))
        m1, row["unsharded_eval_queries_per_s"], _ = eval_speed(
            backbone, st.params["kge"], data, args.queries, None, args.eval_batch,
            args.chunk)
        row["unsharded_eval_mrr"] = m1["mrr"]
    return row


def _split_leaves(tree):
    """[(leaf, split by entity rows?)] of a state (:func:`jaxgraph.kge.sharded.param_specs`)."""
    specs = jax.tree.leaves(sharded.param_specs(tree),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    return [(leaf, spec != jax.sharding.PartitionSpec())
            for leaf, spec in zip(jax.tree.leaves(tree), specs)]


def _unsharded_bytes(state, num_entities: int) -> int:
    """Bytes of the same state unsharded (unpadded entity rows, everything once)."""
    return int(sum(num_entities * leaf.shape[1] * leaf.dtype.itemsize if split
                   else leaf.nbytes for leaf, split in _split_leaves(state)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--model", default="distmult")
    ap.add_argument("--relations", type=int, default=4)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--negatives", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--eval_batch", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--hbm_fraction", type=float, default=0.75)
    ap.add_argument("--compare_unsharded", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                  "kge_sharded_scaling.json"))
    args = ap.parse_args(argv)
    mesh = sharded.make_mesh(model=args.shards)
    load_before = os.getloadavg()[0]
    rows = []
    for n in map(int, args.sizes.split(",")):
        rows.append(run_size(n, args, mesh))
        print(json.dumps(rows[-1]), flush=True)
    out = {"command": "python -m benchmarks.kge_sharded_scaling " + " ".join(
               f"--{k}={v}" for k, v in vars(args).items() if k != "out"),
           "rows": rows, "xla_temporaries": temporaries_fit(rows),
           "machine": f"{os.cpu_count()} CPUs {platform.machine()}, jax {jax.__version__}, "
                      f"{args.shards} host devices sharing the CPUs",
           "v5e_64_assumptions": f"{V5E_CHIPS} chips x 16 GiB HBM, entity rows split over "
                                 f"all chips, tables + Adam moments within "
                                 f"{args.hbm_fraction:.0%} of HBM",
           "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
