"""GITS on scikit-learn's digits: iPNDM and DDIM, polynomial vs GITS schedules, NFE 3..10.

    python -m benchmarks.gits_digits --out=benchmarks/results/gits_digits.json
    python -m benchmarks.gits_digits --out=/tmp/g.json --quick        # smoke run

Two exact denoisers, no training: a 20-component diagonal GMM fitted to the 1797 digits
(64-d, [-1, 1]) and the empirical data's optimal denoiser. GITS searches with the
reference defaults (61-point polynomial rho = 7 grid, iPNDM-4 teacher, dev metric,
coeff 1.15) from 256 warm-up noises; every solver is then evaluated from 256 *other*
noises against a converged reference (Heun, 513 timestamps; its change when halved is
reported). Error = mean per-sample L2 distance. Extra columns: the GITS AFS variant
(``search(afs=True)``, sampled with ``afs=True`` at the same NFE) next to the polynomial
schedule with AFS at the same NFE, and GITS with the l2 metric. The search cost is the
teacher's denoiser calls and the wall time of one ``search`` call (first call of each
regime includes compilation). Writes the JSON to ``--out`` and a markdown table next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff
from jaxdiff import data as data_lib
from jaxdiff import denoisers, gits, schedules

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
COLUMNS = (  # (key, solver, schedule, afs)
    ("ipndm_poly", "ipndm", "poly", False),
    ("ipndm_gits", "ipndm", "gits", False),
    ("euler_poly", "euler", "poly", False),
    ("euler_gits", "euler", "gits", False),
    ("ipndm_poly_afs", "ipndm", "poly", True),
    ("ipndm_gits_afs", "ipndm", "gits_afs", True),
    ("ipndm_gits_l2", "ipndm", "gits_l2", False),
)


def mean_l2(a, b) -> float:
    return float(jnp.mean(jnp.linalg.norm((a - b).reshape(a.shape[0], -1), axis=1)))


def build_denoiser(regime: str, flat: np.ndarray, components: int, seed: int):
    if regime == "gmm":
        return denoisers.gaussian_mixture(*denoisers.fit_gaussian_mixture(flat, components,
                                                                          seed=seed))
    return denoisers.optimal(flat, chunk=2048)


def run_regime(regime, flat, cfg, x_warm, x_eval):
    den = build_denoiser(regime, flat, cfg["components"], cfg["seed"])
    t0 = time.perf_counter()
    ref = jaxdiff.sample(den, x_eval, schedules.get("polynomial", cfg["reference_steps"],
                                                    SIGMA_MIN, SIGMA_MAX), solver="heun")
    half = jaxdiff.sample(den, x_eval, schedules.get(
        "polynomial", (cfg["reference_steps"] + 1) // 2, SIGMA_MIN, SIGMA_MAX), solver="heun")
    reference = {"solver": "heun", "num_steps": cfg["reference_steps"],
                 "change_when_halved": mean_l2(ref, half),
                 "seconds": time.perf_counter() - t0}
    rows = []
    for nfe in cfg["nfes"]:
        n = nfe + 1
        search_kw = dict(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, batch_size=cfg["batch"],
                         return_info=True)
        s_gits, info = gits.search(den, x_warm, n, metric="dev", **search_kw)
        s_afs, info_afs = gits.search(den, x_warm, n, metric="dev", afs=True,
                                      student="ipndm", **search_kw)
        s_l2, info_l2 = gits.search(den, x_warm, n, metric="l2", **search_kw)
        scheds = {"poly": schedules.get("polynomial", n, SIGMA_MIN, SIGMA_MAX),
                  "gits": s_gits, "gits_afs": s_afs, "gits_l2": s_l2}
        row = {"regime": regime, "nfe": nfe, "num_steps": n,
               "gits_indices": info.indices.tolist(),
               "gits_sigmas": np.asarray(s_gits).tolist(),
               "gits_afs_indices": info_afs.indices.tolist(),
               "gits_l2_indices": info_l2.indices.tolist(),
               "search_seconds": info.seconds, "search_afs_seconds": info_afs.seconds,
               "search_teacher_nfe": info.teacher_nfe,
               "search_model_calls": info.model_calls,
               "search_afs_model_calls": info_afs.model_calls,
               "dev_cost_negative_fraction": float(np.mean(
                   info.cost[np.triu_indices(len(info.grid), 1)] < 0)),
               "errors": {}}
        for key, solver, sched, afs in COLUMNS:
            sig = scheds[sched]
            if sched == "poly" and afs:
                sig = schedules.get("polynomial", n + 1, SIGMA_MIN, SIGMA_MAX)
            if sched == "gits_afs" and info_afs.afs_index is None:
                afs = False  # no grid point was inserted: plain GITS schedule
            out = jaxdiff.sample(den, x_eval, sig, solver=solver, afs=afs)
            assert jaxdiff.nfe(solver, len(sig), afs=afs) == nfe, (key, len(sig), afs)
            row["errors"][key] = mean_l2(out, ref)
        rows.append(row)
        e = row["errors"]
        print(f"{regime:7s} NFE {nfe:2d}  ipndm poly {e['ipndm_poly']:.4f} gits "
              f"{e['ipndm_gits']:.4f} | ddim poly {e['euler_poly']:.4f} gits "
              f"{e['euler_gits']:.4f} | afs poly {e['ipndm_poly_afs']:.4f} gits "
              f"{e['ipndm_gits_afs']:.4f} | l2 {e['ipndm_gits_l2']:.4f}  {info.indices}  "
              f"search {info.seconds:.2f}s", flush=True)
    return {"reference": reference, "rows": rows}


def markdown(report) -> str:
    cfg = report["config"]
    lines = [
        "# GITS on digits: mean L2 error to a converged reference",
        "",
        f"scikit-learn digits (1797 x 64, [-1, 1]); sigma {SIGMA_MAX:g} -> {SIGMA_MIN:g}, no "
        f"final step to 0; {cfg['num_warmup']} warm-up noises for the search, "
        f"{cfg['num_eval']} different noises for evaluation; float64. GITS: 61-point "
        "polynomial (rho 7) grid, iPNDM-4 teacher (60 NFE per trajectory), metric dev, "
        "coeff 1.15; the same schedule serves iPNDM and DDIM. Lower is better; **bold** = "
        "GITS better than polynomial for that solver. AFS columns sample with the analytic "
        "first step at the same NFE (polynomial with one more timestamp; GITS with the "
        "AFS variant's inserted timestamp).",
        "",
    ]
    for regime, res in report["regimes"].items():
        ref = res["reference"]
        lines += [
            f"## {regime} denoiser",
            "",
            f"Reference: Heun, {ref['num_steps']} timestamps; change when halved "
            f"{ref['change_when_halved']:.1e}.",
            "",
            "| NFE | iPNDM poly | iPNDM+GITS | DDIM poly | DDIM+GITS | iPNDM poly AFS | "
            "iPNDM+GITS AFS | iPNDM+GITS (l2) | GITS indices | search s | dev C<0 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for r in res["rows"]:
            e = r["errors"]

            def pair(a, b):
                win = e[b] < e[a]
                return f"{e[a]:.4f} | " + (f"**{e[b]:.4f}**" if win else f"{e[b]:.4f}")

            lines.append(
                f"| {r['nfe']} | {pair('ipndm_poly', 'ipndm_gits')} | "
                f"{pair('euler_poly', 'euler_gits')} | "
                f"{pair('ipndm_poly_afs', 'ipndm_gits_afs')} | {e['ipndm_gits_l2']:.4f} | "
                f"{r['gits_indices']} | {r['search_seconds']:.2f} | "
                f"{100 * r['dev_cost_negative_fraction']:.1f}% |")
        r0 = res["rows"][0]
        lines += [
            "",
            f"Search cost per call: {r0['search_teacher_nfe']} NFE per teacher trajectory, "
            f"{r0['search_model_calls']} per-sample denoiser calls in all "
            f"({cfg['num_warmup']} trajectories); the AFS variant also runs the student "
            f"once per candidate timestamp on the last batch ({r0['search_afs_model_calls']} "
            f"calls in all at NFE {r0['nfe']}). Wall time "
            f"{min(r['search_seconds'] for r in res['rows']):.2f}-"
            f"{max(r['search_seconds'] for r in res['rows']):.2f} s (the first includes "
            "compilation).",
            "",
        ]
    env = report["environment"]
    lines += [f"Machine: {env['cpu_count']} CPUs, {env['platform']}, jax {env['jax']}. "
              f"Total {report['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def run(out: str, quick: bool = False, seed: int = 0) -> dict:
    jax.config.update("jax_enable_x64", True)
    t0 = time.perf_counter()
    cfg = {"quick": quick, "seed": seed, "components": 20,
           "num_warmup": 32 if quick else 256, "num_eval": 32 if quick else 256,
           "batch": 256, "reference_steps": 65 if quick else 513,
           "nfes": [4, 6] if quick else list(range(3, 11)), "dtype": "float64",
           "regimes": ["gmm", "optimal"]}
    images, _ = data_lib.load_digits()
    flat = np.asarray(images, np.float64).reshape(images.shape[0], -1)
    k_warm, k_eval = jax.random.split(jax.random.PRNGKey(seed))
    x_warm = SIGMA_MAX * jax.random.normal(k_warm, (cfg["num_warmup"], flat.shape[1]),
                                           jnp.float64)
    x_eval = SIGMA_MAX * jax.random.normal(k_eval, (cfg["num_eval"], flat.shape[1]),
                                           jnp.float64)
    report = {"benchmark": "gits_digits", "config": cfg, "regimes": {},
              "environment": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                              "jax": jax.__version__, "device": str(jax.devices()[0])}}
    for regime in cfg["regimes"]:
        report["regimes"][regime] = run_regime(regime, flat, cfg, x_warm, x_eval)
    report["seconds"] = time.perf_counter() - t0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    print(md)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/gits_digits.json")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    run(a.out, quick=a.quick, seed=a.seed)


if __name__ == "__main__":
    main()
