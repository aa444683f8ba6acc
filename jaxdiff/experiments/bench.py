"""The solver benchmark: error of each solver at NFE 3..10 against a converged solution.

    python -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

Two regimes, both with exact denoisers and no training:
  gmm:     a diagonal Gaussian mixture fitted to the data; smooth, like a trained network.
  optimal: the empirical data's optimal denoiser; trajectories end on training images.
Every solver starts from the same noise; the error is the mean per-sample L2 distance
(data in [-1, 1]) to a reference solved with many Heun steps, whose own convergence is
reported (its change when the step count is halved).
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jaxdiff
from jaxdiff import denoisers, schedules
from jaxinfra import datasets as data_lib

# The reference code's recommended schedule per solver (diff-solvers README).
SOLVER_SETTINGS = {
    "euler": ("polynomial", {"rho": 7.0}, {}),
    "heun": ("polynomial", {"rho": 7.0}, {}),
    "dpm2": ("polynomial", {"rho": 7.0}, {}),
    "ipndm": ("polynomial", {"rho": 7.0}, {"max_order": 4}),
    "ipndm_v": ("polynomial", {"rho": 7.0}, {"max_order": 4}),
    "deis": ("time_uniform", {"rho": 2.0}, {"max_order": 4}),
    "dpmpp": ("logsnr", {}, {"max_order": 3}),
    "unipc": ("logsnr", {}, {"max_order": 3, "variant": "bh2"}),
}


def plan(solver: str, nfe: int):
    """(num_steps, afs) giving exactly ``nfe`` calls; 2-call solvers use AFS at odd NFE."""
    return jaxdiff.steps_for_nfe(solver, nfe, **SOLVER_SETTINGS[solver][2])


def load_images(cfg):
    name = cfg.dataset
    if name == "auto":
        try:
            data_lib.load_fashion_mnist(max_examples=1)
            name = "fashion_mnist"
        except FileNotFoundError:
            name = "digits"
    images, _ = data_lib.load(name, max_examples=cfg.max_examples or None)
    return name, np.asarray(images, np.float32)


def build_denoiser(regime: str, images, cfg):
    flat = images.reshape(images.shape[0], -1)
    if regime == "gmm":
        return denoisers.gaussian_mixture(*denoisers.fit_gaussian_mixture(
            flat, cfg.gmm_components, seed=cfg.seed))
    if regime == "optimal":
        return denoisers.optimal(flat, chunk=2048)
    raise ValueError(f"unknown regime {regime!r}; valid: ('gmm', 'optimal')")


AFS_MEANS = ("zero", "data", "denoiser")


def afs_mean(choice: str, images, denoise, sigma_max: float = 80.0):
    """The data mean AFS centres on: None ("zero": the reference), the mean image ("data")
    or one denoiser call at sigma_max on a zero image ("denoiser"; D(0; 80) ~ data mean)."""
    if choice == "zero":
        return None
    if choice == "data":
        return jnp.asarray(np.mean(np.asarray(images), axis=0))
    if choice == "denoiser":
        zero = jnp.zeros((1,) + tuple(images.shape[1:]), jnp.asarray(images).dtype)
        return denoise(zero, jnp.full((1,), sigma_max, zero.dtype))[0]
    raise ValueError(f"unknown afs_mean {choice!r}; valid: {list(AFS_MEANS)}")


def converged_reference(denoise, x_T, num_steps: int, solver: str = "heun",
                        sigma_min: float = 0.002, sigma_max: float = 80.0):
    """(reference, change): the ODE solved on a fine polynomial grid, and the mean L2 change
    of that solution when the step count is halved (its own convergence check)."""
    grid = lambda n: schedules.get("polynomial", n, sigma_min, sigma_max)
    reference = jaxdiff.sample(denoise, x_T, grid(num_steps), solver=solver)
    half = jaxdiff.sample(denoise, x_T, grid((num_steps + 1) // 2), solver=solver)
    return reference, mean_l2(reference, half)


def mean_l2(a, b):
    return float(jnp.mean(jnp.linalg.norm((a - b).reshape(a.shape[0], -1), axis=1)))


def run_regime(regime, images, cfg, x_T, progress):
    denoise = build_denoiser(regime, images, cfg)
    t0 = time.perf_counter()
    reference, change = converged_reference(denoise, x_T, cfg.reference_steps,
                                            cfg.reference_solver, cfg.sigma_min, cfg.sigma_max)
    ref_info = {"solver": cfg.reference_solver, "num_steps": cfg.reference_steps,
                "change_when_halved": change,
                "seconds": time.perf_counter() - t0}
    rows, finals = [], {}
    for solver in cfg.solvers:
        sched, sched_kw, opts = SOLVER_SETTINGS[solver]
        for nfe in cfg.nfes:
            n, afs = plan(solver, nfe)
            sigmas = schedules.get(sched, n, cfg.sigma_min, cfg.sigma_max, **sched_kw)
            t0 = time.perf_counter()
            out = jax.block_until_ready(jaxdiff.sample(denoise, x_T, sigmas, solver=solver,
                                                       afs=afs, **opts))
            rows.append({"regime": regime, "solver": solver, "nfe": nfe, "num_steps": n,
                         "afs": afs, "schedule": sched, "error": mean_l2(out, reference),
                         "seconds_incl_compile": time.perf_counter() - t0})
            finals[(solver, nfe)] = np.asarray(out)
            progress.update(1)
    return rows, ref_info, np.asarray(reference), finals


def markdown_table(rows, nfes, solvers):
    head = "| solver | " + " | ".join(str(n) for n in nfes) + " |\n"
    head += "|---|" + "---|" * len(nfes) + "\n"
    lines = []
    for s in solvers:
        cells = []
        for n in nfes:
            r = next(r for r in rows if r["solver"] == s and r["nfe"] == n)
            cells.append(f"{r['error']:.3g}" + ("*" if r["afs"] else ""))
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def plot_errors(rows, solvers, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in solvers:
        rs = [r for r in rows if r["solver"] == s]
        ax.semilogy([r["nfe"] for r in rs], [r["error"] for r in rs], marker="o", label=s)
    ax.set_xlabel("NFE")
    ax.set_ylabel("mean L2 error to reference")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_samples(finals, reference, image_shape, solvers, nfes, path, per_cell=4):
    """Rows: solvers; columns: NFE, then the reference; each cell tiles ``per_cell`` samples."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def tile(x):
        imgs = np.clip(x[:per_cell].reshape((-1,) + image_shape)[..., 0], -1, 1)
        return np.concatenate(list(imgs), axis=1)

    fig, axes = plt.subplots(len(solvers), len(nfes) + 1,
                             figsize=(1.6 * (len(nfes) + 1), 0.55 * len(solvers) + 0.6),
                             squeeze=False)
    for i, s in enumerate(solvers):
        for j, n in enumerate(list(nfes) + ["ref"]):
            ax = axes[i, j]
            ax.imshow(tile(reference if n == "ref" else finals[(s, n)]), cmap="gray",
                      vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"NFE {n}" if n != "ref" else "reference", fontsize=7)
            if j == 0:
                ax.set_ylabel(s, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg, workdir: str) -> dict:
    """Runs the benchmark, writes its files to ``workdir`` and returns the results dict."""
    unknown = sorted(set(cfg.solvers) - set(SOLVER_SETTINGS))
    if unknown:
        raise ValueError(f"unknown solver(s) {unknown}; valid: {sorted(SOLVER_SETTINGS)}")
    for regime in cfg.regimes:
        if regime not in ("gmm", "optimal"):
            raise ValueError(f"unknown regime {regime!r}; valid: ('gmm', 'optimal')")
    for s in cfg.solvers:
        for n in cfg.nfes:
            plan(s, n)
    os.makedirs(workdir, exist_ok=True)
    dtype = jnp.float64 if cfg.float64 else jnp.float32
    name, images = load_images(cfg)
    x_T = cfg.sigma_max * jax.random.normal(jax.random.PRNGKey(cfg.seed),
                                            (cfg.num_samples,) + images.shape[1:], dtype)
    results = {"dataset": name, "num_images": int(images.shape[0]),
               "image_shape": list(images.shape[1:]), "num_samples": cfg.num_samples,
               "device": str(jax.devices()[0].device_kind), "regimes": {}}
    total = len(cfg.regimes) * len(cfg.solvers) * len(cfg.nfes)
    with tqdm(total=total, desc="solver benchmark", unit="run") as progress, \
            open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics:
        for regime in cfg.regimes:
            rows, ref_info, reference, finals = run_regime(regime, images, cfg, x_T, progress)
            for r in rows:
                metrics.write(json.dumps(r) + "\n")
            table = markdown_table(rows, cfg.nfes, cfg.solvers)
            results["regimes"][regime] = {"reference": ref_info, "rows": rows, "table": table}
            plot_errors(rows, cfg.solvers, os.path.join(workdir, f"error_vs_nfe_{regime}.png"),
                        f"{name}, {regime} denoiser")
            plot_samples(finals, reference, images.shape[1:], cfg.solvers, cfg.nfes,
                         os.path.join(workdir, f"samples_{regime}.png"))
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        for regime, res in results["regimes"].items():
            ref = res["reference"]
            f.write(f"### {name}, {regime} denoiser: mean L2 error to the reference "
                    f"({cfg.num_samples} samples; * = AFS)\n\n{res['table']}\n"
                    f"Reference: {ref['solver']} with {ref['num_steps']} timestamps; its change "
                    f"when the steps are halved: {ref['change_when_halved']:.2e}.\n\n")
    return results


def report(results, workdir: str) -> None:
    with open(os.path.join(workdir, "results.md")) as f:
        print(f.read())
    print(f"wrote results.json, results.md, metrics.jsonl and PNGs to {workdir}")


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(run, report, what="benchmark config file")


if __name__ == "__main__":
    main()
