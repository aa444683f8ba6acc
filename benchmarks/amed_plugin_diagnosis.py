"""Why iPNDM+AMED-Plugin falls behind plain iPNDM from NFE 6 on the digits U-Net (issue 14).

    python -m benchmarks.amed_plugin_diagnosis --nfes=8     # ~20 min on 2 CPU cores

(the stored result: NFE 8, every variant, in two calls of ``--variants``; 2.5 minutes per
stepwise predictor and 7.5 per trajectory one on cores shared with other jobs).

Needs the U-Net of ``python -m jaxdiff.train --config=configs/edm_digits.py
--workdir=runs/edm_digits``. On the 256 held-out noises and the converged Heun reference
of ``configs/compare_digits.py:edm_only`` it measures, per even NFE (no AFS), the mean L2
error to the reference of
  - plain iPNDM on the polynomial schedule with NFE + 1 points (what the plugin must beat);
  - the plugin's teacher: iPNDM on the polynomial schedule with 3 (N - 1) + 1 points
    (N = NFE / 2 + 1 student nodes; the reference's same-formula teacher, M = 2);
  - the neutral plugin (r = 1/2, c = t = 1: the coarse schedule refined by geometric
    midpoints), which is where training starts;
  - predictors trained as ``jaxdiff.compare`` trains them (10,240 trajectories, the
    reference's stepwise rule), with variants: no bottleneck feature, ``scale_time=0``,
    and our ``objective="trajectory"`` (with and without the feature) and
    ``objective="final"`` (the last node's loss only; ``--nfes=10 --variants=trajectory,final``
    gives ``amed_plugin_diagnosis_nfe10.json``, with every batch's per-node losses);
and, for each, the error to the teacher at every student node, so one sees which step
goes wrong, with the r the trained predictors pick (mean and spread over samples).
Writes benchmarks/results/amed_plugin_diagnosis.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

VARIANTS = {  # name: (use the U-Net feature, scale_time, training objective)
    "trained": (True, 0.2, "stepwise"),  # the reference's rule and CIFAR setting
    "trained_no_feature": (False, 0.2, "stepwise"),
    "trained_scale_time_0": (True, 0.0, "stepwise"),
    "trajectory": (True, 0.2, "trajectory"),
    "trajectory_no_feature": (False, 0.2, "trajectory"),
    "final": (True, 0.2, "final"),
}


def node_errors(xs, teacher_nodes):
    """Mean L2 error to the teacher at every student node, (N,)."""
    diff = (xs - teacher_nodes).reshape(xs.shape[0], xs.shape[1], -1)
    return [float(v) for v in jnp.mean(jnp.linalg.norm(diff, axis=-1), axis=1)]


def main(argv=None):
    import jaxdiff
    from configs.compare_digits import get_config
    from jaxdiff import amed, schedules
    from jaxdiff.experiments import bench, compare
    from jaxdiff.sampling import sample as ode_sample
    from jaxdiff.training import amed as amed_training

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nfes", default="6,8,10")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--edm_workdir", default="runs/edm_digits")
    p.add_argument("--out", default="benchmarks/results/amed_plugin_diagnosis.json")
    args = p.parse_args(argv)
    nfes = [int(v) for v in args.nfes.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    for n in nfes:
        if n % 2 or n < 4:
            raise SystemExit(f"--nfes: even NFE >= 4 only (no AFS), got {n}")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown {v!r}; valid: {list(VARIANTS)}")

    cfg = get_config("edm_only")
    cfg.edm_workdir = args.edm_workdir
    _, images = bench.load_images(cfg)
    denoise, feature_fn, feature_dim = compare.load_regime("edm", images, cfg)
    shape = images.shape[1:]
    _, x_eval = compare.noises(cfg, shape)
    reference, _ = bench.converged_reference(denoise, x_eval, cfg.reference_steps)
    x_train = 80.0 * jax.random.normal(jax.random.PRNGKey(cfg.seed + 1),
                                       (cfg.amed_trajectories,) + shape)
    results = {"config": "configs/compare_digits.py:edm_only", "edm_workdir": args.edm_workdir,
               "num_eval": cfg.num_eval, "amed_trajectories": cfg.amed_trajectories,
               "nfes": {}}
    for nfe in nfes:
        n = nfe // 2 + 1
        sigmas = schedules.get("polynomial", n, rho=7.0)
        teacher_sigmas = schedules.get("polynomial", 3 * (n - 1) + 1, rho=7.0)
        row = {"student_nodes": n}
        plain = jaxdiff.sample(denoise, x_eval, schedules.get("polynomial", nfe + 1, rho=7.0),
                               solver="ipndm", max_order=4)
        row["ipndm"] = bench.mean_l2(plain, reference)
        teacher_final, traj = ode_sample(denoise, x_eval, teacher_sigmas, solver="ipndm",
                                         max_order=4, return_trajectory=True)
        teacher_nodes = traj.xs[::3]
        row["teacher"] = bench.mean_l2(teacher_final, reference)

        def measure(pred, use_feature):
            fn = feature_fn if use_feature else None
            final, (xs, _) = amed.sample(denoise, x_eval, sigmas, pred, feature_fn=fn,
                                         return_trajectory=True)
            feats = (jax.vmap(lambda x, s: fn(x, jnp.full((x.shape[0],), s)))(xs[:-1],
                                                                               sigmas[:-1])
                     .reshape(n - 1, x_eval.shape[0], -1) if use_feature else None)
            batch = x_eval.shape[0]
            rs = [pred.module.apply(pred.params, jnp.zeros((batch, feature_dim))
                                    if feats is None else feats[i],
                                    jnp.full((batch,), sigmas[i]),
                                    jnp.full((batch,), sigmas[i + 1]))[0]
                  for i in range(n - 1)]
            return {"error": bench.mean_l2(final, reference),
                    "error_to_teacher_by_node": node_errors(xs, teacher_nodes),
                    "r_mean": [float(jnp.mean(r)) for r in rs],
                    "r_std": [float(jnp.std(r)) for r in rs]}

        neutral = amed.init(jax.random.PRNGKey(0), base="ipndm", num_steps=n,
                            feature_dim=feature_dim, scale_time=0.2, afs=False, max_order=4)
        neutral = neutral.replace(params=jax.tree.map(jnp.zeros_like, neutral.params))
        row["neutral"] = measure(neutral, False)
        row["teacher_error_to_itself_by_node"] = node_errors(teacher_nodes, teacher_nodes)
        for name in variants:
            use_feature, scale_time, objective = VARIANTS[name]
            log = []
            t0 = time.perf_counter()
            pred = amed_training.train(
                denoise, x_train, sigmas, base="ipndm", teacher="ipndm",
                feature_fn=feature_fn if use_feature else None, feature_dim=feature_dim,
                teacher_sigmas=teacher_sigmas, teacher_points=2, batch_size=cfg.amed_batch,
                scale_time=scale_time, afs=False, seed=cfg.seed, objective=objective,
                max_order=4, log_fn=log.append)
            row[name] = {**measure(pred, use_feature),
                         "seconds": time.perf_counter() - t0,
                         "train_loss_first_batch": log[0]["loss_per_step"],
                         "train_loss_last_batch": log[-1]["loss_per_step"],
                         "train_loss_by_batch": [e["loss_per_step"] for e in log]}
            print(f"NFE {nfe} {name}: {row[name]['error']:.3f}", flush=True)
        print(f"NFE {nfe}: ipndm {row['ipndm']:.3f}, teacher {row['teacher']:.3f}, "
              f"neutral {row['neutral']['error']:.3f}", flush=True)
        results["nfes"][str(nfe)] = row
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    print(json.dumps(results["nfes"], indent=1))


if __name__ == "__main__":
    main()
