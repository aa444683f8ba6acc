"""Trajectory geometry of ODE sampling on real data with exact denoisers (section 7).

    python -m jaxdiff.analyze --config=configs/analyze_digits.py --workdir=runs/analyze

Two denoisers, no training:
  gmm:     a diagonal Gaussian mixture fitted to the data; smooth, the "model" stand-in.
  optimal: the empirical data's optimal denoiser (annealed mean shift with Euler).
Every run starts from the same batch of noise on a fine polynomial schedule. Writes to
the workdir:
  deviation.png         deviation from the chord / trajectory length vs sigma, for the
                        sampling (x_n) and denoising (r_n) trajectories;
  distance_to_end.png   |x_n - x_end| and |r_n - r_end| vs step (relative to n = 0);
  boomerang.png         3-D projections (chord + 2 PCs) of a few trajectories and the
                        PCA variance ratios;
  score_deviation.png   the four model-vs-optimal distances of section 7 item 3;
  magnitudes.png        |x_n|, |r_n|, |d_n| vs sigma with sigma sqrt(D) and sqrt(D), and
                        cos(d_n, x_n - x_end);
  samples_nearest.png   final samples above their nearest training images;
  summary.json          the headline numbers (see ``summarise``).
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
from jaxdiff import denoisers, geometry, schedules
from jaxinfra import datasets as data_lib

REGIMES = ("gmm", "optimal")


# --------------------------------------------------------------------------- setup


def validate(cfg) -> None:
    """Raises ValueError for a bad config before any work."""
    known = set(jaxdiff.solvers.SOLVERS) | set(jaxdiff.solvers.ALIASES)
    unknown = sorted((set(cfg.solvers) | {cfg.score_solver}) - known)
    if unknown:
        raise ValueError(f"unknown solver(s) {unknown}; valid: {sorted(jaxdiff.solvers.SOLVERS)}")
    if not cfg.solvers:
        raise ValueError("cfg.solvers must name at least one solver")
    if cfg.num_steps < 3:
        raise ValueError(f"num_steps must be >= 3 timestamps, got {cfg.num_steps}")
    if not 1 <= cfg.num_plot_trajectories <= cfg.num_samples:
        raise ValueError(f"num_plot_trajectories must be in [1, num_samples={cfg.num_samples}]"
                         f", got {cfg.num_plot_trajectories}")
    if cfg.float64 and jnp.zeros(0, jnp.float64).dtype != jnp.float64:
        raise ValueError("cfg.float64 needs 64-bit JAX: run with JAX_ENABLE_X64=1")


def load_images(cfg):
    """(name, images (M, H, W, C) float32 in [-1, 1])."""
    images, _ = data_lib.load(cfg.dataset, max_examples=cfg.max_examples or None)
    return cfg.dataset, np.asarray(images, np.float32)


def build_denoisers(flat, cfg) -> dict:
    """{"gmm": fitted-mixture denoiser, "optimal": empirical optimal denoiser}."""
    gmm = denoisers.fit_gaussian_mixture(flat, cfg.gmm_components, seed=cfg.seed)
    return {"gmm": denoisers.gaussian_mixture(*gmm),
            "optimal": denoisers.optimal(flat, chunk=2048)}


# ------------------------------------------------------------------ measurement


def trajectory_stats(traj, data) -> dict:
    """Every per-step quantity of one run, as float64 numpy arrays.

    Args:
      traj: a :class:`jaxdiff.Trajectory` with xs (N, B, ...).
      data: (M, D) training data.

    Returns:
      dict with sigmas (N,), dev_x (N, B) and dev_r (N - 1, B) (deviation divided by
      each trajectory's path length), dist_x (N, B) and dist_r (N - 1, B) (distance to
      the end point), cos (N - 1, B), norm_x (N, B), norm_r and norm_d (N - 1, B),
      path_x (B,), pca coords (B, N, 3), variance_ratio (B, K), captured (B,), nearest
      (B,) distance of x_end to the nearest training point, final (B, D) the samples.
    """
    out = _stats_core(traj.xs, traj.denoised, traj.sigmas, data)
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


@jax.jit
def _stats_core(xs, r, sigmas, data):
    """Traced body of ``trajectory_stats`` (one compilation per shape)."""
    mags = geometry.magnitudes(xs, r, sigmas)
    pca = jax.vmap(geometry.pca_projection, in_axes=1)(xs)
    out = {
        "sigmas": sigmas,
        "dev_x": geometry.deviation(xs) / geometry.path_length(xs),
        "dev_r": geometry.deviation(r) / geometry.path_length(r),
        "dist_x": geometry.distance_to_end(xs),
        "dist_r": geometry.distance_to_end(r),
        "cos": geometry.direction_cosine(xs, r, sigmas),
        "norm_x": mags.x, "norm_r": mags.denoised, "norm_d": mags.d,
        "path_x": geometry.path_length(xs),
        "coords": pca.coords, "variance_ratio": pca.variance_ratio,
        "captured": pca.captured,
        "nearest": geometry.nearest_neighbor_distance(data, xs[-1]),
        "final": xs[-1].reshape(xs.shape[1], -1),
    }
    return out


def _first_below(curve, level):
    """First index where ``curve`` < level (len(curve) if never)."""
    hit = np.flatnonzero(curve < level)
    return int(hit[0]) if hit.size else len(curve)


def summarise(stats, dim) -> dict:
    """Headline numbers of one run (see ``trajectory_stats`` for the inputs).

    ``step_converged_*`` is the first step whose batch-mean distance to the trajectory's
    end point is below 0.1 sqrt(D) (an RMS of 0.1 per pixel); ``sigma_converged_*`` is
    the noise level there.
    """
    tol = 0.1 * np.sqrt(dim)
    step_x = _first_below(stats["dist_x"].mean(1), tol)
    step_r = _first_below(stats["dist_r"].mean(1), tol)
    ratio = stats["variance_ratio"]
    scale = stats["sigmas"][0] * np.sqrt(dim)
    out = {
        "max_normalised_deviation_sampling": float(stats["dev_x"].max()),
        "mean_max_normalised_deviation_sampling": float(stats["dev_x"].max(0).mean()),
        "max_normalised_deviation_denoising": float(stats["dev_r"].max()),
        "mean_max_normalised_deviation_denoising": float(stats["dev_r"].max(0).mean()),
        "pca_variance_ratio_top1": float(ratio[:, 0].mean()),
        "pca_variance_ratio_top2": float(ratio[:, 1].mean()),
        "pca_variance_ratio_top2_min": float(ratio[:, 1].min()),
        "pca_variance_ratio_top3": float(ratio[:, min(2, ratio.shape[1] - 1)].mean()),
        "variance_captured_by_3d_projection": float(stats["captured"].mean()),
        "start_norm_over_sigma_max_sqrt_d": float(stats["norm_x"][0].mean() / scale),
        "path_length_over_sigma_max_sqrt_d": float(stats["path_x"].mean() / scale),
        "mean_direction_cosine": float(stats["cos"].mean()),
        "step_converged_sampling": step_x,
        "step_converged_denoising": step_r,
        "sigma_converged_sampling": float(stats["sigmas"][min(step_x, len(stats["sigmas"]) - 1)]),
        "sigma_converged_denoising": float(stats["sigmas"][min(step_r, len(stats["sigmas"]) - 1)]),
        "final_nearest_train_distance_mean": float(stats["nearest"].mean()),
        "final_nearest_train_distance_median": float(np.median(stats["nearest"])),
        "final_nearest_train_distance_max": float(stats["nearest"].max()),
    }
    if "kde_gain" in stats:
        gain = stats["kde_gain"]
        out["kde_gain_min"] = float(gain.min())
        out["kde_gain_nonnegative_fraction"] = float(np.mean(gain >= 0))
        out["kde_gain_above_minus_tol_fraction"] = float(np.mean(gain >= -stats["kde_tol"]))
        out["kde_tol"] = float(stats["kde_tol"])
    return out


def score_deviation_stats(sd) -> dict:
    """Numpy curves and headline numbers of a :class:`geometry.ScoreDeviation`."""
    names = ("diff_sample_traj", "diff_denoised_traj", "diff_traj", "diff_opt_traj")
    curves = {k: np.asarray(getattr(sd, k), np.float64) for k in names}
    summary = {}
    for k, v in curves.items():
        summary[f"{k}_final_mean"] = float(v[-1].mean())
        summary[f"{k}_max_mean"] = float(v.mean(1).max())
    return curves, summary


# --------------------------------------------------------------------- figures


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _band(ax, x, y, label, **kw):
    """Mean over the batch (axis 1) with a 10-90 percentile band."""
    line, = ax.plot(x, y.mean(1), label=label, **kw)
    lo, hi = np.percentile(y, [10, 90], axis=1)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)


def _finish_axes(ax, xlabel, ylabel, title, *, log_sigma=False, legend_size=7, **grid):
    """Labels, title, grid and legend; ``log_sigma``: log x-axis with sigma decreasing to
    the right (the direction of sampling)."""
    if log_sigma:
        ax.set_xscale("log")
        ax.invert_xaxis()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3, **grid)
    ax.legend(fontsize=legend_size, ncol=2 if legend_size < 7 else 1)


def _save(fig, path, dpi=110):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    _plt().close(fig)


def plot_deviation(stats, solvers, path, title, dpi=110):
    """Figure 1: normalised deviation from the chord vs sigma; rows x_n / r_n, columns
    denoisers, one curve per solver (batch mean, 10-90 percentile band)."""
    plt = _plt()
    fig, axes = plt.subplots(2, len(REGIMES), figsize=(5 * len(REGIMES), 6.4), squeeze=False)
    for col, regime in enumerate(REGIMES):
        for row, (key, what) in enumerate((("dev_x", "sampling trajectory x_n"),
                                           ("dev_r", "denoising trajectory r_n"))):
            ax = axes[row, col]
            for solver in solvers:
                s = stats[(regime, solver)]
                _band(ax, s["sigmas"][:s[key].shape[0]], s[key], solver)
            _finish_axes(ax, "sigma (sampling runs left to right)",
                         "deviation from chord / path length",
                         f"{title}, {regime} denoiser: {what}", log_sigma=True)
    _save(fig, path, dpi)


def plot_distance_to_end(stats, solver, path, title, dpi=110):
    """Figure 2: |x_n - x_end| and |r_n - r_end| vs step (log scale; the end point's
    own zero distance is left out)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(REGIMES), figsize=(5 * len(REGIMES), 3.6), squeeze=False)
    for ax, regime in zip(axes[0], REGIMES):
        s = stats[(regime, solver)]
        for key, label in (("dist_x", "sampling |x_n - x_N|"),
                           ("dist_r", "denoising |r_n - r_N|")):
            d = s[key][:-1]
            _band(ax, np.arange(d.shape[0]), d, label)
        ax.axhline(0.1 * np.sqrt(s["final"].shape[1]), color="gray", ls="--", lw=0.8,
                   label="0.1 sqrt(D)")
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-4)  # the optimal r_n reaches its end point exactly
        _finish_axes(ax, f"step n ({solver})", "distance to the end point",
                     f"{title}, {regime} denoiser")
    _save(fig, path, dpi)


def plot_boomerang(stats, solver, num, path, title, dpi=110):
    """Figure 3: 3-D projections of ``num`` trajectories and the PCA variance ratio."""
    plt = _plt()
    fig = plt.figure(figsize=(5 * len(REGIMES) + 4, 4.2))
    for i, regime in enumerate(REGIMES):
        s = stats[(regime, solver)]
        ax = fig.add_subplot(1, len(REGIMES) + 1, i + 1, projection="3d")
        for b in range(num):
            c = s["coords"][b]
            line, = ax.plot(c[:, 0], c[:, 1], c[:, 2], lw=1.2)
            ax.scatter(*c[0], color=line.get_color(), marker="o", s=12)
            ax.scatter(*c[-1], color=line.get_color(), marker="*", s=30)
        ax.set_xlabel("u1 (chord)", fontsize=7)
        ax.set_ylabel("u2", fontsize=7)
        ax.set_zlabel("u3", fontsize=7)
        ax.tick_params(labelsize=6)
        rest = 1.0 - s["variance_ratio"][:, 1].mean()
        ax.set_title(f"{regime}: variance outside the top-2 PCs {rest:.1e}\n"
                     "(o noise, * sample)", fontsize=8)
    ax = fig.add_subplot(1, len(REGIMES) + 1, len(REGIMES) + 1)
    for regime in REGIMES:
        rest = 1.0 - stats[(regime, solver)]["variance_ratio"][:, :6]
        k = np.arange(1, rest.shape[1] + 1)
        ax.plot(k, np.maximum(rest.mean(0), 1e-12), marker="o", label=regime)
    ax.set_yscale("log")
    _finish_axes(ax, "number of principal components k",
                 "1 - cumulative variance ratio (batch mean)", f"{title}, {solver}")
    _save(fig, path, dpi)


def plot_score_deviation(curves, sigmas, solver, path, title, dpi=110):
    """Figure 4: the four model (gmm) vs optimal distances vs sigma."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = {"diff_sample_traj": "|x_n - x*_n|",
              "diff_denoised_traj": "|r_gmm(x_n) - r*(x*_n)|",
              "diff_traj": "|r_gmm(x_n) - r*(x_n)|  (model path)",
              "diff_opt_traj": "|r_gmm(x*_n) - r*(x*_n)|  (optimal path)"}
    for key, label in labels.items():
        y = curves[key]
        _band(ax, sigmas[:y.shape[0]], y, label)
    _finish_axes(ax, "sigma", "L2 distance", f"{title}: gmm vs optimal denoiser ({solver})",
                 log_sigma=True)
    _save(fig, path, dpi)


def plot_magnitudes(stats, solver, dim, path, title, dpi=110):
    """Figure 5: norms vs sigma against sigma sqrt(D) and sqrt(D); direction cosines."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for regime, ls in zip(REGIMES, ("-", ":")):
        s = stats[(regime, solver)]
        sig = s["sigmas"]
        ax.plot(sig, s["norm_x"].mean(1), ls=ls, color="C0", label=f"|x_n| {regime}")
        ax.plot(sig[:-1], s["norm_r"].mean(1), ls=ls, color="C1", label=f"|r_n| {regime}")
        ax.plot(sig[:-1], s["norm_d"].mean(1), ls=ls, color="C2", label=f"|d_n| {regime}")
    ax.plot(sig, sig * np.sqrt(dim), color="k", ls="--", lw=0.8, label="sigma sqrt(D)")
    ax.axhline(np.sqrt(dim), color="gray", ls="--", lw=0.8, label="sqrt(D)")
    ax.set_yscale("log")
    _finish_axes(ax, "sigma", "norm", f"{title}: magnitudes ({solver})", log_sigma=True,
                 legend_size=6, which="both")
    ax = axes[1]
    for regime in REGIMES:
        s = stats[(regime, solver)]
        _band(ax, s["sigmas"][:-1], s["cos"], regime)
    _finish_axes(ax, "sigma", "cos(d_n, x_n - x_N)",
                 "direction of the ODE vs direction to the end point", log_sigma=True)
    _save(fig, path, dpi)


def plot_samples_nearest(stats, solver, data, image_shape, path, per_row=8, dpi=110):
    """Final samples of each denoiser above their nearest training images."""
    plt = _plt()
    per_row = min(per_row, len(stats[(REGIMES[0], solver)]["final"]))
    fig, axes = plt.subplots(2 * len(REGIMES), 1,
                             figsize=(per_row * 0.8 + 1.2, 2 * len(REGIMES) * 0.95))
    for i, regime in enumerate(REGIMES):
        final = stats[(regime, solver)]["final"]
        x = final[:per_row].reshape(-1, data.shape[1])
        idx = np.argmin(((x[:, None] - data[None]) ** 2).sum(-1), axis=1)
        for j, (rows, label) in enumerate(((x, f"{regime} samples"),
                                           (data[idx], "nearest training"))):
            imgs = np.clip(rows.reshape((-1,) + image_shape)[..., 0], -1, 1)
            ax = axes[2 * i + j]
            ax.imshow(np.concatenate(list(imgs), axis=1), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    _save(fig, path, dpi)


# ------------------------------------------------------------------------ driver


def run(cfg, workdir: str) -> dict:
    """Runs the analysis, writes the figures and summary.json, returns the summary."""
    validate(cfg)
    t_start = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    dtype = jnp.float64 if cfg.float64 else jnp.float32
    name, images = load_images(cfg)
    flat = images.reshape(images.shape[0], -1)
    dim = flat.shape[1]
    dens = build_denoisers(flat, cfg)
    sigmas = schedules.get("polynomial", cfg.num_steps, cfg.sigma_min, cfg.sigma_max,
                           rho=cfg.rho).astype(dtype)
    x_T = cfg.sigma_max * jax.random.normal(jax.random.PRNGKey(cfg.seed),
                                            (cfg.num_samples,) + images.shape[1:], dtype)
    data = jnp.asarray(flat, dtype)
    first = cfg.solvers[0]
    stats, summary_runs = {}, {}
    total = len(REGIMES) * len(cfg.solvers) + 2
    with tqdm(total=total, desc="trajectory analysis", unit="task") as progress:
        for regime in REGIMES:
            for solver in cfg.solvers:
                _, traj = jaxdiff.sample(dens[regime], x_T, sigmas, solver=solver,
                                         return_trajectory=True)
                s = trajectory_stats(traj, data)
                if regime == "optimal" and solver == "euler":
                    # Annealed mean shift: the KDE at bandwidth sigma_n never decreases.
                    s["kde_gain"] = np.asarray(geometry.kde_gain(data, traj.xs, sigmas))
                    s["kde_tol"] = 1e-9 if dtype == jnp.float64 else 1e-2
                stats[(regime, solver)] = s
                summary_runs[f"{regime}/{solver}"] = summarise(s, dim)
                progress.update(1)
        sd = geometry.score_deviation(dens["gmm"], dens["optimal"], x_T, sigmas,
                                      solver=cfg.score_solver)
        curves, sd_summary = score_deviation_stats(sd)
        progress.update(1)
        title = f"{name} (D = {dim})"
        sig = np.asarray(sigmas, np.float64)
        plot_deviation(stats, cfg.solvers, os.path.join(workdir, "deviation.png"), title,
                       dpi=cfg.dpi)
        plot_distance_to_end(stats, first, os.path.join(workdir, "distance_to_end.png"), title,
                             dpi=cfg.dpi)
        plot_boomerang(stats, first, cfg.num_plot_trajectories,
                       os.path.join(workdir, "boomerang.png"), title, dpi=cfg.dpi)
        plot_score_deviation(curves, sig, cfg.score_solver,
                             os.path.join(workdir, "score_deviation.png"), title,
                             dpi=cfg.dpi)
        plot_magnitudes(stats, first, dim, os.path.join(workdir, "magnitudes.png"), title,
                        dpi=cfg.dpi)
        plot_samples_nearest(stats, first, flat, images.shape[1:],
                             os.path.join(workdir, "samples_nearest.png"), dpi=cfg.dpi)
        progress.update(1)
    summary = {
        "dataset": name, "num_images": int(images.shape[0]), "dim": int(dim),
        "num_samples": int(cfg.num_samples), "num_steps": int(cfg.num_steps),
        "schedule": {"name": "polynomial", "rho": float(cfg.rho),
                     "sigma_min": float(cfg.sigma_min), "sigma_max": float(cfg.sigma_max)},
        "gmm_components": int(cfg.gmm_components), "dtype": jnp.dtype(dtype).name,
        "device": str(jax.devices()[0].device_kind),
        "runs": summary_runs,
        "score_deviation": {"solver": cfg.score_solver, **sd_summary},
        "runtime_seconds": time.perf_counter() - t_start,
    }
    with open(os.path.join(workdir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _report(summary, workdir):
    print(json.dumps(summary, indent=1))
    print(f"wrote summary.json and PNGs to {workdir}")


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(run, _report, what="analysis config file")


if __name__ == "__main__":
    main()
