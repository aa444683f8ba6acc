"""Why AMED-Solver is erratic with a memorising denoiser (issue 14): its error against r.

    python -m benchmarks.amed_solver_sensitivity      # ~3 min on 2 CPU cores

AMED-Solver's step is the midpoint rule x' = x + (s' - s) d(x_mid, s_mid), with
s_mid = s'^r s^(1-r) and d = (x - D(x; sigma)) / sigma. Over the last interval of a
two-step schedule (sigma 2.52 -> 0.002) this is x' ~ D(x; s) + (s / s_mid) (D(x_mid; s_mid)
- D(x; s)): the change of the denoised image between s and s_mid is amplified by s / s_mid.
The exact denoiser of the 1,797 digits (``denoisers.optimal``, which memorises them) snaps
to one training digit at small sigma, so that change is O(1) and the error grows with r
by orders of magnitude. The script measures, on 256 noises of the digits, the mean L2 error
to a converged Heun reference (512 steps) of the two midpoint steps at NFE 4 for a grid of
sample-independent (r1, r2) (an exact denoiser gives the predictor no feature, so its r is
sample-independent anyway), plain iPNDM at NFE 4, and a predictor trained as
``jaxdiff.compare`` trains it (2,048 trajectories, no AFS), with the r it picked.
Writes benchmarks/results/amed_solver_sensitivity.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

R1 = (0.0, 0.25, 0.5, 0.75)
R2 = (0.0, 0.05, 0.1, 0.15, 0.25, 0.5, 0.75, 0.9)


def main(argv=None):
    import jaxdiff
    from jaxdiff import amed, denoisers
    from jaxdiff.training import amed as amed_training
    from jaxinfra.datasets import load_digits

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/amed_solver_sensitivity.json")
    p.add_argument("--trajectories", type=int, default=2048)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    images, _ = load_digits()
    den = denoisers.optimal(images.reshape(len(images), -1))
    sig = jaxdiff.schedules.get("polynomial", num_steps=3)          # 80 -> 2.52 -> 0.002
    x_T = sig[0] * jax.random.normal(jax.random.PRNGKey(5), (256, 64))
    ref = jaxdiff.sample(den, x_T, jaxdiff.schedules.get("polynomial", num_steps=513),
                         solver="heun")

    def err(y):
        return float(jnp.mean(jnp.linalg.norm(y - ref, axis=-1)))

    def full(s, b):
        return jnp.full((b,), s)

    def midpoint(x, rs):
        for n, r in enumerate(rs):
            s, s2 = sig[n], sig[n + 1]
            d = (x - den(x, full(s, x.shape[0]))) / s
            s_mid = s2 ** r * s ** (1 - r)
            x_mid = x + (s_mid - s) * d
            x = x + (s2 - s) * (x_mid - den(x_mid, full(s_mid, x.shape[0]))) / s_mid
        return x

    grid = {f"{r1:g}": {f"{r2:g}": err(midpoint(x_T, (r1, r2))) for r2 in R2} for r1 in R1}
    ipndm = err(jaxdiff.sample(den, x_T, jaxdiff.schedules.get("polynomial", num_steps=5),
                               solver="ipndm"))
    noise = sig[0] * jax.random.normal(jax.random.PRNGKey(1), (a.trajectories, 64))
    pred = amed_training.train(den, noise, sig, base="amed", feature_dim=64, afs=False,
                               batch_size=128)
    r, s_mid, _, _ = amed.predicted_schedule(pred, sig)
    trained = err(amed.sample(den, x_T, sig, pred)[0])
    out = {"schedule": np.asarray(sig).tolist(), "error_by_r1_r2": grid,
           "ipndm_nfe4": ipndm, "trained": {"r": np.asarray(r).tolist(),
                                            "s_mid": np.asarray(s_mid).tolist(),
                                            "error": trained},
           "trajectories": a.trajectories, "seconds": time.perf_counter() - t0}
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("r1 \\ r2 " + " ".join(f"{r2:>7g}" for r2 in R2))
    for r1, row in grid.items():
        print(f"{r1:>7s} " + " ".join(f"{v:7.2f}" for v in row.values()))
    print(f"iPNDM NFE 4: {ipndm:.2f}; trained predictor r = {np.round(np.asarray(r), 3)} "
          f"-> {trained:.2f}")


if __name__ == "__main__":
    main()
