"""Train AMED predictors and compare them with their base solver at equal NFE.

    python -m jaxdiff.amed_train --config=configs/amed_digits.py --workdir=runs/amed_digits

For each NFE in the config: a predictor is trained against teacher trajectories, saved
with Orbax under ``workdir/nfe<k>``, and evaluated on held-out noise: mean L2 error to a
converged Heun reference, next to the base solver (its own schedule, same NFE).
Writes results.json and metrics.jsonl (one line per training batch).
"""
from __future__ import annotations

import json
import os
import time

import jax
from tqdm import tqdm

import jaxdiff
from jaxdiff import schedules
from jaxdiff.experiments import bench
from jaxdiff.training import amed as amed_training
from jaxinfra import config_checks


def run(cfg, workdir: str) -> dict:
    config_checks.one_of(cfg, "afs_mean", bench.AFS_MEANS)
    config_checks.one_of(cfg, "objective", amed_training.OBJECTIVES)
    os.makedirs(workdir, exist_ok=True)
    name, images = bench.load_images(cfg)
    denoise = bench.build_denoiser(cfg.denoiser, images, cfg)
    shape = images.shape[1:]
    key_train, key_eval = jax.random.split(jax.random.PRNGKey(cfg.seed))
    x_train = 80.0 * jax.random.normal(key_train, (cfg.num_trajectories,) + shape)
    x_eval = 80.0 * jax.random.normal(key_eval, (cfg.num_eval,) + shape)
    reference = jaxdiff.sample(denoise, x_eval, schedules.get("polynomial", cfg.reference_steps),
                               solver="heun")
    opts = dict(cfg.base_options)
    mean = bench.afs_mean(cfg.afs_mean, images, denoise) if cfg.afs else None
    rows = []
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics:
        for nfe in tqdm(cfg.nfes, desc=f"AMED-{cfg.base}", unit="nfe"):
            num_steps = (nfe + 2 + int(cfg.afs)) // 2     # 2 (N - 1) calls, one less with AFS
            if jaxdiff.nfe(cfg.base, num_steps, afs=cfg.afs, amed=True) != nfe:
                raise ValueError(f"AMED makes {'odd' if cfg.afs else 'even'} NFE only with "
                                 f"afs={cfg.afs}; got nfe={nfe}")
            sigmas = schedules.get(cfg.schedule, num_steps, **cfg.schedule_kw)
            teacher_sigmas = schedules.get(cfg.schedule, (cfg.teacher_points + 1)
                                           * (num_steps - 1) + 1, **cfg.schedule_kw)
            t0 = time.perf_counter()
            log = lambda rec, nfe=nfe: metrics.write(json.dumps({"nfe": nfe, **rec}) + "\n")
            pred = amed_training.train(denoise, x_train, sigmas, base=cfg.base, teacher=cfg.teacher,
                              teacher_sigmas=teacher_sigmas, teacher_points=cfg.teacher_points,
                              batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                              scale_dir=cfg.scale_dir, scale_time=cfg.scale_time,
                              afs=cfg.afs, afs_mean=mean, seed=cfg.seed, log_fn=log,
                              objective=cfg.objective, **opts)
            train_s = time.perf_counter() - t0
            amed_training.save(os.path.join(workdir, f"nfe{nfe}"), pred)
            out = jaxdiff.sample(denoise, x_eval, sigmas, solver=cfg.base, amed=pred)
            row = {"nfe": nfe, "num_steps": num_steps, "amed_error": bench.mean_l2(out, reference),
                   "train_seconds": train_s, "updates": pred.num_updates,
                   "teacher_nfe_per_trajectory": jaxdiff.nfe(cfg.teacher,
                                                             teacher_sigmas.shape[0]),
                   "trajectories": cfg.num_trajectories}
            if cfg.base != "amed":
                sched, kw, base_opts = bench.SOLVER_SETTINGS[cfg.base]
                n_b, afs_b = jaxdiff.steps_for_nfe(cfg.base, nfe, **base_opts)
                base_out = jaxdiff.sample(denoise, x_eval, schedules.get(sched, n_b, **kw),
                                          solver=cfg.base, afs=afs_b, **base_opts)
                row["base_error"] = bench.mean_l2(base_out, reference)
            rows.append(row)
    results = {"dataset": name, "denoiser": cfg.denoiser, "base": cfg.base, "afs": cfg.afs,
               "afs_mean": cfg.afs_mean if cfg.afs else None,
               "teacher": cfg.teacher, "objective": cfg.objective, "rows": rows}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def report(results, workdir: str) -> None:
    for row in results["rows"]:
        print(json.dumps(row))


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(run, report, what="AMED config file")


if __name__ == "__main__":
    main()
