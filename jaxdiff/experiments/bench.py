"""The solver benchmark: error of each solver at NFE 3..10 against a converged solution.

    python -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

Two regimes, both with exact denoisers and no training:
  gmm:     a diagonal Gaussian mixture fitted to the data; smooth, like a trained network.
  optimal: the empirical data's optimal denoiser; trajectories end on training images.
Every solver starts from the same noise; the error is the mean per-sample L2 distance
(data in [-1, 1]) to a reference solved with many Heun steps, whose own convergence is
reported (its change when the step count is halved).

Stochastic samplers (``cfg.stochastic``: Euler ancestral, DPM-Solver++(2M) SDE, Heun with
EDM's churn, at ``cfg.stochastic_nfes``) start from the same noise and take the step noise
that ``jaxdiff.sample(..., key=jax.random.key(cfg.noise_seed))`` draws (:func:`step_noise`,
drawn once for all rows). They do not follow the ODE trajectory of their initial noise,
so their L2 distance to the ODE reference is not an error comparable with an ODE
solver's. The column that compares all rows fairly is ``fd`` (``cfg.fd``): the Frechet
distance of the samples to exact samples of the distribution the regime's denoiser
defines (the data for "optimal", draws of the mixture for "gmm"), in the features of a
small classifier trained on the data (:mod:`jaxdiff.frechet`; NOT Inception FID),
reported with the converged reference's own FD (the floor at this sample count).
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
from jaxdiff import denoisers, frechet, schedules
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

# EDM's stochastic sampler settings for ImageNet-64 (Karras et al. 2022, Table 5).
EDM_CHURN = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}
# Stochastic rows: name -> (jaxdiff solver, schedule, schedule options, solver options),
# on k-diffusion's usual Karras schedule (polynomial, rho 7).
STOCHASTIC_SETTINGS = {
    "euler_ancestral": ("euler_ancestral", "polynomial", {"rho": 7.0}, {}),
    "dpmpp_2m_sde": ("dpmpp_2m_sde", "polynomial", {"rho": 7.0}, {}),
    "heun_churn": ("heun", "polynomial", {"rho": 7.0}, EDM_CHURN),
}


def row_settings(name: str):
    """(jaxdiff solver, schedule, schedule options, solver options) of a benchmark row."""
    if name in SOLVER_SETTINGS:
        return (name,) + SOLVER_SETTINGS[name]
    if name in STOCHASTIC_SETTINGS:
        return STOCHASTIC_SETTINGS[name]
    raise ValueError(f"unknown solver {name!r}; valid: "
                     f"{sorted(SOLVER_SETTINGS) + sorted(STOCHASTIC_SETTINGS)}")


def plan(name: str, nfe: int):
    """(num_steps, afs) giving exactly ``nfe`` calls; 2-call solvers use AFS at odd NFE."""
    solver, _, _, opts = row_settings(name)
    return jaxdiff.steps_for_nfe(solver, nfe, **opts)


def load_labelled_images(cfg):
    """(data set name, images (N, H, W, C) float32 in [-1, 1], labels (N,) int)."""
    name = cfg.dataset
    if name == "auto":
        try:
            data_lib.load_fashion_mnist(max_examples=1)
            name = "fashion_mnist"
        except FileNotFoundError:
            name = "digits"
    images, labels = data_lib.load(name, max_examples=cfg.max_examples or None)
    return name, np.asarray(images, np.float32), np.asarray(labels)


def load_images(cfg):
    """(data set name, images (N, H, W, C) float32 in [-1, 1])."""
    name, images, _ = load_labelled_images(cfg)
    return name, images


def regime_model(regime: str, images, cfg, *, with_samples: bool = False):
    """The regime's exact denoiser, and with ``with_samples`` also exact samples of the
    distribution it denoises, (N, H, W, C) float32 for N images: the images themselves
    ("optimal"), or N draws of the fitted mixture ("gmm", key PRNGKey(cfg.seed))."""
    flat = images.reshape(images.shape[0], -1)
    if regime == "gmm":
        gmm = denoisers.fit_gaussian_mixture(flat, cfg.gmm_components, seed=cfg.seed)
        denoise = denoisers.gaussian_mixture(*gmm)
        if not with_samples:
            return denoise
        draws = denoisers.sample_gaussian_mixture(gmm, jax.random.PRNGKey(cfg.seed),
                                                  flat.shape[0])
        return denoise, np.asarray(draws, np.float32).reshape(images.shape)
    if regime == "optimal":
        denoise = denoisers.optimal(flat, chunk=2048)
        return (denoise, images) if with_samples else denoise
    raise ValueError(f"unknown regime {regime!r}; valid: ('gmm', 'optimal')")


def build_denoiser(regime: str, images, cfg):
    """The regime's exact denoiser (see :func:`regime_model`)."""
    return regime_model(regime, images, cfg)


def fd_scorer(classifier, target):
    """``score(samples (B, H, W, C)) -> float``: the Frechet distance of samples to
    ``target`` (M, H, W, C) in ``classifier``'s features (NOT Inception FID). Both sides
    are clipped to [-1, 1]."""
    stats = frechet.feature_stats(classifier, np.clip(np.asarray(target, np.float32), -1, 1))
    return lambda samples: frechet.fd_of_samples(np.asarray(samples, np.float32),
                                                 classifier, stats)


def step_noise(seed: int, num_draws: int, shape, dtype=jnp.float32):
    """Standard normal draws (num_draws,) + shape for every stochastic row at once: the
    draws of ``jaxdiff.sample(..., key=jax.random.key(seed))`` for a schedule of
    ``num_draws + 1`` timestamps (:func:`jaxdiff.draw_noise`). With JAX's default
    partitionable threefry (``split(key, m)[i] == fold_in(key, i)``) slice i does not
    depend on ``num_draws``, so a row with n timestamps takes the first n - 1 slices."""
    return jaxdiff.draw_noise(jax.random.key(seed), int(num_draws) + 1, shape, dtype)


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


def run_row(denoise, x_T, name: str, nfe: int, cfg, noise=None):
    """(samples (B, ...), row settings dict) of one benchmark row at one NFE.

    A stochastic row with n timestamps takes ``noise[:n - 1]`` (:func:`step_noise`).
    """
    solver, sched, sched_kw, opts = row_settings(name)
    n, afs = plan(name, nfe)
    sigmas = schedules.get(sched, n, cfg.sigma_min, cfg.sigma_max, **sched_kw)
    stochastic = name in STOCHASTIC_SETTINGS
    draws = {"noise": noise[:n - 1]} if stochastic else {}
    out = jaxdiff.sample(denoise, x_T, sigmas, solver=solver, afs=afs, **opts, **draws)
    settings = {"num_steps": n, "afs": afs, "schedule": sched, "stochastic": stochastic}
    if stochastic:
        settings.update(jaxdiff_solver=solver, options=dict(opts), noise_seed=cfg.noise_seed)
    return jax.block_until_ready(out), settings


def row_nfes(cfg):
    """(row name, NFE) of every row in order: ODE solvers at cfg.nfes, then stochastic
    samplers at cfg.stochastic_nfes."""
    return ([(s, n) for s in cfg.solvers for n in cfg.nfes]
            + [(s, n) for s in cfg.stochastic for n in cfg.stochastic_nfes])


def run_regime(regime, images, cfg, x_T, progress, classifier=None, noise=None):
    """(rows, reference info, reference samples, {(row name, NFE): samples}) of a regime;
    with a ``classifier`` every row and the reference get their ``fd``."""
    denoise, target = regime_model(regime, images, cfg, with_samples=True)
    score_fd = None if classifier is None else fd_scorer(classifier, target)
    t0 = time.perf_counter()
    reference, change = converged_reference(denoise, x_T, cfg.reference_steps,
                                            cfg.reference_solver, cfg.sigma_min, cfg.sigma_max)
    ref_info = {"solver": cfg.reference_solver, "num_steps": cfg.reference_steps,
                "change_when_halved": change,
                "seconds": time.perf_counter() - t0}
    if score_fd is not None:
        ref_info["fd"] = score_fd(reference)
    rows, finals = [], {}
    for name, nfe in row_nfes(cfg):
        t0 = time.perf_counter()
        out, settings = run_row(denoise, x_T, name, nfe, cfg, noise)
        row = {"regime": regime, "solver": name, "nfe": nfe, **settings,
               "error": mean_l2(out, reference),
               "seconds_incl_compile": time.perf_counter() - t0}
        if score_fd is not None:
            row["fd"] = score_fd(out)
        rows.append(row)
        finals[(name, nfe)] = np.asarray(out)
        progress.update(1)
    return rows, ref_info, np.asarray(reference), finals


STOCHASTIC_MARK = "†"


def markdown_table(rows, nfes, solvers, key: str = "error"):
    """Rows: solvers (stochastic ones marked †); columns: NFE; cells: ``row[key]`` (* = AFS,
    – = not run)."""
    head = "| solver | " + " | ".join(str(n) for n in nfes) + " |\n"
    head += "|---|" + "---|" * len(nfes) + "\n"
    lines = []
    for s in solvers:
        cells = []
        for n in nfes:
            r = next((r for r in rows if r["solver"] == s and r["nfe"] == n), None)
            cells.append("–" if r is None else f"{r[key]:.3g}" + ("*" if r["afs"] else ""))
        mark = f" {STOCHASTIC_MARK}" if any(r.get("stochastic") for r in rows
                                            if r["solver"] == s) else ""
        lines.append(f"| {s}{mark} | " + " | ".join(cells) + " |")
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
            if n != "ref" and (s, n) not in finals:
                ax.axis("off")
                continue
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


def check_config(cfg) -> None:
    """ValueError naming the bad value (and the accepted ones) before any work is done."""
    unknown = sorted(set(cfg.solvers) - set(SOLVER_SETTINGS))
    if unknown:
        raise ValueError(f"unknown solver(s) {unknown}; valid: {sorted(SOLVER_SETTINGS)}")
    unknown = sorted(set(cfg.stochastic) - set(STOCHASTIC_SETTINGS))
    if unknown:
        raise ValueError(f"unknown stochastic sampler(s) {unknown}; valid: "
                         f"{sorted(STOCHASTIC_SETTINGS)}")
    extra = sorted(set(cfg.stochastic_nfes) - set(cfg.nfes))
    if extra:
        raise ValueError(f"stochastic_nfes {extra} are not in nfes {list(cfg.nfes)}")
    for regime in cfg.regimes:
        if regime not in ("gmm", "optimal"):
            raise ValueError(f"unknown regime {regime!r}; valid: ('gmm', 'optimal')")
    for s, n in row_nfes(cfg):
        plan(s, n)


STOCHASTIC_NOTE = (
    f"{STOCHASTIC_MARK} stochastic sampler (step noise of key=jax.random.key({{seed}})): "
    "it adds fresh noise at every step, so it does not follow the ODE trajectory of its "
    "initial noise and its distance to the ODE reference is NOT an error comparable with "
    "the ODE solvers' rows. Compare all rows by the Frechet distance{where}.")


def write_markdown(path: str, results: dict, cfg) -> None:
    """results.md: per regime, the L2 table and (with cfg.fd) the Frechet-distance table."""
    name, n = results["dataset"], cfg.num_samples
    where = " table below" if cfg.fd else " (cfg.fd, off in this run)"
    with open(path, "w") as f:
        for regime, res in results["regimes"].items():
            ref = res["reference"]
            f.write(f"### {name}, {regime} denoiser: mean L2 error to the reference "
                    f"({n} samples; * = AFS)\n\n{res['table']}\n"
                    f"Reference: {ref['solver']} with {ref['num_steps']} timestamps; its change "
                    f"when the steps are halved: {ref['change_when_halved']:.2e}.\n\n")
            if cfg.stochastic:
                f.write(STOCHASTIC_NOTE.format(seed=cfg.noise_seed, where=where) + "\n\n")
            if "fd_table" in res:
                target = "the data" if regime == "optimal" else "exact draws of the mixture"
                f.write(f"### {name}, {regime} denoiser: Frechet distance to {target} in the "
                        f"features of a classifier trained on the data (NOT Inception FID; "
                        f"{n} samples; lower is better)\n\n{res['fd_table']}\nThe converged "
                        f"ODE reference's own FD (the floor at {n} samples): {ref['fd']:.3g}. "
                        f"Classifier training accuracy: {results['fd_classifier_accuracy']:.3f}."
                        f"\n\n")


def run(cfg, workdir: str) -> dict:
    """Runs the benchmark, writes its files to ``workdir`` and returns the results dict."""
    check_config(cfg)
    os.makedirs(workdir, exist_ok=True)
    dtype = jnp.float64 if cfg.float64 else jnp.float32
    name, images, labels = load_labelled_images(cfg)
    x_T = cfg.sigma_max * jax.random.normal(jax.random.PRNGKey(cfg.seed),
                                            (cfg.num_samples,) + images.shape[1:], dtype)
    results = {"dataset": name, "num_images": int(images.shape[0]),
               "image_shape": list(images.shape[1:]), "num_samples": cfg.num_samples,
               "device": str(jax.devices()[0].device_kind), "regimes": {}}
    classifier = None
    if cfg.fd:
        classifier = frechet.train_classifier(images, labels, **dict(cfg.fd_classifier))
        results["fd_classifier"] = dict(cfg.fd_classifier)
        results["fd_classifier_accuracy"] = frechet.accuracy(classifier, images, labels)
    noise = None
    if cfg.stochastic:
        most = max(plan(s, n)[0] for s in cfg.stochastic for n in cfg.stochastic_nfes)
        noise = step_noise(cfg.noise_seed, most - 1, x_T.shape, dtype)
    names = tuple(cfg.solvers) + tuple(cfg.stochastic)
    with tqdm(total=len(cfg.regimes) * len(row_nfes(cfg)), desc="solver benchmark",
              unit="run") as progress, \
            open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics:
        for regime in cfg.regimes:
            rows, ref_info, reference, finals = run_regime(regime, images, cfg, x_T, progress,
                                                           classifier, noise)
            for r in rows:
                metrics.write(json.dumps(r) + "\n")
            res = {"reference": ref_info, "rows": rows,
                   "table": markdown_table(rows, cfg.nfes, names)}
            if classifier is not None:
                res["fd_table"] = markdown_table(rows, cfg.nfes, names, key="fd")
            results["regimes"][regime] = res
            plot_errors(rows, cfg.solvers, os.path.join(workdir, f"error_vs_nfe_{regime}.png"),
                        f"{name}, {regime} denoiser")
            plot_samples(finals, reference, images.shape[1:], names, cfg.nfes,
                         os.path.join(workdir, f"samples_{regime}.png"))
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    write_markdown(os.path.join(workdir, "results.md"), results, cfg)
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
