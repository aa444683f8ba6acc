"""OAD table: each student alone vs in OAD vs OAD without its local / global term.

    nice -n 5 python benchmarks/oad_table.py --workdir=runs/oad_table
    python benchmarks/oad_table.py --workdir=runs/oad_table --only=cora:gcn:oad  # one cell

Every cell is ``python -m jaxgraph.oad`` with ``configs/gnn/oad_<data>.py:<arch>,<variant>,
seeds=<n>`` (seeds trained together, vmapped); finished cells are read back from their
``result.json`` so the script resumes. Writes benchmarks/results/oad_table.{json,md}.
Test accuracy is selected on validation accuracy per student (never on test).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.gnn.oad_common import oad_config  # noqa: E402
from jaxgraph.oad import run_oad  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
VARIANTS = ("alone", "oad", "nolocal", "noglobal")
# (dataset, arch, variant, extra options), in priority order.
PLAN = ([("cora", "gcn", v, "") for v in VARIANTS]
        + [("citeseer", "gcn", v, "") for v in VARIANTS]
        + [("cora", "gcn", v, "code") for v in ("alone", "oad")]
        + [(d, "sage", v, "") for d in ("cora", "citeseer") for v in ("alone", "oad")]
        + [(d, "gat", v, "") for d in ("cora", "citeseer") for v in ("alone", "oad")]
        + [(d, "mix", v, "") for d in ("cora", "citeseer") for v in ("oad", "nolocal", "noglobal")]
        + [(d, "sage", v, "") for d in ("cora", "citeseer") for v in ("nolocal", "noglobal")]
        + [(d, "gat", v, "") for d in ("cora", "citeseer") for v in ("nolocal", "noglobal")])
PUBLISHED = {"gcn": {"cora": 81.5, "citeseer": 70.3}, "gat": {"cora": 83.0, "citeseer": 72.5}}


def cell_name(d, a, v, extra):
    return f"{d}_{a}_{v}" + (f"_{extra}" if extra else "")


def run_cell(workdir, d, a, v, extra, seeds):
    path = os.path.join(workdir, cell_name(d, a, v, extra))
    done = os.path.join(path, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            return json.load(f)
    opts = ",".join(filter(None, [a, "" if v == "oad" else v, extra, f"seeds={seeds}"]))
    config = oad_config(d, opts)
    config.progress = False
    t0 = time.time()
    res = run_oad(config, path)
    res["wall_seconds"] = time.time() - t0
    res["config_options"] = opts
    with open(done, "w") as f:
        json.dump(res, f, indent=1)
    return res


def students_label(r):
    """``gcn×4`` for a uniform group, ``gcn+sage+gcn+sage`` for a mixed one."""
    st = r["students"]
    return f"{st[0]}×{len(st)}" if len(set(st)) == 1 else "+".join(st)


def per_arch(r):
    """Mean test accuracy (%) of each architecture's students in a mixed group."""
    st = r["students"]
    if len(set(st)) == 1 or "per_seed" not in r:
        return ""
    import numpy as np
    test = np.asarray(r["per_seed"]["student_test"])          # (seeds, students)
    return ", ".join(f"{a} {100 * test[:, [i for i, s in enumerate(st) if s == a]].mean():.1f}"
                     for a in dict.fromkeys(st))


def table(results):
    lines = ["| data | students | variant | mean student | best student (by val) | "
             "max over students (as coded) | per architecture | seeds | wall s |",
             "|" + "---|" * 9]
    for r in results:
        s = r["stats"]
        fmt = lambda k: f"{100 * s[k]['mean']:.1f} ± {100 * s[k]['std']:.1f}"  # noqa: E731
        lines.append(f"| {r['dataset']} | {students_label(r)} | "
                     f"{r['variant']} | {fmt('mean_student')} | {fmt('best_student')} | "
                     f"{fmt('max_student_coded')} | {per_arch(r)} | {s['mean_student']['n']} | "
                     f"{r.get('wall_seconds', float('nan')):.0f} |")
    return "\n".join(lines)


def plot(results, path):
    """Bar chart of mean-student test accuracy (± std over seeds) per cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * len(results)), 3.6))
    names = [f"{r['dataset']}\n{students_label(r)}\n{r['variant']}" for r in results]
    means = [100 * r["stats"]["mean_student"]["mean"] for r in results]
    stds = [100 * r["stats"]["mean_student"]["std"] for r in results]
    ax.bar(range(len(results)), means, yerr=stds, capsize=3,
           color=["C0" if r["dataset"] == "cora" else "C1" for r in results])
    ax.set_xticks(range(len(results)), names, fontsize=6)
    ax.set_ylim(min(means) - 3, max(means) + 2)
    ax.set_ylabel("test accuracy (%), mean student")
    ax.set_title("OAD vs students alone (selected on validation; mean ± std over seeds)",
                 fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default="runs/oad_table")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--gat_seeds", type=int, default=10)
    p.add_argument("--only", default="", help="data:arch:variant[:extra], comma-separated")
    args = p.parse_args()
    plan = PLAN
    if args.only:
        plan = [tuple((c.split(":") + [""])[:4]) for c in args.only.split(",")]
    os.makedirs(RESULTS, exist_ok=True)
    out_json = os.path.join(RESULTS, "oad_table.json")
    results = []
    if os.path.exists(out_json):
        with open(out_json) as f:
            results = json.load(f)["cells"]
    for d, a, v, extra in plan:
        seeds = args.gat_seeds if a == "gat" else args.seeds
        r = run_cell(args.workdir, d, a, v, extra, seeds)
        r["variant"] = v + (f" ({extra})" if extra else "")
        r.pop("per_seed_raw", None)
        results = [x for x in results if x.get("cell") != cell_name(d, a, v, extra)]
        r["cell"] = cell_name(d, a, v, extra)
        results.append(r)
        order = {cell_name(*c): i for i, c in enumerate(PLAN)}
        results.sort(key=lambda x: order.get(x["cell"], 1e9))
        with open(out_json, "w") as f:
            json.dump({"command": "python benchmarks/oad_table.py", "published": PUBLISHED,
                       "cells": results}, f, indent=1)
        with open(os.path.join(RESULTS, "oad_table.md"), "w") as f:
            f.write(table(results) + "\n")
        plot(results, os.path.join(os.path.dirname(RESULTS), "..", "docs", "figures",
                                   "oad_table.png"))
        print(r["cell"], {k: round(100 * x["mean"], 2) for k, x in r["stats"].items()},
              flush=True)


if __name__ == "__main__":
    main()
