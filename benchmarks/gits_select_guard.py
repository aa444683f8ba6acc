"""Which GITS ``select`` decisions the significance guard changes (issue 14).

    python -m benchmarks.gits_select_guard                  # ~25 min on 2 CPU cores
    python -m benchmarks.gits_select_guard --cases=digits   # the digits regimes only

For each regime of the README's comparison tables, on the same warm-up noises as
``jaxdiff.compare`` (teacher iPNDM-4 on the 61-point polynomial grid), and for both
students of the tables (``ipndm`` for iPNDM+GITS, ``euler`` for DDIM+GITS) at NFE 3-10,
it records the candidate ``gits.select_schedule`` keeps with ``significance=0`` (the plain
minimum over the warm-up noises) and with the config's ``gits_significance`` (2), and the
best DP schedule's gain over the base schedule: its mean and standard error over the
warm-up noises (paired).
Only the warm-up side is computed; where a decision changes, rerun ``jaxdiff.compare``
for the evaluation rows. Writes benchmarks/results/gits_select_guard.json.

Regimes whose network is missing (``runs/`` does not survive a new checkout; train them
as the README says) stop the script with the training command.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os

# name: (config module, config flags, regime, edm_workdir, gits_warmup override)
CASES = {
    "digits_gmm": ("compare_digits", None, "gmm", None, None),
    "digits_optimal": ("compare_digits", None, "optimal", None, None),
    "digits_unet": ("compare_digits", "edm_only", "edm", "runs/edm_digits", None),
    "fashion_gmm": ("compare_fashion_mnist", None, "gmm", None, None),
    "fashion_optimal": ("compare_fashion_mnist", None, "optimal", None, None),
    "fashion_unet": ("compare_fashion_mnist", "edm_only", "edm", "runs/edm_fashion", 128),
    "fashion_unet_wide": ("compare_fashion_mnist", "edm_only", "edm",
                          "runs/edm_fashion_wide", 128),
}


def decisions(denoise, x_warm, cfg):
    """{student: {nfe: {plain, guarded, gain, gain_se}}} for one regime."""
    import numpy as np

    from jaxdiff import gits, schedules

    grid = np.asarray(schedules.get("polynomial", cfg.gits_grid))
    run = gits.run_teacher(denoise, x_warm, grid, teacher="ipndm",
                           teacher_options={"max_order": 4}, metrics=("dev", "l2"))
    out = {}
    for student in ("ipndm", "euler"):
        out[student] = {}
        for nfe in cfg.nfes:
            plain, guarded = (
                gits.select_schedule(denoise, run, nfe + 1, coeff=cfg.gits_coeff,
                                     candidates=tuple(cfg.gits_candidates), student=student,
                                     significance=k)
                for k in (0.0, cfg.gits_significance))
            out[student][str(nfe)] = {"plain": plain.selected, "guarded": guarded.selected,
                                      "gain": plain.gain[0], "gain_se": plain.gain[1]}
    return out


def main(argv=None):
    from jaxdiff.experiments import bench, compare

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="", help="substrings of case names; empty: all")
    p.add_argument("--out", default="benchmarks/results/gits_select_guard.json")
    args = p.parse_args(argv)
    wanted = [c for c in CASES if not args.cases or any(w in c for w in args.cases.split(","))]
    results = {}
    for name in wanted:
        module, flags, regime, workdir, warmup = CASES[name]
        cfg = importlib.import_module(f"configs.{module}").get_config(flags)
        if workdir:
            cfg.edm_workdir = workdir
        if warmup:
            cfg.gits_warmup = warmup
        _, images = bench.load_images(cfg)
        denoise, _, _ = compare.load_regime(regime, images, cfg)
        x_warm, _ = compare.noises(cfg, images.shape[1:])
        results[name] = {"config": f"configs/{module}.py" + (f":{flags}" if flags else ""),
                         "regime": regime, "edm_workdir": workdir,
                         "warmup": cfg.gits_warmup, "decisions": decisions(denoise, x_warm, cfg)}
        changed = [(s, n) for s, rows in results[name]["decisions"].items()
                   for n, r in rows.items() if r["plain"] != r["guarded"]]
        print(f"{name}: changed {changed}", flush=True)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
