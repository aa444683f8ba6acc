"""Fréchet distance (classifier features, NOT Inception) of the samplers of a trained EDM
model: ``python -m jaxdiff.fid``.

    python -m jaxdiff.fid --config=configs/edm_digits.py --workdir=runs/edm_digits \\
        [--eval=heun:34 --eval=ipndm:5] [--num_samples=2000]

Loads the EDM checkpoint in ``workdir`` (see :mod:`jaxdiff.training.edm`), trains the
classifier of :mod:`jaxdiff.frechet` once (kept in ``workdir/classifier``) and reports its
test accuracy, then samples ``num_samples`` images per solver:NFE (schedules and AFS as
in :mod:`jaxdiff.experiments.bench`) and writes ``workdir/fid.json``.
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff.frechet import (
    NOT_INCEPTION,
    Classifier,
    ClassifierState,
    accuracy,
    fd_of_samples,
    feature_stats,
    frechet_distance,
    train_classifier,
)
from jaxinfra import checkpoints
from jaxinfra import datasets as data_lib

__all__ = ["load_splits", "load_or_train_classifier", "evaluate", "main"]


def load_splits(config):
    """((train_x, train_y), (test_x, test_y)) for the classifier.

    digits has no test split: a fixed random ``config.fid.test_fraction`` is held out.
    Other data sets use their "train" and "test" splits (``config.max_examples`` caps
    the training split).
    """
    name = config.dataset.strip().lower().replace("-", "_")
    cap = int(config.max_examples) or None
    if name == "digits":
        x, y = data_lib.load("digits")
        perm = np.random.default_rng(0).permutation(x.shape[0])
        n_test = int(round(float(config.fid.test_fraction) * x.shape[0]))
        test, train = perm[:n_test], perm[n_test:]
        train = train[:cap] if cap else train
        return (x[train], y[train]), (x[test], y[test])
    train = data_lib.load(config.dataset, split="train", max_examples=cap)
    test = data_lib.load(config.dataset, split="test")
    return train, test


def _classifier_settings(config, image_shape) -> dict:
    c = config.fid.classifier
    return {"dataset": config.dataset, "image_shape": list(image_shape),
            "num_classes": int(config.fid.get("num_classes", 10)), "width": int(c.width),
            "features": int(c.features), "epochs": int(c.epochs),
            "batch_size": int(c.batch_size), "lr": float(c.lr), "seed": int(c.seed),
            "max_examples": int(config.max_examples),
            "test_fraction": float(config.fid.test_fraction)}


def load_or_train_classifier(config, directory: str):
    """Loads the classifier checkpoint in ``directory`` or trains and saves one.

    A checkpoint trained with different settings is retrained (and overwritten).

    Returns:
      (ClassifierState, info) with info holding the settings and ``test_accuracy``.
    """
    (x_tr, y_tr), (x_te, y_te) = load_splits(config)
    settings = _classifier_settings(config, x_tr.shape[1:])
    mngr = checkpoints.manager(directory, subdir="", keep=1)
    step = mngr.latest_step()
    if step is not None:
        meta = checkpoints.read_meta(mngr, step)
        if meta["settings"] == settings:
            model = Classifier(settings["num_classes"], settings["width"], settings["features"])
            shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                    jnp.zeros((1,) + tuple(settings["image_shape"]),
                                              jnp.float32))["params"]
            params = checkpoints.read(mngr, step, params=shapes)["params"]
            mngr.close()
            state = ClassifierState(model, params, tuple(settings["image_shape"]))
            return state, dict(meta, loaded=True)
    s = settings
    state = train_classifier(x_tr, y_tr, num_classes=s["num_classes"], width=s["width"],
                             features=s["features"], epochs=s["epochs"],
                             batch_size=s["batch_size"], lr=s["lr"], seed=s["seed"])
    info = {"settings": settings, "test_accuracy": accuracy(state, x_te, y_te),
            "train_accuracy": accuracy(state, x_tr, y_tr), "num_train": int(x_tr.shape[0]),
            "num_test": int(x_te.shape[0])}
    checkpoints.save(mngr, (step or 0) + 1, meta=info, params=state.params, force=True)
    mngr.close()
    return state, dict(info, loaded=False)


def _parse_eval(spec: str):
    try:
        solver, nfe = spec.split(":")
        return solver.strip(), int(nfe)
    except ValueError as err:
        raise ValueError(f"bad eval spec {spec!r}: expected 'solver:NFE', e.g. 'heun:34'") \
            from err


def evaluate(config, workdir: str, *, evals=None, num_samples: int | None = None) -> dict:
    """Classifier-feature Fréchet distance of an EDM checkpoint's samples.

    Args:
      config: a training config (``configs/edm_*.py``) with a ``fid`` section.
      workdir: the training workdir (checkpoint in ``workdir/checkpoints``).
      evals: "solver:NFE" strings (default ``config.fid.evals``).
      num_samples: images per evaluation (default ``config.fid.num_samples``).

    Returns:
      A results dict (also written to ``workdir/fid.json``).
    """
    from jaxdiff import schedules
    from jaxdiff.experiments import bench
    from jaxdiff.training import edm as train_lib

    evals = [_parse_eval(e) for e in (evals or config.fid.evals)]
    for solver, nfe in evals:
        if solver not in bench.SOLVER_SETTINGS:
            raise ValueError(f"unknown solver {solver!r}; valid: {sorted(bench.SOLVER_SETTINGS)}")
        bench.plan(solver, nfe)
    num = int(num_samples or config.fid.num_samples)
    model, ema, meta = train_lib.load_checkpoint(workdir)
    if meta["dataset"] != config.dataset:
        raise ValueError(f"the checkpoint in {workdir!r} was trained on {meta['dataset']!r} "
                         f"but the config names {config.dataset!r}")
    t0 = time.perf_counter()
    clf, info = load_or_train_classifier(config, os.path.join(workdir, "classifier"))
    clf_seconds = time.perf_counter() - t0
    (x_tr, _), (x_te, _) = load_splits(config)
    real_images, _ = train_lib.load_data(config)
    real = feature_stats(clf, real_images)
    test_st = feature_stats(clf, x_te)
    results = {
        "note": NOT_INCEPTION, "dataset": config.dataset, "checkpoint_step": meta["step"],
        "num_samples": num, "num_real": real.n,
        "classifier": {"test_accuracy": info["test_accuracy"],
                       "train_accuracy": info.get("train_accuracy"),
                       "features": info["settings"]["features"], "loaded": info["loaded"],
                       "seconds": clf_seconds},
        # Reference: held-out real images against the real statistics. Its small sample
        # (e.g. 359 for digits) biases it upwards; it is not a floor for larger samples.
        "fd_real_test_vs_real": frechet_distance(test_st.mu, test_st.sigma, real.mu,
                                                 real.sigma),
        "num_real_test": test_st.n, "evals": []}
    labels = None
    if model.num_classes > 0:
        labels = np.arange(num) % model.num_classes
    for solver, nfe in evals:
        sched, sched_kw, opts = bench.SOLVER_SETTINGS[solver]
        n_steps, afs = bench.plan(solver, nfe)
        sigmas = schedules.get(sched, n_steps, **sched_kw)
        t = time.perf_counter()
        samples = train_lib.sample_images(model, ema, num, key=jax.random.PRNGKey(1234),
                                          sigmas=sigmas, solver=solver, labels=labels,
                                          batch_size=int(config.fid.sample_batch), afs=afs,
                                          **opts)
        seconds = time.perf_counter() - t
        fd = fd_of_samples(samples, clf, real)
        results["evals"].append({"solver": solver, "nfe": nfe, "num_steps": n_steps,
                                 "afs": afs, "schedule": sched, "fd": fd,
                                 "sample_seconds": seconds})
        os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
        train_lib.save_grid(samples[:64], os.path.join(workdir, "samples",
                                                       f"fid_{solver}_nfe{nfe}.png"))
    with open(os.path.join(workdir, "fid.json"), "w") as f:
        json.dump(results, f, indent=1)
    return results


def _define_flags(flags):
    flags.DEFINE_multi_string("eval", None, "solver:NFE (repeatable); default config.fid.evals")
    flags.DEFINE_integer("num_samples", None, "samples per evaluation")


def _evaluate(config, workdir):
    from absl import flags
    fl = flags.FLAGS
    return evaluate(config, workdir, evals=fl.eval or None, num_samples=fl.num_samples)


def _report(res, workdir):
    print(NOT_INCEPTION)
    c = res["classifier"]
    print(f"classifier test accuracy: {c['test_accuracy']:.4f} "
          f"({'loaded' if c['loaded'] else 'trained'}, {c['features']} features)")
    print(f"reference: FD({res['num_real_test']} held-out real, {res['num_real']} real) = "
          f"{res['fd_real_test_vs_real']:.4f} (small-sample bias grows as 1/N)")
    for e in res["evals"]:
        print(f"{e['solver']:>8s} NFE {e['nfe']:3d} (steps {e['num_steps']}, afs {e['afs']}): "
              f"FD {e['fd']:.4f}  ({res['num_samples']} samples, {e['sample_seconds']:.1f} s)")
    print(f"wrote {os.path.join(workdir, 'fid.json')}")


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(_evaluate, _report, what="training config file", define_flags=_define_flags)


if __name__ == "__main__":
    main()
