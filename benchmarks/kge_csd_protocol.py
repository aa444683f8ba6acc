"""CSD against a stable baseline (issue 15): every choice made on validation, test reported
at the selected epoch.

    nice -n 5 python -m benchmarks.kge_csd_protocol --models=distmult,rotate --dims=32
    python -m benchmarks.kge_csd_protocol --report        # table of the finished runs

Per (model, dim), in this order, each run ``configs/kge/kge.py:<model>,<data>,dim=<d>``
with the protocol's overrides: ``--epochs`` epochs, lr ÷10 after half of them
(``train.schedule=step``), validation (whole split) and test every ``--every`` epochs,
the reported epoch chosen by validation MRR (``eval.select=best_valid``: early stopping),
one shared set of 64 negatives per batch of 512 (the CPU budget of the README's table):

  1. baseline: the learning rate from ``--lrs`` and the regularisation weight (N3, the
     config's type) from ``--regs``, chosen together on seed 0's validation MRR ("stable
     baseline"; the chosen lr with weight 0 is the "no regularisation" row);
  2. CSD with the semantic module (``csd.confidence=mlp``: an MLP on the teacher's
     (h, r, t) embeddings and score trained to predict correctness; a reconstruction,
     docs/jaxgraph_kge.md) on top of the stable baseline, λ from ``--lambdas`` chosen on
     seed 0's validation MRR; the ``margin`` confidence over the same λ's is the ablation;
  3. the four rows over ``--seeds`` with the chosen settings.

Each run lives in ``--workdir/<data>/<model>_d<dim>_<variant>_s<seed>`` and is reused when
its ``results.json`` holds the same settings. Stops starting new (model, dim) groups after
``--budget_minutes``. Writes ``benchmarks/results/kge_csd_<data>.json`` (every run: its
overrides, selected epoch, validation and test there, last-epoch test; the choices with
the validation MRR of each candidate) and the table beside it (.md).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from benchmarks.seed_stats import mean_std

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("distmult", "rotate", "complex", "transe", "simple", "tucker")
ROWS = ("no_reg", "baseline", "csd_mlp", "csd_margin")
LABELS = {"no_reg": "no regularisation", "baseline": "stable baseline (reg chosen)",
          "csd_mlp": "CSD, semantic module (λ chosen)",
          "csd_margin": "CSD, margin confidence (λ chosen)"}


def run_config(model, data, dim, seed, *, epochs, every, lr, reg, csd=None, lam=None,
               smoke=False):
    """The ConfigDict of one run (``csd``: None or the confidence variant; ``smoke``: the
    config's ``tiny`` option, a few steps on the generated graph)."""
    from configs.kge.kge import get_config
    c = get_config(f"{model},{data},dim={dim},seed={seed}" + (",csd" if csd else "")
                   + (",tiny" if smoke else ""))
    c.train.shared_negatives = True
    c.train.epochs = epochs
    c.train.lr = float(lr)
    c.train.schedule, c.train.decay_fraction = "step", 0.5
    c.train.regularization = float(reg)
    c.eval.every, c.eval.select, c.eval.valid_max_queries = every, "best_valid", 0
    c.checkpoint_every, c.progress = every, False
    if csd:
        c.csd.confidence, c.csd.weight = csd, float(lam)
    return c


def overrides(c) -> dict:
    """The protocol's settings of a run, as recorded in the results."""
    return {"epochs": int(c.train.epochs), "lr": float(c.train.lr),
            "schedule": f"{c.train.schedule} x0.1 after {c.train.decay_fraction:g}",
            "regularization": float(c.train.regularization), "reg_type": c.train.reg_type,
            "eval_every": int(c.eval.every), "select": c.eval.select,
            "csd": bool(c.csd.enabled), "confidence": c.csd.confidence if c.csd.enabled
            else None, "lambda": float(c.csd.weight) if c.csd.enabled else None,
            "shared_negatives": bool(c.train.shared_negatives)}


def run(c, workdir) -> dict:
    """Trains ``c`` in ``workdir`` (or returns its finished results) and returns a row."""
    from jaxgraph.kge import experiment
    path = os.path.join(workdir, "results.json")
    want = overrides(c)
    if os.path.exists(path):
        with open(path) as f:
            res = json.load(f)
        if res.get("protocol") == want and "selected" in res:
            return res
    t0 = time.perf_counter()
    res = experiment.train_and_evaluate(c, workdir)
    res["wall_seconds"], res["protocol"] = time.perf_counter() - t0, want
    with open(path, "w") as f:
        json.dump(res, f)
    sel = res["selected"]
    print(f"{os.path.basename(workdir)}: selected epoch {sel['epoch']}/{want['epochs']} "
          f"valid MRR {sel['valid']['mrr']:.4f} test MRR {sel['test']['mrr']:.4f} "
          f"(last epoch test {res['test']['mrr']:.4f}; {res['wall_seconds']:.0f} s)",
          flush=True)
    return res


def group(model, dim, a) -> dict:
    """Choices and rows of one (model, dim)."""
    base = os.path.join(a.workdir, a.data)

    def go(seed, variant, **kw):
        c = run_config(model, a.data, dim, seed, epochs=a.epochs, every=a.every,
                       smoke=a.smoke, **kw)
        return run(c, os.path.join(base, f"{model}_d{dim}_{variant}_s{seed}"))

    valid = lambda r: r["selected"]["valid"]["mrr"]
    lrs = [float(x) for x in a.lrs.split(",")]
    regs = [float(x) for x in a.regs.split(",")]
    lams = [float(x) for x in a.lambdas.split(",")]
    name = lambda lr, reg: f"lr{lr:g}_reg{reg:g}"
    base_runs = {(lr, reg): go(0, name(lr, reg), lr=lr, reg=reg) for lr in lrs for reg in regs}
    lr, reg = max(base_runs, key=lambda k: (valid(base_runs[k]), -k[1], -k[0]))  # ties: weaker
    csd_runs = {(conf, lam): go(0, f"{name(lr, reg)}_{conf}{lam:g}", lr=lr, reg=reg, csd=conf,
                                lam=lam)
                for conf in ("mlp", "margin") for lam in lams}
    lam = {conf: max(lams, key=lambda x: (valid(csd_runs[(conf, x)]), -x))
           for conf in ("mlp", "margin")}
    settings = {"no_reg": dict(reg=0.0), "baseline": dict(reg=reg),
                "csd_mlp": dict(reg=reg, csd="mlp", lam=lam["mlp"]),
                "csd_margin": dict(reg=reg, csd="margin", lam=lam["margin"])}
    rows = {}
    for row, kw in settings.items():
        variant = name(lr, kw["reg"]) + (f"_{kw['csd']}{kw['lam']:g}" if "csd" in kw else "")
        rows[row] = [go(s, variant, lr=lr, **kw) for s in a.seed_list]
    return {"model": model, "dim": dim,
            "choices": {"lr": lr, "regularization": reg, "lambda": lam,
                        "valid_mrr_by_lr_reg": {name(*k): valid(x)
                                                for k, x in base_runs.items()},
                        "valid_mrr_by_csd": {f"{c}:{x:g}": valid(r)
                                             for (c, x), r in csd_runs.items()}},
            "rows": rows}


def _stat(rows, key):
    return mean_std([key(r) for r in rows])


def summarise(groups) -> list:
    out = []
    for g in groups:
        for row, runs in g["rows"].items():
            out.append({"model": g["model"], "dim": g["dim"], "row": row,
                        "seeds": [r["seed"] for r in runs],
                        "test_mrr": _stat(runs, lambda r: r["selected"]["test"]["mrr"]),
                        "test_hits@10": _stat(runs, lambda r: r["selected"]["test"]["hits@10"]),
                        "last_epoch_test_mrr": _stat(runs, lambda r: r["test"]["mrr"]),
                        "selected_epochs": [r["selected"]["epoch"] for r in runs],
                        "settings": runs[0]["protocol"]})
    return out


def render(report) -> str:
    pm = lambda s: f"{s['mean']:.3f} ± {s['std']:.3f}"
    lines = ["| backbone | dim | row | settings | test MRR (selected epoch) | Hits@10 | "
             "last-epoch test MRR | selected epochs |", "|---|---|---|---|---|---|---|---|"]
    for r in report["summary"]:
        s = r["settings"]
        setting = f"lr {s['lr']:g}, reg {s['regularization']:g}" + (
            f", λ {s['lambda']:g}" if s["csd"] else "")
        lines.append(f"| {r['model']} | {r['dim']} | {LABELS[r['row']]} | {setting} | "
                     f"{pm(r['test_mrr'])} | {pm(r['test_hits@10'])} | "
                     f"{pm(r['last_epoch_test_mrr'])} | "
                     f"{', '.join(map(str, r['selected_epochs']))} |")
    p = report["protocol"]
    lines += ["", f"{report['data']}; seeds {p['seeds']}; {p['epochs']} epochs, lr ÷10 after "
              f"epoch {p['epochs'] // 2}, validation and test every {p['every']} epochs, "
              f"test at the epoch of the best validation MRR; lr {p['lrs']} × "
              f"regularisation {p['regs']}, then λ {p['lambdas']}, chosen on seed 0's "
              f"validation MRR. "
              f"{report['hardware']}; {report['wall_minutes']:.0f} min."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="wn18rr")
    ap.add_argument("--models", default="distmult,rotate")
    ap.add_argument("--dims", default="32")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--lrs", default="0.003,0.01")
    ap.add_argument("--regs", default="0,1e-4,1e-3")
    ap.add_argument("--lambdas", default="0.1,1")
    ap.add_argument("--budget_minutes", type=float, default=600.0)
    ap.add_argument("--hardware", default="2 CPU cores")
    ap.add_argument("--workdir", default=os.path.join(ROOT, "runs", "kge_csd"))
    ap.add_argument("--out", default="")
    ap.add_argument("--report", action="store_true", help="only print --out's table")
    ap.add_argument("--smoke", action="store_true",
                    help="the configs' tiny option (generated graph; checks the harness)")
    a = ap.parse_args(argv)
    a.out = a.out or os.path.join(ROOT, "benchmarks", "results", f"kge_csd_{a.data}.json")
    if a.report:
        with open(a.out) as f:
            print(render(json.load(f)))
        return
    bad = sorted(set(a.models.split(",")) - set(MODELS))
    if bad:
        raise SystemExit(f"unknown models {bad}; accepted: {', '.join(MODELS)}")
    if a.every < 1 or a.epochs < a.every:
        raise SystemExit(f"--every={a.every} with --epochs={a.epochs}; accepted: "
                         "1 <= every <= epochs")
    from jaxinfra.cli import quiet_absl_logging
    quiet_absl_logging()
    a.seed_list = [int(s) for s in a.seeds.split(",")]
    if a.seed_list[0] != 0:
        raise SystemExit(f"--seeds={a.seeds}: the choices are made on seed 0; accepted: "
                         "a list starting with 0")
    t0, groups = time.perf_counter(), []
    for dim in map(int, a.dims.split(",")):
        for model in a.models.split(","):
            if (time.perf_counter() - t0) / 60 > a.budget_minutes:
                print(f"budget spent: {model} d{dim} not started", flush=True)
                continue
            groups.append(group(model, dim, a))
            report = {"data": a.data, "hardware": a.hardware,
                      "wall_minutes": (time.perf_counter() - t0) / 60,
                      "protocol": {"epochs": a.epochs, "every": a.every, "lrs": a.lrs,
                                   "regs": a.regs, "lambdas": a.lambdas,
                                   "seeds": a.seed_list},
                      "groups": groups, "summary": summarise(groups)}
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            with open(a.out, "w") as f:
                json.dump(report, f, indent=1)
            with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
                f.write(render(report) + "\n")
            print(render(report), flush=True)


if __name__ == "__main__":
    main()
