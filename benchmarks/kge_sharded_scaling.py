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

With ``--pykeen=1`` (``pip install 'pykeen>=1.10'``), the same triples go to PyKEEN as far
as it fits, each size in a fresh process (so its peak RSS is its own, and a crash or an
out-of-memory kill is recorded, not fatal): DistMult with ``--dim``, the same
``--negatives`` per positive, ``--batch``, Adam ``--lr`` and the ``--steps`` batches our
side trains on (PyKEEN reshuffles them), self-adversarial loss (NSSALoss, margin 0,
temperature 1), PyKEEN's entity unit-norm constraint and relation L2 regularizer off to
match our model. Its training triples/s is timed over those batches after
``--pykeen_warmup`` warm-up batches; memory is parameter + Adam bytes read from the torch
model and optimizer, and the worker's peak RSS. Differences that remain: PyKEEN corrupts
the head for the first half of a batch's negatives and the tail for the rest (ours picks a
side per positive at random), draws negatives with torch instead of JAX's PRNG, runs eager
torch on the host's CPUs unsharded (no 4-device mesh), and initialises with Xavier.

Host "devices" share the machine's CPU cores, so sharding over them adds communication
and no compute: the speeds show overhead, not the speed-up of real chips. Writes
``--out`` (default benchmarks/results/kge_sharded_scaling.json) with the load average; a
run whose load average per CPU before it exceeds ``--max_load`` is marked
``"timing_result": false`` (a busy machine: the speeds are not a measurement).
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
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
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


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _pykeen_triples(num_entities: int, args):
    """(warm-up, timed, num_relations): (N, 3) int64 arrays of the first
    ``--pykeen_warmup`` and the first ``--steps`` batches our side trains on (same
    generator, seed and batch order)."""
    data = kg_data.synthetic_kg(num_entities, args.relations, seed=0)
    idx = np.asarray(trainer.epoch_indices(len(data.train), args.batch, 0, 0))
    if len(idx) < args.steps:
        raise ValueError(f"--steps={args.steps} x --batch={args.batch} exceeds the "
                         f"{len(data.train)} training triples")
    take = lambda n: data.train[idx[:n]].reshape(-1, 3).astype(np.int64)
    return take(max(args.pykeen_warmup, 1)), take(args.steps), data.num_relations


def _torch_bytes(tensors) -> int:
    """Total bytes of the torch tensors among ``tensors``."""
    import torch
    return int(sum(t.numel() * t.element_size() for t in tensors
                   if isinstance(t, torch.Tensor)))


def pykeen_train(num_entities: int, args) -> dict:
    """PyKEEN's DistMult on our synthetic graph: triples/s and memory (run in a worker)."""
    import pykeen.version
    import torch
    from pykeen.losses import NSSALoss
    from pykeen.models import DistMult
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import CoreTriplesFactory

    rss_before = _rss_bytes()
    warm, timed, num_relations = _pykeen_triples(num_entities, args)
    factory = lambda x: CoreTriplesFactory.create(torch.as_tensor(x), num_entities,
                                                  num_relations)
    model = DistMult(triples_factory=factory(timed), embedding_dim=args.dim,
                     entity_constrainer=None, regularizer=None, random_seed=0,
                     loss=NSSALoss(margin=0.0, adversarial_temperature=1.0))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loop = SLCWATrainingLoop(model=model, triples_factory=factory(timed), optimizer=opt,
                             negative_sampler="basic",
                             negative_sampler_kwargs={"num_negs_per_pos": args.negatives})
    kw = dict(batch_size=args.batch, use_tqdm=False, use_tqdm_batch=False,
              sub_batch_size=None, drop_last=False, clear_optimizer=False, pin_memory=False)
    t0 = time.perf_counter()
    loop.train(factory(warm), num_epochs=1, **kw)        # epoch 1: the warm-up batches
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()                             # epoch 2 (num_epochs is a total)
    losses = loop.train(factory(timed), num_epochs=2, continue_training=True, **kw)
    seconds = time.perf_counter() - t0
    if len(losses) != 2 or not np.isfinite(losses[-1]):    # the history of both epochs
        raise FloatingPointError(f"PyKEEN's timed epoch gave losses {losses}")
    params = _torch_bytes(model.parameters())
    adam = _torch_bytes(v for st in loop.optimizer.state.values() for v in st.values())
    return {"status": "ok", "train_triples_per_s": len(timed) / seconds,
            "timed_triples": len(timed), "warmup_s": warm_s, "loss": float(losses[-1]),
            "param_bytes": params, "optimizer_bytes": adam,
            "state_bytes": params + adam, "rss_before_bytes": rss_before,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "torch_threads": torch.get_num_threads(),
            "versions": {"pykeen": pykeen.version.get_version(),
                         "torch": torch.__version__}}


def _pykeen_failure(status: str, detail: str) -> dict:
    """The PyKEEN result of a size that did not run to the end."""
    return {"status": status, "detail": detail[-2000:]}


def pykeen_row(num_entities: int, args) -> dict:
    """:func:`pykeen_train` for V entities in a fresh process; a failure, timeout or kill
    (e.g. out of memory) is the result, not an exception."""
    cmd = [sys.executable, "-m", "benchmarks.kge_sharded_scaling",
           f"--pykeen_worker={num_entities}"] + [
        f"--{k}={getattr(args, k)}" for k in ("dim", "relations", "steps", "batch",
                                              "negatives", "lr", "pykeen_warmup")]
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                           timeout=args.pykeen_timeout)
    except subprocess.TimeoutExpired:
        return _pykeen_failure("timeout", f"over --pykeen_timeout={args.pykeen_timeout} s")
    lines = p.stdout.strip().splitlines()
    if p.returncode == 0 and lines:
        return json.loads(lines[-1])
    status = "killed (out of memory?)" if p.returncode < 0 else "error"
    return _pykeen_failure(status, f"exit {p.returncode}: {p.stderr}")


def _pykeen_worker(args) -> None:
    """Body of the ``--pykeen_worker`` process: prints one JSON line, whatever happens."""
    try:
        out = pykeen_train(args.pykeen_worker, args)
    except Exception as e:   # noqa: BLE001 - any failure is this size's result
        out = _pykeen_failure("error", f"{type(e).__name__}: {e}")
    print(json.dumps(out), flush=True)


def pykeen_rows(rows, args) -> None:
    """Adds ``row["pykeen"]`` to every row, smallest V first; after a size fails the
    larger ones are recorded as skipped."""
    failed = None
    for row in sorted(rows, key=lambda r: r["num_entities"]):
        if failed is None:
            row["pykeen"] = pykeen_row(row["num_entities"], args)
            print(json.dumps({"num_entities": row["num_entities"], "pykeen": row["pykeen"]}),
                  flush=True)
            if row["pykeen"]["status"] != "ok":
                failed = row["num_entities"]
        else:
            row["pykeen"] = _pykeen_failure("skipped", f"PyKEEN failed at V={failed}")


def timing_status(load_before: float, max_load: float) -> dict:
    """Whether the speeds are a timing result: the 1-minute load average per CPU before
    the run was at most ``max_load`` (other work slows and skews both sides). The load
    after (recorded by the caller) is not judged: it includes this benchmark's own work."""
    per_cpu = load_before / (os.cpu_count() or 1)
    ok = per_cpu <= max_load
    return {"timing_result": bool(ok),
            "timing_note": ("" if ok else
                            f"busy machine (load {per_cpu:.2f} per CPU before the run > "
                            f"--max_load={max_load}): speeds are not a timing result")}


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
    ap.add_argument("--pykeen", type=int, default=0,
                    help="1: also train PyKEEN's DistMult on the same triples")
    ap.add_argument("--pykeen_warmup", type=int, default=2, help="warm-up batches")
    ap.add_argument("--pykeen_timeout", type=float, default=1800.0,
                    help="seconds per size before PyKEEN's result is a timeout")
    ap.add_argument("--pykeen_worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max_load", type=float, default=0.25,
                    help="load average per CPU above which speeds are not a timing result")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                  "kge_sharded_scaling.json"))
    args = ap.parse_args(argv)
    if args.pykeen_worker:
        return _pykeen_worker(args)
    mesh = sharded.make_mesh(model=args.shards)
    load_before = os.getloadavg()[0]
    rows = []
    for n in map(int, args.sizes.split(",")):
        rows.append(run_size(n, args, mesh))
        print(json.dumps(rows[-1]), flush=True)
    if args.pykeen:
        pykeen_rows(rows, args)
    load_after = os.getloadavg()[0]
    out = {"command": "python -m benchmarks.kge_sharded_scaling " + " ".join(
               f"--{k}={v}" for k, v in vars(args).items() if k not in ("out", "pykeen_worker")),
           "rows": rows, "xla_temporaries": temporaries_fit(rows),
           "machine": f"{os.cpu_count()} CPUs {platform.machine()}, jax {jax.__version__}, "
                      + (f"{args.shards} host devices sharing the CPUs"
                         if jax.devices()[0].platform == "cpu" else
                         f"{args.shards} of {jax.device_count()} "
                         f"{jax.devices()[0].device_kind}"),
           "v5e_64_assumptions": f"{V5E_CHIPS} chips x 16 GiB HBM, entity rows split over "
                                 f"all chips, tables + Adam moments within "
                                 f"{args.hbm_fraction:.0%} of HBM",
           "load_average_before": load_before, "load_average_after": load_after,
           **timing_status(load_before, args.max_load)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
