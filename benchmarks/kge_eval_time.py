"""Filtered-evaluation time of the FB15k-237 test set (20,466 triples, both sides).

    python -m benchmarks.kge_eval_time --dims=32,64

For each backbone and dimension: ``jaxgraph.ranking.evaluate`` on the whole test split,
filtered with train + valid + test, realistic ranks (40,932 queries against 14,541
entities). The first call includes compilation; the second is the steady-state time.
Parameters are the freshly initialised embeddings (the time does not depend on the
values). Writes benchmarks/results/kge_eval_time.{json,md} with the machine's load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

from jaxgraph import kg_data, kge_models, ranking

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_eval(data, model: str, dim: int, batch_size: int, chunk: int) -> dict:
    """Seconds of the first (compiling) and second filtered evaluation of the test split."""
    backbone = kge_models.get_backbone(model, dim)
    params = backbone.init_params(data.num_entities, data.num_relations,
                                  jax.random.PRNGKey(0))
    indices = {side: ranking.FilterIndex.build(data.all_triples(), data.num_relations, side)
               for side in ("head", "tail")}
    out = {"model": model, "dim": dim}
    for label in ("first_call_s", "steady_s"):
        t0 = time.perf_counter()
        m = ranking.evaluate(backbone, params, data.test, None, data.num_relations,
                             batch_size=batch_size, chunk=chunk, indices=indices)
        out[label] = time.perf_counter() - t0
    out["queries"] = 2 * len(data.test)
    out["mrr_of_random_init"] = m["mrr"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(kge_models.BACKBONES))
    ap.add_argument("--dims", default="32,64")
    ap.add_argument("--batch_size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                  "kge_eval_time.json"))
    args = ap.parse_args()
    data = kg_data.load_kg("fb15k-237")
    load_before = os.getloadavg()[0]
    rows = []
    for dim in map(int, args.dims.split(",")):
        for model in args.models.split(","):
            rows.append(time_eval(data, model, dim, args.batch_size, args.chunk))
            print(rows[-1], flush=True)
    out = {"command": "python -m benchmarks.kge_eval_time", "rows": rows,
           "machine": f"{os.cpu_count()} CPUs {platform.machine()}, jax {jax.__version__} "
                      f"on {jax.default_backend()}",
           "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    lines = ["| model | dim | first call, with compile (s) | steady (s) |",
             "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['dim']} | {r['first_call_s']:.1f} | {r['steady_s']:.1f} |"
              for r in rows]
    lines.append(f"\nFB15k-237 test, {rows[0]['queries']:,} filtered queries; {out['machine']}; "
                 f"load average {load_before:.1f} before, {out['load_average_after']:.1f} "
                 f"after.")
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
