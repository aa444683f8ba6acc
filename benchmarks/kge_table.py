"""Low-dimensional KGE table: every backbone with and without CSD-like distillation.

    nice -n 5 python -m benchmarks.kge_table --data=wn18rr --dims=32,64 --seeds=0,1,2 \
        --epochs=20 --select_lr=0.001,0.003,0.01,0.03 --tag=_e20 --budget_minutes=90
    python -m benchmarks.kge_table --data=wn18rr --report   # merged table + figure

With ``--select_lr`` each model's learning rate is picked first, on the validation MRR of
its baseline (first dim and seed); baseline and CSD runs then share it.

Runs ``jaxgraph.kge.experiment.train_and_evaluate`` (configs/kge/kge.py with the overrides
below) for model x {baseline, csd} x dim x seed, in that order of priority (all models at the
first dim and seed first), stops starting new runs once ``--budget_minutes`` have passed,
and writes one JSON row per run to ``benchmarks/results/kge_table_<data>.json`` and the
mean-over-seeds table to ``benchmarks/results/kge_table_<data>.md``.

Overrides (the CPU budget): ``train.shared_negatives=True`` (one set of 64 negatives per
batch of 512), ``train.epochs=--epochs``, validation on 500 sampled triples at the end
(the whole split when selecting the learning rate);
test = all test triples, filtered with train + valid + test, realistic ranks.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("transe", "distmult", "complex", "rotate", "simple", "tucker")


def _base_config():
    spec = importlib.util.spec_from_file_location(
        "kge_cfg", os.path.join(ROOT, "configs", "kge", "kge.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config


def make_config(model, data, dim, seed, csd, epochs, lr=None, shared=True, valid_queries=500):
    c = _base_config()(",".join([model, data, f"dim={dim}", f"seed={seed}"]
                                + (["csd"] if csd else [])))
    c.train.shared_negatives = shared
    c.train.epochs = epochs
    if lr:
        c.train.lr = lr
    c.eval.valid_max_queries = valid_queries
    c.progress = False
    c.checkpoint_every = epochs
    return c


def table(rows) -> str:
    groups = {}
    for r in rows:
        lr = r.get("overrides", {}).get("lr", 3e-3)
        ep = r.get("overrides", {}).get("epochs", 5)
        groups.setdefault((ep, r["dim"], r["model"], lr, r["csd"]), []).append(r)
    lines = ["| epochs | dim | model | lr | CSD | seeds | MRR (± std over seeds) | MR | H@1 | "
             "H@3 | H@10 | train s | eval s |", "|" + "---|" * 13]
    for (ep, dim, model, lr, csd), rs in sorted(groups.items(), key=lambda kv: (
            kv[0][0], kv[0][1], MODELS.index(kv[0][2]), kv[0][3], kv[0][4])):
        m = lambda k: np.mean([r["test"][k] for r in rs])
        sd = lambda k: (f" ± {np.std([r['test'][k] for r in rs], ddof=1):.4f}"
                        if len(rs) > 1 else "")
        lines.append(
            f"| {ep} | {dim} | {model} | {lr:g} | {'yes' if csd else 'no'} | {len(rs)} | "
            f"{m('mrr'):.4f}{sd('mrr')} | "
            f"{m('mr'):.0f} | {m('hits@1'):.4f} | {m('hits@3'):.4f} | {m('hits@10'):.4f} | "
            f"{np.mean([r['train_seconds'] for r in rs]):.0f} | {m('seconds'):.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="wn18rr")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dims", default="32,64")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--budget_minutes", type=float, default=20.0)
    ap.add_argument("--lr", type=float, default=0.0, help="0: the config's (3e-3)")
    ap.add_argument("--select_lr", default="",
                    help="comma-separated learning rates: per model, train the baseline at "
                         "the first dim and seed with each, keep the one with the best "
                         "validation MRR (whole validation split) for every run of that "
                         "model (baseline and CSD alike); overrides --lr")
    ap.add_argument("--per_example_negatives", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the result files")
    ap.add_argument("--report", action="store_true",
                    help="only merge every kge_table_<data>*.json into "
                         "kge_table_<data>_all.md and docs/figures/kge_csd_<data>.png")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "kge_table"))
    args = ap.parse_args()
    if args.report:
        report(args.data)
        return
    from jaxgraph.kge import experiment
    out_json = os.path.join(ROOT, "benchmarks", "results", f"kge_table_{args.data}{args.tag}.json")
    rows = json.load(open(out_json)) if os.path.isfile(out_json) else []
    done = {(r["model"], r["dim"], r["seed"], r["csd"]) for r in rows}
    t_start = time.perf_counter()
    lr_of = {}
    if args.select_lr:
        lr_of = select_lr(args, experiment, [float(x) for x in args.select_lr.split(",")])
    jobs = [(model, dim, seed, csd) for seed in map(int, args.seeds.split(","))
            for dim in map(int, args.dims.split(",")) for model in args.models.split(",")
            for csd in (False, True)]
    for model, dim, seed, csd in jobs:
        if (model, dim, seed, csd) in done:
            continue
        if time.perf_counter() - t_start > args.budget_minutes * 60:
            print("budget reached; stopping")
            break
        c = make_config(model, args.data, dim, seed, csd, args.epochs,
                        lr_of.get(model, args.lr), not args.per_example_negatives)
        name = f"{model}_{args.data}_d{dim}_s{seed}{'_csd' if csd else ''}{args.tag}"
        t0 = time.perf_counter()
        res = experiment.train_and_evaluate(c, os.path.join(args.workdir, name))
        res["wall_seconds"] = time.perf_counter() - t0
        res["overrides"] = {"shared_negatives": bool(c.train.shared_negatives),
                            "epochs": args.epochs,
                            "num_negatives": int(c.train.num_negatives),
                            "batch_size": int(c.train.batch_size),
                            "lr": float(c.train.lr)}
        rows.append(res)
        json.dump(rows, open(out_json, "w"), indent=1)
        print(name, {k: round(res["test"][k], 4) for k in ("mrr", "hits@10")},
              f"train {res['train_seconds']:.0f}s wall {res['wall_seconds']:.0f}s",
              flush=True)
    md = os.path.join(ROOT, "benchmarks", "results", f"kge_table_{args.data}{args.tag}.md")
    with open(md, "w") as f:
        f.write(table(rows) + "\n")
    print(table(rows))


def select_lr(args, experiment, lrs) -> dict:
    """{model: lr} with the best validation MRR of the baseline (first dim and seed);
    every trial is kept in ``kge_table_<data><tag>_lr_select.json``."""
    path = os.path.join(ROOT, "benchmarks", "results",
                        f"kge_table_{args.data}{args.tag}_lr_select.json")
    trials = json.load(open(path)) if os.path.isfile(path) else []
    dim, seed = int(args.dims.split(",")[0]), int(args.seeds.split(",")[0])
    for model in args.models.split(","):
        for lr in lrs:
            if any(t["model"] == model and t["lr"] == lr for t in trials):
                continue
            c = make_config(model, args.data, dim, seed, False, args.epochs, lr,
                            not args.per_example_negatives, valid_queries=0)
            name = f"{model}_{args.data}_d{dim}_s{seed}_lr{lr:g}{args.tag}_select"
            res = experiment.train_and_evaluate(c, os.path.join(args.workdir, name))
            trials.append({"model": model, "lr": lr, "dim": dim, "seed": seed,
                           "epochs": args.epochs, "valid": res["valid"],
                           "train_seconds": res["train_seconds"]})
            json.dump(trials, open(path, "w"), indent=1)
            print(name, "valid MRR", round(res["valid"]["mrr"], 4), flush=True)
    chosen = {}
    for model in args.models.split(","):
        mine = [t for t in trials if t["model"] == model and t["lr"] in lrs]
        chosen[model] = max(mine, key=lambda t: t["valid"]["mrr"])["lr"]
    print("learning rates selected on validation MRR:", chosen, flush=True)
    return chosen


def merged_rows(data="wn18rr") -> list:
    """The rows of every ``kge_table_<data>*.json`` result file."""
    import glob
    rows = []
    for path in sorted(glob.glob(os.path.join(ROOT, "benchmarks", "results",
                                              f"kge_table_{data}*.json"))):
        if not path.endswith("_lr_select.json"):
            rows += json.load(open(path))
    return rows


def report(data="wn18rr", epochs=None):
    """Writes the merged table (markdown) and a bar chart of test MRR, baseline vs CSD
    (of the runs with ``epochs`` epochs; None: the longest schedule present)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = merged_rows(data)
    md = table(rows)
    ep_of = lambda r: r.get("overrides", {}).get("epochs", 5)  # noqa: E731
    epochs = epochs or max(map(ep_of, rows))
    rows = [r for r in rows if ep_of(r) == epochs]
    with open(os.path.join(ROOT, "benchmarks", "results", f"kge_table_{data}_all.md"),
              "w") as f:
        f.write(md + "\n")
    keys = sorted({(r["dim"], r["model"], r.get("overrides", {}).get("lr", 3e-3))
                   for r in rows}, key=lambda k: (k[0], MODELS.index(k[1]), k[2]))
    mrr = {k: {csd: [r["test"]["mrr"] for r in rows if (r["dim"], r["model"], r.get(
        "overrides", {}).get("lr", 3e-3)) == k and r["csd"] == csd] for csd in (0, 1)}
        for k in keys}
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(keys)), 3.2))
    x = np.arange(len(keys))
    for off, csd, label in ((-0.2, 0, "baseline"), (0.2, 1, "CSD-like")):
        ax.bar(x + off, [np.mean(mrr[k][csd]) if mrr[k][csd] else 0 for k in keys], 0.4,
               label=label)
    ax.set_xticks(x, [f"{m}\nd{d} lr{lr:g}" for d, m, lr in keys], fontsize=7)
    ax.set_ylabel("test MRR (filtered)")
    ax.set_title(f"{data}: {epochs} epochs, batch 512, 64 shared negatives; "
                 "mean over seeds")
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.join(ROOT, "docs", "figures"), exist_ok=True)
    fig.savefig(os.path.join(ROOT, "docs", "figures", f"kge_csd_{data}.png"), dpi=120)
    print(md)


if __name__ == "__main__":
    main()
