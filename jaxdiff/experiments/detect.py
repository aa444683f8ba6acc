"""The detection benchmark behind ``python -m jaxdiff.detect`` (see configs/detect_digits.py).

Generalisation as the detection survey frames it: every detector is fitted on real
images vs images from ONE generator (U-Net "a", one solver and NFE; once per entry of
``config.train_generators``), its decision threshold is fixed on that training split,
and it is tested on held-out real images vs each generator of the config: fresh samples
of the training generator, other solvers / NFEs of the same U-Net, and a second U-Net
"b" trained with another seed and width.
Generated images are clipped and quantized to the data's grey levels
(``config.quantize_levels``; digits: 17) as saving them in the data's format would, so
no detector can win by spotting off-grid pixel values.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import jax
import numpy as np

from jaxdiff import detectors, schedules
from jaxinfra import datasets as data_lib

__all__ = ["parse_generator", "build_detectors", "run", "report", "markdown_table",
           "plot_roc"]


def parse_generator(spec: str):
    """"model:solver:NFE" -> (model, solver, nfe); ValueError naming the bad spec."""
    from jaxdiff.experiments import bench
    parts = str(spec).split(":")
    if len(parts) != 3 or parts[0] not in ("a", "b") or not parts[2].strip().isdigit():
        raise ValueError(f"bad generator {spec!r}: expected 'model:solver:NFE' with model "
                         "'a' or 'b', e.g. 'a:heun:34'")
    model, solver, nfe = parts[0], parts[1].strip(), int(parts[2])
    if solver not in bench.SOLVER_SETTINGS:
        raise ValueError(f"unknown solver {solver!r} in generator {spec!r}; valid: "
                         f"{sorted(bench.SOLVER_SETTINGS)}")
    bench.plan(solver, nfe)   # ValueError if the NFE is unreachable
    return model, solver, nfe


def _check_config(config):
    gens = [parse_generator(g) for g in config.generators]
    train = [parse_generator(g) for g in config.train_generators]
    if not train:
        raise ValueError("train_generators is empty")
    missing = [g for g in config.train_generators if g not in tuple(config.generators)]
    if missing:
        raise ValueError(f"train_generators {missing} must be among the (test) generators "
                         f"{list(config.generators)}")
    bad = [d for d in config.detectors if d not in detectors.DETECTORS]
    if bad:
        raise ValueError(f"unknown detector(s) {bad}; valid: {list(detectors.DETECTORS)}")
    n = int(config.num_train) + int(config.num_test)
    if int(config.num_train) < 2 or int(config.num_test) < 2 or n > 1797:
        raise ValueError(f"need num_train, num_test >= 2 and num_train + num_test <= 1797 "
                         f"(digits), got {config.num_train} + {config.num_test}")
    return gens, train


def _workdir(path: str, workdir: str, name: str) -> str:
    return path if path else os.path.join(workdir, name)


def ensure_model(train_config, path: str, log=print):
    """Loads the U-Net in ``path``, training it with ``train_config`` first if missing
    (or resuming it if its last checkpoint is before ``train_config.num_steps``).

    Returns (model, ema_params, meta, train_seconds or 0.0)."""
    from jaxdiff.training import edm as train_lib
    seconds = 0.0
    try:
        model, ema, meta = train_lib.load_checkpoint(path)
        done = meta["step"] >= int(train_config.num_steps)
    except FileNotFoundError:
        done = False
    if not done:   # missing or interrupted: train_and_evaluate resumes a checkpoint
        log(f"no finished U-Net checkpoint in {path!r}: training (python -m jaxdiff.train "
            f"with seed {train_config.seed}, base_channels "
            f"{train_config.model.base_channels}, {train_config.num_steps} steps)")
        t = time.perf_counter()
        train_lib.train_and_evaluate(train_config, path)
        seconds = time.perf_counter() - t
        model, ema, meta = train_lib.load_checkpoint(path)
    return model, ema, meta, seconds


def build_detectors(config):
    """[(detector, input)] for ``config.detectors``; input "images" or "dire_error".

    The DIRE detectors here take precomputed error maps (:func:`jaxdiff.detect_features.dire_error`
    with U-Net a, shared by "dire" and "dire_cnn"): together they equal
    :func:`jaxdiff.detectors.dire_detector`."""
    c = config.cnn
    cnn_kw = dict(width=int(c.width), steps=int(c.steps), batch_size=int(c.batch_size),
                  lr=float(c.lr), weight_decay=float(c.weight_decay))
    make = {
        "dire": lambda: (detectors.make_detector("dire", detectors.dire_features, "logistic",
                                              l2=float(config.dire.l2)), "dire_error"),
        "dire_cnn": lambda: (detectors.make_detector("dire_cnn", detectors.log_error_map, "cnn",
                                                  **cnn_kw), "dire_error"),
        "frequency": lambda: (detectors.frequency_detector(l2=float(config.frequency.l2)),
                              "images"),
        "cnn": lambda: (detectors.cnn_detector(**cnn_kw), "images"),
    }
    return [make[name]() for name in config.detectors]


def _sample(model, ema, num, key, solver, nfe, batch, levels):
    from jaxdiff.experiments import bench
    from jaxdiff.training import edm as train_lib
    sched, sched_kw, opts = bench.SOLVER_SETTINGS[solver]
    n_steps, afs = bench.plan(solver, nfe)
    sigmas = schedules.get(sched, n_steps, **sched_kw)
    x = train_lib.sample_images(model, ema, num, key=key, sigmas=sigmas, solver=solver,
                                batch_size=batch, afs=afs, **opts)
    return np.asarray(detectors.quantize(x, levels), np.float32)


def run(config, workdir: str) -> dict:
    """Runs the benchmark; returns the results dict (also ``workdir/detect.json``)."""
    from tqdm import tqdm

    from jaxdiff.models import unet
    gens, _ = _check_config(config)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.perf_counter()
    needed = sorted({g[0] for g in gens})
    models, train_seconds = {}, {}
    for name in needed:
        cfg = config.model_config if name == "a" else config.second_config
        path = _workdir(config.model_workdir if name == "a" else config.second_workdir,
                        workdir, f"model_{name}")
        model, ema, meta, secs = ensure_model(cfg, path)
        models[name] = (model, ema, meta, path)
        train_seconds[name] = secs
    if "a" not in models:
        raise ValueError("the detectors need U-Net 'a' (DIRE); use it in the generators")

    images, _ = data_lib.load(config.dataset)
    perm = np.random.default_rng(int(config.seed)).permutation(images.shape[0])
    n_tr, n_te = int(config.num_train), int(config.num_test)
    real_train, real_test = images[perm[:n_tr]], images[perm[n_tr:n_tr + n_te]]
    levels = int(config.quantize_levels)

    key = jax.random.PRNGKey(int(config.seed))
    t = time.perf_counter()
    sets = {}
    specs = [(f"train {g}", g, n_tr, 1000 + j) for j, g in enumerate(config.train_generators)]
    specs += [(g, g, n_te, 1 + i) for i, g in enumerate(config.generators)]
    for set_name, spec, num, seed in tqdm(specs, desc="sample", disable=not config.progress):
        m, solver, nfe = parse_generator(spec)
        model, ema, _, _ = models[m]
        sets[set_name] = _sample(model, ema, num, jax.random.fold_in(key, seed), solver,
                                 nfe, int(config.sample_batch), levels)
    sample_seconds = time.perf_counter() - t

    inputs = {"images": dict(sets, real_train=real_train, real_test=real_test)}
    detectors = build_detectors(config)
    t = time.perf_counter()
    if any(kind == "dire_error" for _, kind in detectors):
        d = config.dire
        sigmas = schedules.get("polynomial", int(d.num_steps), float(d.sigma_min),
                               float(d.sigma_max), rho=float(d.rho))
        denoise_a = unet.make_denoiser(*models["a"][:2])
        inputs["dire_error"] = {
            k: detectors.dire_error(denoise_a, v, sigmas, solver=d.solver,
                                 batch_size=int(config.sample_batch))
            for k, v in tqdm(inputs["images"].items(), desc="dire reconstruction",
                             disable=not config.progress)}
    results = {"runs": {}, "seconds": {"dire_reconstruction": time.perf_counter() - t}}
    y_tr = np.r_[np.zeros(n_tr, np.int32), np.ones(n_tr, np.int32)]
    y_te = np.r_[np.zeros(n_te, np.int32), np.ones(n_te, np.int32)]
    for det, kind in tqdm(detectors, desc="detectors", disable=not config.progress):
        t = time.perf_counter()
        feats = {k: det.transform(v) for k, v in inputs[kind].items()}
        for train_gen in config.train_generators:
            fake = feats[f"train {train_gen}"]
            state = det.head_fit(feats["real_train"], fake, jax.random.fold_in(key, 99))
            s_tr = np.concatenate([det.head_score(state, feats["real_train"]),
                                   det.head_score(state, fake)])
            thr = detectors.fit_threshold(s_tr, y_tr)
            s_real = np.asarray(det.head_score(state, feats["real_test"]))
            per_gen = {"train split": detectors.metrics(s_tr, y_tr, thr)}
            for g in config.generators:
                s = np.concatenate([s_real, np.asarray(det.head_score(state, feats[g]))])
                per_gen[g] = detectors.metrics(s, y_te, thr)
            results["runs"].setdefault(train_gen, {})[det.name] = {
                "threshold": thr, "results": per_gen}
        results["seconds"][det.name] = time.perf_counter() - t

    results.update({
        "dataset": config.dataset, "num_train": n_tr, "num_test": n_te,
        "quantize_levels": levels, "train_generators": list(config.train_generators),
        "generators": list(config.generators),
        "models": {k: {"workdir": v[3], "step": v[2]["step"], "seed": v[2]["seed"],
                       "base_channels": v[2]["model"]["base_channels"],
                       "train_seconds": train_seconds[k]} for k, v in models.items()},
        "dire": dict(config.dire), "cnn": dict(config.cnn),
        "sample_seconds": sample_seconds,
        "total_seconds": time.perf_counter() - t_start,
        "note": ("real digits were all in the U-Nets' training set (digits has 1797 "
                 "images); the detector's real train/test splits are disjoint."),
    })
    plot_roc(results, os.path.join(workdir, "detect_roc.png"))
    for run_ in results["runs"].values():       # thin the stored ROC curves
        for det in run_.values():
            for r in det["results"].values():
                r["fpr"], r["tpr"] = _thin(r["fpr"], r["tpr"])
    with open(os.path.join(workdir, "detect.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(workdir, "detect.md"), "w") as f:
        f.write(markdown_table(results))
    if config.publish:
        os.makedirs("benchmarks/results", exist_ok=True)
        os.makedirs("docs/figures", exist_ok=True)
        shutil.copy(os.path.join(workdir, "detect.json"), "benchmarks/results/detect_digits.json")
        shutil.copy(os.path.join(workdir, "detect_roc.png"), "docs/figures/detect_roc.png")
    return results


def _thin(fpr, tpr, num: int = 51):
    """At most ``num`` ROC points (evenly spaced along the curve, ends kept), 4 decimals."""
    idx = np.unique(np.linspace(0, len(fpr) - 1, min(num, len(fpr))).round().astype(int))
    return ([round(float(fpr[i]), 4) for i in idx], [round(float(tpr[i]), 4) for i in idx])


def markdown_table(results) -> str:
    """Per training generator: one row per test set, AUC / accuracy per detector."""
    out = []
    for train_gen, run_ in results["runs"].items():
        dets = list(run_)
        out += [f"Trained on real vs `{train_gen}`:", "",
                "| test set (held-out real vs) | " + " | ".join(dets) + " |",
                "|---|" + "---|" * len(dets)]
        for g in ["train split"] + results["generators"]:
            label = f"`{g}`" if g != "train split" else "(training split)"
            if g == train_gen:
                label += " (training generator, fresh samples)"
            cells = [run_[d]["results"][g] for d in dets]
            out.append(f"| {label} | " + " | ".join(f"{c['auc']:.3f} / {c['accuracy']:.3f}"
                                                    for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def plot_roc(results, path: str):
    """A row per training generator, a panel per detector, a curve per test generator
    (dashed: the second U-Net)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = results["runs"]
    dets = list(next(iter(runs.values())))
    fig, axes = plt.subplots(len(runs), len(dets), figsize=(3.4 * len(dets), 3.4 * len(runs)),
                             squeeze=False)
    for row, (train_gen, run_) in zip(axes, runs.items()):
        for ax, d in zip(row, dets):
            for g in results["generators"]:
                r = run_[d]["results"][g]
                ax.plot(r["fpr"], r["tpr"], "-" if g.startswith("a:") else "--", lw=1.1,
                        label=f"{g} ({r['auc']:.2f})")
            ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
            ax.set_title(f"{d}, trained on {train_gen}", fontsize=9)
            ax.legend(fontsize=6, loc="lower right")
        row[0].set_ylabel("true positive rate")
    for ax in axes[-1]:
        ax.set_xlabel("false positive rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results, workdir: str) -> None:
    print(markdown_table(results))
    print(f"total {results['total_seconds']:.0f} s (sampling {results['sample_seconds']:.0f} "
          f"s; " + ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items()) + ")")
    print(f"wrote {os.path.join(workdir, 'detect.json')}, detect.md, detect_roc.png")


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(run, report, what="detection config file (configs/detect_digits.py)")


if __name__ == "__main__":
    main()
