"""OAD table: each student alone vs in OAD vs OAD without its local / global term.

    nice -n 5 python benchmarks/oad_table.py --workdir=runs/oad_table_v2
    python benchmarks/oad_table.py --workdir=runs/oad_table_v2 --only=cora:gcn:oad  # one cell
    python benchmarks/oad_table.py --only=cora:gat:oad:gan=0.1   # extra options as 4th part

Every cell is ``python -m jaxgraph.oad`` with ``configs/gnn/oad_<data>.py:<arch>,<variant>,
<extra>,seeds=<n>`` (seeds trained together, vmapped); finished cells are read back from
their ``result.json`` so the script resumes. Writes benchmarks/results/oad_table.{json,md}
and docs/figures/oad_table.png. Test accuracy is selected on validation accuracy per student
(never on test), among the OKD epochs of an OAD run (all epochs of an "alone" run); the
mean student's test accuracy at the last epoch is shown too.

Cells measured before that selection rule (``result.json`` without
``selection_from_epoch``; they selected over all epochs, warm-up included) stay in the JSON
until rerun and are marked "pre-fix" in the table; a workdir holding such a cell is refused
(use a new one).
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
        + [(d, "gat", "oad", "gan=0.1") for d in ("cora", "citeseer")]
        + [(d, "mix", v, "") for d in ("cora", "citeseer") for v in ("oad", "nolocal", "noglobal")]
        + [(d, "sage", v, "") for d in ("cora", "citeseer") for v in ("nolocal", "noglobal")]
        + [(d, "gat", v, "") for d in ("cora", "citeseer") for v in ("nolocal", "noglobal")])
PUBLISHED = {"gcn": {"cora": 81.5, "citeseer": 70.3}, "gat": {"cora": 83.0, "citeseer": 72.5}}


def cell_name(d, a, v, extra):
    return f"{d}_{a}_{v}" + (f"_{extra}" if extra else "")


def has_okd_terms(r):
    return bool(r.get("gan_trade")) or bool(r.get("logitkd_trade"))


def pre_fix(r):
    """True for an OAD cell measured before the selection among OKD epochs (it selected
    over all epochs, warm-up included). "alone" cells select over all epochs either way."""
    return "selection_from_epoch" not in r and has_okd_terms(r)


def run_cell(workdir, d, a, v, extra, seeds):
    path = os.path.join(workdir, cell_name(d, a, v, extra))
    done = os.path.join(path, "result.json")
    if os.path.exists(done):
        with open(done) as f:
            res = json.load(f)
        if pre_fix(res):
            raise SystemExit(f"{done} was measured before the selection among OKD epochs "
                             "(it selects over all epochs); use a new --workdir")
        return res
    opts = ",".join(filter(None, [a, "" if v == "oad" else v, extra, f"seeds={seeds}"]))
    config = oad_config(d, opts)
    config.progress = False
    load_before = os.getloadavg()[0]
    t0 = time.time()
    res = run_oad(config, path)
    res["wall_seconds"] = time.time() - t0
    res["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    res["finished_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
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


def selection_label(r):
    """Which epochs the cell's selection ran over."""
    if pre_fix(r):
        return "all epochs (PRE-FIX)"
    start = r.get("selection_from_epoch", 0)
    return f"OKD epochs (≥ {start})" if start else "all epochs"


def table(results):
    lines = ["| data | students | variant | selected from | mean student | "
             "best student (by val) | max over students (as coded) | "
             "mean student, last epoch | per architecture | seeds | wall s | load avg |",
             "|" + "---|" * 12]
    for r in results:
        s = r["stats"]

        def fmt(k):
            if k not in s:
                return "not recorded"
            return f"{100 * s[k]['mean']:.1f} ± {100 * s[k]['std']:.1f}"

        load = r.get("load_average")
        lines.append(f"| {r['dataset']} | {students_label(r)} | "
                     f"{r['variant']} | {selection_label(r)} | {fmt('mean_student')} | "
                     f"{fmt('best_student')} | {fmt('max_student_coded')} | "
                     f"{fmt('mean_student_last')} | {per_arch(r)} | "
                     f"{s['mean_student']['n']} | {r.get('wall_seconds', float('nan')):.0f} | "
                     f"{'-'.join(f'{x:.1f}' for x in load) if load else ''} |")
    if any(pre_fix(r) for r in results):
        lines.append("")
        lines.append("PRE-FIX: measured by the old code, which selected over all epochs "
                     "(warm-up included); not comparable with the other OAD rows until rerun.")
    return "\n".join(lines)


def plot(results, path):
    """Bar chart of mean-student test accuracy (± std over seeds) per cell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(8.0, 0.42 * len(results)), 3.8))
    short = lambda r: "mix" if len(set(r["students"])) > 1 else students_label(r)  # noqa: E731
    names = [f"{r['dataset']}\n{short(r)}\n{r['variant']}"
             + ("\nPRE-FIX" if pre_fix(r) else "") for r in results]
    means = [100 * r["stats"]["mean_student"]["mean"] for r in results]
    stds = [100 * r["stats"]["mean_student"]["std"] for r in results]
    bars = ax.bar(range(len(results)), means, yerr=stds, capsize=3,
                  color=["C0" if r["dataset"] == "cora" else "C1" for r in results])
    for b, r in zip(bars, results):
        if pre_fix(r):
            b.set_hatch("///")
            b.set_alpha(0.45)
    last = [(i, 100 * r["stats"]["mean_student_last"]["mean"])
            for i, r in enumerate(results) if "mean_student_last" in r["stats"]]
    if last:
        ax.plot(*zip(*last), "kv", ms=4, ls="none", label="mean student, last epoch")
        ax.legend(fontsize=6, loc="lower right")
    low = min(means + [v for _, v in last])
    ax.set_xticks(range(len(results)), names, fontsize=5)
    ax.set_ylim(low - 3, max(means) + 2)
    ax.set_ylabel("test accuracy (%), mean student")
    ax.set_title("OAD vs students alone (selected on validation, among OKD epochs for OAD; "
                 "mean ± std over seeds; hatched: pre-fix selection over all epochs)",
                 fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default="runs/oad_table_v2")
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
        for old in (x for x in results if x.get("cell") == cell_name(d, a, v, extra)):
            if "pre_fix_stats" in old or pre_fix(old):    # keep the old numbers beside
                r["pre_fix_stats"] = old.get("pre_fix_stats", old["stats"])
        results = [x for x in results if x.get("cell") != cell_name(d, a, v, extra)]
        r["cell"] = cell_name(d, a, v, extra)
        results.append(r)
        order = {cell_name(*c): i for i, c in enumerate(PLAN)}
        results.sort(key=lambda x: order.get(x["cell"], 1e9))
        with open(out_json, "w") as f:
            json.dump({"command": "python benchmarks/oad_table.py", "published": PUBLISHED,
                       "note": "cells without selection_from_epoch whose gan_trade or "
                               "logitkd_trade is non-zero are PRE-FIX: selected over all "
                               "epochs (warm-up included) by the old code",
                       "cells": results}, f, indent=1)
        with open(os.path.join(RESULTS, "oad_table.md"), "w") as f:
            f.write(table(results) + "\n")
        plot(results, os.path.join(os.path.dirname(RESULTS), "..", "docs", "figures",
                                   "oad_table.png"))
        print(r["cell"], {k: round(100 * x["mean"], 2) for k, x in r["stats"].items()},
              flush=True)


if __name__ == "__main__":
    main()
