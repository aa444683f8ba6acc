"""Is the network's first call (sigma 80) worse than the centred analytic step? (issue 14)

    python -m benchmarks.afs_first_call                        # ~15 min on 2 CPU cores
    python -m benchmarks.afs_first_call --cases=digits_unet    # ~3 min

AMED-Solver and the AMED-Plugin take AFS at odd NFE, so NFE 2k - 1 and 2k run the same
schedule and differ only in the first call: the analytic step at odd NFE, the network at
even NFE. If the network were poor at sigma 80, the odd row would beat the even one for
that reason alone. This measures it without any training: plain iPNDM (the tables'
settings) on the same polynomial schedules of 3..6 timestamps, with the network's first
call, with AFS centred on the data mean and with plain AFS (D = 0), on the evaluation
noises of ``jaxdiff.compare`` (mean L2 error to its converged reference). It also records
the network's mean distance at sigma 80 to the data mean (what the exact denoiser gives
there). Writes benchmarks/results/afs_first_call.json.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os

from benchmarks.gits_select_guard import CASES

DEFAULT_CASES = "digits_unet,fashion_unet_wide"


def first_call_errors(denoise, x_eval, reference, mean, timestamps):
    """{timestamps: {network, afs_data_mean, afs_zero}} mean L2 errors of iPNDM."""
    import jaxdiff
    from jaxdiff import schedules
    from jaxdiff.experiments import bench

    sched, kw, opts = bench.SOLVER_SETTINGS["ipndm"]
    out = {}
    for n in timestamps:
        sigmas = schedules.get(sched, n, **kw)
        out[str(n)] = {
            label: bench.mean_l2(jaxdiff.sample(denoise, x_eval, sigmas, solver="ipndm",
                                                afs=afs, afs_mean=m, **opts), reference)
            for label, afs, m in (("network", False, None), ("afs_data_mean", True, mean),
                                  ("afs_zero", True, None))}
    return out


def main(argv=None):
    import jax.numpy as jnp

    from jaxdiff.experiments import bench, compare

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"names from {sorted(CASES)}")
    p.add_argument("--out", default="benchmarks/results/afs_first_call.json")
    args = p.parse_args(argv)
    results = {}
    for name in args.cases.split(","):
        if name not in CASES or CASES[name][2] != "edm":
            raise SystemExit(f"unknown case {name!r}; valid: "
                             f"{sorted(c for c, v in CASES.items() if v[2] == 'edm')}")
        module, flags, regime, workdir, _ = CASES[name]
        cfg = importlib.import_module(f"configs.{module}").get_config(flags)
        cfg.edm_workdir = workdir
        _, images = bench.load_images(cfg)
        denoise, _, _ = compare.load_regime(regime, images, cfg)
        _, x_eval = compare.noises(cfg, images.shape[1:])
        reference, change = bench.converged_reference(denoise, x_eval, cfg.reference_steps)
        mean = bench.afs_mean("data", images, denoise)
        d80 = denoise(x_eval, jnp.full((x_eval.shape[0],), 80.0, x_eval.dtype))
        results[name] = {
            "config": f"configs/{module}.py:{flags}", "edm_workdir": workdir,
            "reference_change_when_halved": change,
            "network_at_80_to_data_mean": bench.mean_l2(d80, jnp.broadcast_to(mean, d80.shape)),
            "ipndm_by_timestamps": first_call_errors(denoise, x_eval, reference, mean,
                                                     range(3, 7))}
        print(name, json.dumps(results[name]), flush=True)
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
