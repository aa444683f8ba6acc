"""Guidance and conditioning experiments on a class-conditional U-Net, with measured figures.

    python -m jaxdiff.guide --config=configs/guide_digits.py --workdir=runs/guide_digits

``config.task`` picks what runs: ``classifier_free``, ``classifier``, ``inpaint``,
``invert``, ``sdedit``, a comma-separated list of them, or ``all``. What is needed is
trained (or loaded) first: the class-conditional U-Net (:mod:`jaxdiff.train`, in
``config.unet_workdir``), the plain scoring classifier (:mod:`jaxdiff.fid`,
``workdir/classifier``) and, for classifier guidance, the noise-aware classifier
(:mod:`jaxdiff.noisy_classifier`, ``workdir/noisy_classifier``).

Measured figures (``workdir/guide.json``; accuracies are those of the plain classifier on
the final images, clipped to [-1, 1]):

* ``classifier_free`` / ``classifier``: class accuracy, mean p(target) and the
  classifier-feature Frechet distance to the real data (NOT Inception FID) of guided
  samples versus the guidance scale w. CFG: ``D_u + w (D_c - D_u)``; classifier guidance:
  the unconditional denoiser (null label) plus ``w sigma^2 grad log p(y | x; sigma)``.
* ``inpaint``: per mask, the MSE on the known region (0 by construction), the MSE on the
  masked region against the original, and accuracy / p(original label) of the
  inpainted images; baselines: originals, the masked region left blank (-1), and
  unconditional samples from the same noise.
* ``invert``: round-trip RMSE (invert sigma_min -> sigma_max, sample back with the same
  solver and schedule) versus NFE per direction, for each single-step solver.
* ``sdedit``: MSE to the guide image and accuracy w.r.t. the original label
  (unconditional) or the next class ``(y + 1) % 10`` (conditional) versus sigma_start.

Units: images in [-1, 1], sigma in data units, MSE per pixel.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff
from jaxdiff import conditioning, frechet, guidance, schedules
from jaxdiff.experiments import fid
from jaxdiff.experiments import noisy_classifier as nc_job
from jaxdiff.models import noisy_classifier as nc
from jaxdiff.models import unet
from jaxdiff.training import edm as train_lib
from jaxdiff.training import noisy_classifier as nc_training
from jaxinfra import images as images_lib
from jaxinfra.metrics import MetricsLog

__all__ = ["TASKS", "MASKS", "parse_tasks", "make_mask", "run"]

TASKS = ("classifier_free", "classifier", "inpaint", "invert", "sdedit")
MASKS = ("bottom_half", "right_half", "center", "left_half", "top_half")


def parse_tasks(task: str) -> tuple:
    """``"all"`` or comma-separated task names -> tuple of names (ValueError otherwise)."""
    names = [t.strip() for t in str(task).split(",") if t.strip()]
    if names == ["all"]:
        return TASKS
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise ValueError(f"unknown task(s) {bad or [task]}; valid: {list(TASKS)} or 'all'")
    return tuple(dict.fromkeys(names))


def make_mask(name: str, image_shape) -> np.ndarray:
    """(H, W, C) float32 mask, 1 = known pixel, 0 = to inpaint.

    ``bottom_half`` / ``top_half`` / ``right_half`` / ``left_half``: that half unknown;
    ``center``: the central (H/2, W/2) block unknown.
    """
    h, w, c = image_shape
    m = np.ones((h, w, c), np.float32)
    if name == "bottom_half":
        m[h // 2:] = 0
    elif name == "top_half":
        m[:h // 2] = 0
    elif name == "right_half":
        m[:, w // 2:] = 0
    elif name == "left_half":
        m[:, :w // 2] = 0
    elif name == "center":
        m[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = 0
    else:
        raise ValueError(f"unknown mask {name!r}; valid: {list(MASKS)}")
    return m


def _validate(config) -> tuple:
    """Checks every option that would otherwise fail late; returns the task tuple."""
    tasks = parse_tasks(config.task)
    solvers = jaxdiff.solvers.SOLVERS
    if config.sampling.solver not in solvers:
        raise ValueError(f"unknown sampling.solver {config.sampling.solver!r}; valid: "
                         f"{list(solvers)}")
    for name in ("inpaint",):
        if config[name].solver not in conditioning.SINGLE_STEP_SOLVERS:
            raise ValueError(f"{name}.solver must be one of "
                             f"{list(conditioning.SINGLE_STEP_SOLVERS)}, got "
                             f"{config[name].solver!r}")
    for s in config.invert.solvers:
        if s not in conditioning.SINGLE_STEP_SOLVERS:
            raise ValueError(f"invert.solvers: {s!r} is not one of "
                             f"{list(conditioning.SINGLE_STEP_SOLVERS)}")
    if config.sdedit.solver not in solvers:
        raise ValueError(f"unknown sdedit.solver {config.sdedit.solver!r}; valid: "
                         f"{list(solvers)}")
    for m in config.inpaint.masks:
        make_mask(m, (8, 8, 1))
    for r in config.inpaint.resample:
        if int(r) != r or r < 0:
            raise ValueError(f"inpaint.resample entries must be integers >= 0, got {r!r}")
    for n in list(config.invert.num_steps) + [config.sampling.num_steps,
                                              config.sdedit.num_steps]:
        if int(n) != n or n < 2:
            raise ValueError(f"num_steps must be integers >= 2 (timestamps), got {n!r}")
    if config.unet.model.num_classes <= 0:
        raise ValueError("config.unet must describe a class-conditional U-Net "
                         "(model.num_classes > 0), e.g. configs/edm_digits.py:cond")
    for s in config.sdedit.sigma_starts:
        if not config.sampling.sigma_min < s:
            raise ValueError(f"sdedit.sigma_starts must exceed sampling.sigma_min="
                             f"{config.sampling.sigma_min}, got {s}")
    return tasks


# --------------------------------------------------------------------------- helpers
class _Ctx:
    """Everything the tasks share (models, data, scorers, output folders)."""

    def __init__(self, config, workdir):
        self.config, self.workdir = config, workdir
        self.figdir = os.path.join(workdir, "figures")
        os.makedirs(self.figdir, exist_ok=True)
        unet_dir = config.unet_workdir or os.path.join(workdir, "unet")
        ckpt = os.path.join(unet_dir, "checkpoints")
        if not (os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))):
            print(f"training the class-conditional U-Net in {unet_dir} ...")
            train_lib.train_and_evaluate(config.unet, unet_dir)
        self.model, self.params, meta = train_lib.load_checkpoint(unet_dir)
        if self.model.num_classes <= 0:
            raise ValueError(f"the U-Net in {unet_dir!r} is unconditional; guide needs a "
                             f"class-conditional one (configs/edm_digits.py:cond)")
        self.unet_info = {"workdir": unet_dir, "step": meta["step"],
                          "num_classes": self.model.num_classes,
                          "num_params": unet.count_params(self.params)}
        self.null = self.model.num_classes
        self.clf, info = fid.load_or_train_classifier(config.unet,
                                                      os.path.join(workdir, "classifier"))
        self.clf_info = {"test_accuracy": info["test_accuracy"], "loaded": info["loaded"]}
        (self.x_tr, self.y_tr), (self.x_te, self.y_te) = fid.load_splits(config.unet)
        self.real_stats = frechet.feature_stats(self.clf, self.x_tr)
        s = config.sampling
        self.sigmas = jnp.asarray(schedules.get("polynomial", int(s.num_steps), s.sigma_min,
                                                s.sigma_max, rho=s.rho), jnp.float32)
        self.shape = (self.model.image_size, self.model.image_size, self.model.in_channels)

    def key(self, i):
        return jax.random.fold_in(jax.random.PRNGKey(int(self.config.seed)), i)

    def noise(self, i, n):
        """(n, H, W, C) x_T = sigma_max * z for the i-th experiment."""
        return self.sigmas[0] * jax.random.normal(self.key(i), (n,) + self.shape, jnp.float32)

    def uncond(self, n):
        return unet.make_denoiser(self.model, self.params, jnp.full((n,), self.null))

    def probs(self, images):
        """(N, classes) softmax of the plain classifier on images clipped to [-1, 1]."""
        x = jnp.asarray(np.clip(np.asarray(images, np.float32), -1, 1))
        return np.asarray(_softmax(self.clf.params, x, model=self.clf.model))

    def score(self, images, labels) -> dict:
        p = self.probs(images)
        labels = np.asarray(labels)
        return {"accuracy": float(np.mean(np.argmax(p, 1) == labels)),
                "p_target": float(np.mean(p[np.arange(len(labels)), labels]))}

    def grid(self, images, name, cols):
        path = os.path.join(self.figdir, name)
        images_lib.save_image_grid(np.clip(np.asarray(images), -1, 1), path, cols=cols, scale=6)
        return path


@functools.partial(jax.jit, static_argnames=("model",))
def _softmax(params, x, *, model):
    return jax.nn.softmax(model.apply({"params": params}, x), axis=-1)


def _bar(config, it, desc):
    from tqdm import tqdm
    return tqdm(it, desc=desc, disable=not config.progress, leave=False)


# ----------------------------------------------------------------------------- tasks
def _guidance_sweep(ctx, make_fn, scales, key_index, desc):
    n = int(ctx.config.guidance.num_samples)
    labels = np.arange(n) % 10
    x_T = ctx.noise(key_index, n)
    rows, samples = [], []
    for w in _bar(ctx.config, scales, desc):
        t = time.perf_counter()
        fn = make_fn(jnp.asarray(labels, jnp.int32), float(w))
        out = np.asarray(jaxdiff.sample(fn, x_T, ctx.sigmas, solver=ctx.config.sampling.solver))
        row = {"scale": float(w), **ctx.score(out, labels),
               "fd": frechet.fd_of_samples(out, ctx.clf, ctx.real_stats),
               "seconds": time.perf_counter() - t}
        rows.append(row)
        samples.append(out[:10])
    return rows, np.concatenate(samples)


def task_classifier_free(ctx):
    model_fn = guidance.unet_model_fn(ctx.model, ctx.params)
    scales = ctx.config.guidance.cfg_scales
    rows, grid = _guidance_sweep(
        ctx, lambda y, w: guidance.classifier_free(model_fn, y, ctx.null, w), scales, 1,
        "cfg")
    return {"rows": rows, "grid": ctx.grid(grid, "guide_cfg_grid.png", 10),
            "nfe": jaxdiff.nfe(ctx.config.sampling.solver, int(ctx.config.sampling.num_steps)),
            "note": "one U-Net call per NFE on a doubled batch (conditional + null label)"}


def task_classifier(ctx):
    cfg = ctx.config
    info_dir = os.path.join(ctx.workdir, nc_job.SUBDIR)
    state, info = nc_training.train(ctx.x_tr, ctx.y_tr, nc_job.classifier_settings(cfg),
                                    info_dir)
    log_prob = nc.log_prob_fn(state)
    n = int(cfg.guidance.num_samples)
    base = ctx.uncond(n)
    rows, grid = _guidance_sweep(
        ctx, lambda y, w: guidance.classifier(base, log_prob, y, w),
        cfg.guidance.classifier_scales, 2, "classifier guidance")
    return {"rows": rows, "grid": ctx.grid(grid, "guide_classifier_grid.png", 10),
            "nfe": jaxdiff.nfe(cfg.sampling.solver, int(cfg.sampling.num_steps)),
            "noisy_classifier": {
                "steps_trained_now": info["steps_trained"], "seconds": info["seconds"],
                "test_accuracy_vs_sigma": nc_job.noised_accuracy(state, ctx.x_te,
                                                                 ctx.y_te, cfg)},
            "note": "unconditional denoiser (null label) + w sigma^2 grad_x log p(y|x;sigma)"}


def task_inpaint(ctx):
    cfg = ctx.config.inpaint
    n = int(cfg.num_images)
    x0, y0 = ctx.x_te[:n], ctx.y_te[:n]
    x_T = ctx.noise(3, n)
    den = ctx.uncond(n)
    plain = np.asarray(jaxdiff.sample(den, x_T, ctx.sigmas, solver=cfg.solver))
    out = {"num_images": n, "solver": cfg.solver,
           "nfe_per_repetition": jaxdiff.nfe(cfg.solver, int(ctx.config.sampling.num_steps)),
           "originals": ctx.score(x0, y0), "masks": {}}
    grid = [x0[:10]]
    for mask_name in cfg.masks:
        mask = make_mask(mask_name, ctx.shape)
        unknown = (1 - mask).astype(bool)
        res = {"unknown_fraction": float(unknown.mean())}
        blank = np.where(mask > 0, x0, -1.0)
        res["baseline_blank"] = {**ctx.score(blank, y0),
                                 "masked_mse": float(np.mean((blank - x0)[:, unknown] ** 2))}
        res["baseline_unconditional"] = {
            "masked_mse": float(np.mean((plain - x0)[:, unknown] ** 2))}
        grid.append(blank[:10])
        for r in _bar(ctx.config, cfg.resample, f"inpaint {mask_name}"):
            t = time.perf_counter()
            img = np.asarray(conditioning.inpaint(den, x_T, ctx.sigmas, x0, mask,
                                                  key=ctx.key(4), solver=cfg.solver,
                                                  resample=int(r)))
            res[f"resample_{int(r)}"] = {
                "known_mse": float(np.mean((img - x0)[:, ~unknown] ** 2)),
                "known_max_abs": float(np.max(np.abs(img - x0)[:, ~unknown])),
                "masked_mse": float(np.mean((img - x0)[:, unknown] ** 2)),
                **ctx.score(img, y0), "seconds": time.perf_counter() - t}
            grid.append(img[:10])
        out["masks"][mask_name] = res
    out["grid"] = ctx.grid(np.concatenate(grid), "guide_inpaint_grid.png", 10)
    out["grid_rows"] = ["original"] + [
        f"{m}: {k}" for m in cfg.masks for k in ["masked (blank)"] +
        [f"inpainted, resample {int(r)}" for r in cfg.resample]]
    return out


def task_invert(ctx):
    cfg, s = ctx.config.invert, ctx.config.sampling
    n = int(cfg.num_images)
    x0 = ctx.x_te[:n]
    den = ctx.uncond(n)
    rows, grid = [], [x0[:10]]
    combos = [(solver, int(k)) for solver in cfg.solvers for k in cfg.num_steps]
    for solver, k in _bar(ctx.config, combos, "invert"):
        sig = jnp.asarray(schedules.get("polynomial", k, s.sigma_min, s.sigma_max, rho=s.rho),
                          jnp.float32)
        t = time.perf_counter()
        rec, lat = conditioning.reconstruct(den, x0, sig, solver=solver)
        rec, lat = np.asarray(rec), np.asarray(lat)
        err = rec - x0
        rows.append({"solver": solver, "num_steps": k, "nfe_per_direction":
                     jaxdiff.nfe(solver, k), "rmse": float(np.sqrt(np.mean(err ** 2))),
                     "max_abs": float(np.max(np.abs(err))),
                     "latent_std_over_sigma_max": float(np.std(lat) / s.sigma_max),
                     "seconds": time.perf_counter() - t})
        if solver == cfg.solvers[0] and k in (min(cfg.num_steps), max(cfg.num_steps)):
            grid.append(rec[:10])
    return {"num_images": n, "rows": rows,
            "grid": ctx.grid(np.concatenate(grid), "guide_invert_grid.png", 10),
            "grid_rows": ["original", f"{cfg.solvers[0]} {min(cfg.num_steps)} steps",
                          f"{cfg.solvers[0]} {max(cfg.num_steps)} steps"],
            "note": "unconditional denoiser; x_rec = sample(invert(x0)) on the same schedule"}


def task_sdedit(ctx):
    cfg, s = ctx.config.sdedit, ctx.config.sampling
    n = int(cfg.num_images)
    x0, y0 = ctx.x_te[:n], ctx.y_te[:n]
    target = (y0 + 1) % 10
    dens = {"unconditional": ctx.uncond(n),
            "next_class": unet.make_denoiser(ctx.model, ctx.params, jnp.asarray(target))}
    rows, grid = [], [x0[:10]]
    for sigma_start in _bar(ctx.config, cfg.sigma_starts, "sdedit"):
        row = {"sigma_start": float(sigma_start)}
        for name, den in dens.items():
            img = np.asarray(conditioning.sdedit(den, x0, float(sigma_start), ctx.key(5),
                                                 int(cfg.num_steps), solver=cfg.solver,
                                                 sigma_min=s.sigma_min, rho=s.rho))
            row[name] = {"mse_to_guide": float(np.mean((img - x0) ** 2)),
                         "accuracy_original": ctx.score(img, y0)["accuracy"],
                         "accuracy_next_class": ctx.score(img, target)["accuracy"]}
            if name == "next_class":
                grid.append(img[:10])
        rows.append(row)
    return {"num_images": n, "rows": rows, "solver": cfg.solver,
            "nfe": jaxdiff.nfe(cfg.solver, int(cfg.num_steps)),
            "grid": ctx.grid(np.concatenate(grid), "guide_sdedit_grid.png", 10),
            "grid_rows": ["original"] + [f"to next class, sigma_start {v}"
                                         for v in cfg.sigma_starts]}


TASK_FNS = {"classifier_free": task_classifier_free, "classifier": task_classifier,
            "inpaint": task_inpaint, "invert": task_invert, "sdedit": task_sdedit}


# ----------------------------------------------------------------------------- plots
def _plots(results, figdir) -> list:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = []
    sweeps = [(k, lab) for k, lab in (("classifier_free", "classifier-free (CFG)"),
                                      ("classifier", "classifier guidance"))
              if k in results]
    if sweeps:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
        for k, lab in sweeps:
            rows = results[k]["rows"]
            w = [r["scale"] for r in rows]
            ax[0].plot(w, [r["accuracy"] for r in rows], "o-", label=lab)
            ax[1].plot(w, [r["fd"] for r in rows], "o-", label=lab)
        ax[0].set(xlabel="guidance scale w", ylabel="class accuracy (plain classifier)",
                  ylim=(0, 1.02))
        ax[1].set(xlabel="guidance scale w", ylabel="Frechet distance (classifier features)",
                  yscale="log")
        ax[0].legend()
        ax[0].grid(alpha=0.3)
        ax[1].grid(alpha=0.3)
        fig.tight_layout()
        paths.append(os.path.join(figdir, "guidance_accuracy.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if "invert" in results:
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        rows = results["invert"]["rows"]
        for solver in dict.fromkeys(r["solver"] for r in rows):
            rs = [r for r in rows if r["solver"] == solver]
            ax.loglog([r["nfe_per_direction"] for r in rs], [r["rmse"] for r in rs], "o-",
                      label=solver)
        ax.set(xlabel="NFE per direction", ylabel="round-trip RMSE (pixels in [-1, 1])")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["nfe_per_direction"] for r in rows}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        fig.tight_layout()
        paths.append(os.path.join(figdir, "inversion_error.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


# ------------------------------------------------------------------------------- run
def run(config, workdir: str) -> dict:
    """Runs the tasks of ``config.task`` and writes ``workdir/guide.json``.

    Args:
      config: a ConfigDict as in ``configs/guide_digits.py``.
      workdir: output folder.

    Returns:
      The results dict (one entry per task, plus the models' info).

    Raises:
      ValueError: an unknown task, mask, solver or bad step count (before any training).
    """
    tasks = _validate(config)
    os.makedirs(workdir, exist_ok=True)
    t0 = time.perf_counter()
    ctx = _Ctx(config, workdir)
    results = {"tasks": list(tasks), "unet": ctx.unet_info, "scoring_classifier": ctx.clf_info,
               "sampling": dict(config.sampling),
               "note": "accuracies by the plain digits classifier of jaxdiff.fid; Frechet "
                       "distance in its feature space, NOT Inception FID",
               "setup_seconds": time.perf_counter() - t0}
    with MetricsLog(workdir) as log:
        for i, task in enumerate(tasks):
            t = time.perf_counter()
            results[task] = TASK_FNS[task](ctx)
            results[task]["task_seconds"] = time.perf_counter() - t
            log.write(i, {"seconds": results[task]["task_seconds"]}, prefix=task)
            print(f"{task}: {results[task]['task_seconds']:.1f} s")
    results["figures"] = _plots(results, ctx.figdir)
    results["total_seconds"] = time.perf_counter() - t0
    path = os.path.join(workdir, "guide.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    if config.publish:
        os.makedirs(os.path.dirname(os.path.abspath(config.results_path)), exist_ok=True)
        shutil.copyfile(path, config.results_path)
        os.makedirs(config.figures_path, exist_ok=True)
        for name in os.listdir(ctx.figdir):
            shutil.copyfile(os.path.join(ctx.figdir, name),
                            os.path.join(config.figures_path, name))
    return results


def _report(res, workdir):
    for key in ("classifier_free", "classifier"):
        if key in res:
            print(f"{key}: " + ", ".join(f"w={r['scale']:g}: acc {r['accuracy']:.3f} "
                                         f"FD {r['fd']:.2f}" for r in res[key]["rows"]))
    if "inpaint" in res:
        for m, r in res["inpaint"]["masks"].items():
            parts = [f"{k}: known MSE {v['known_mse']:.2e}, masked MSE {v['masked_mse']:.3f}, "
                     f"acc {v['accuracy']:.3f}" for k, v in r.items()
                     if k.startswith("resample")]
            print(f"inpaint {m}: " + "; ".join(parts))
    if "invert" in res:
        print("invert: " + ", ".join(f"{r['solver']}@{r['nfe_per_direction']}: "
                                     f"{r['rmse']:.3g}" for r in res["invert"]["rows"]))
    if "sdedit" in res:
        print("sdedit: " + ", ".join(
            f"s={r['sigma_start']:g}: mse {r['unconditional']['mse_to_guide']:.3f} "
            f"next-class acc {r['next_class']['accuracy_next_class']:.2f}"
            for r in res["sdedit"]["rows"]))
    print(f"wrote {os.path.join(workdir, 'guide.json')} ({res['total_seconds']:.0f} s)")


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(run, _report, what="guidance config file")


if __name__ == "__main__":
    main()
