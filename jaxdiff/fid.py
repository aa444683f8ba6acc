"""Fréchet distance of generated images in the feature space of a small CNN classifier.

NOT Inception FID: the features are the penultimate layer of a small Flax CNN trained on
the same data set (digits, Fashion-MNIST, ...), so the numbers are only comparable with
each other (same classifier checkpoint, same real statistics, same sample count), never
with published FID tables.

    python -m jaxdiff.fid --config=configs/edm_digits.py --workdir=runs/edm_digits \\
        [--eval=heun:34 --eval=ipndm:5] [--num_samples=2000]

The CLI loads the EDM checkpoint in ``workdir`` (see :mod:`jaxdiff.train`), trains the
classifier once (kept in ``workdir/classifier`` as an Orbax checkpoint) and reports its
test accuracy, then samples ``num_samples`` images per solver:NFE (schedules and AFS as
in :mod:`jaxdiff.bench`) and writes ``workdir/fid.json``.

    FD = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))
"""
from __future__ import annotations

import functools
import json
import os
import time
import warnings
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
from flax import struct

from jaxdiff import data as data_lib

__all__ = ["Classifier", "ClassifierState", "FeatureStats", "train_classifier", "features",
           "accuracy", "feature_stats", "frechet_distance", "fd_of_samples", "load_splits",
           "load_or_train_classifier", "evaluate"]

NOT_INCEPTION = ("Frechet distance in the feature space of a small CNN classifier trained "
                 "on this data set: NOT Inception FID, not comparable with published FID.")


class Classifier(nn.Module):
    """Two conv blocks (conv-ReLU-avgpool), a ``features``-wide ReLU layer, logits.

    Attributes:
      num_classes: number of classes.
      width: channels of the first conv (the second has twice as many).
      features: width of the penultimate layer (the Fréchet-distance features).
    """
    num_classes: int = 10
    width: int = 32
    features: int = 64

    @nn.compact
    def __call__(self, x, *, return_features: bool = False):
        """(B, H, W, C) images in [-1, 1] -> (B, num_classes) logits, or (B, features)."""
        h = nn.relu(nn.Conv(self.width, (3, 3))(x))
        h = nn.avg_pool(h, (2, 2), (2, 2), padding="SAME")
        h = nn.relu(nn.Conv(2 * self.width, (3, 3))(h))
        h = nn.avg_pool(h, (2, 2), (2, 2), padding="SAME")
        f = nn.relu(nn.Dense(self.features, name="penultimate")(h.reshape(h.shape[0], -1)))
        if return_features:
            return f
        return nn.Dense(self.num_classes, name="logits")(f)


@struct.dataclass
class ClassifierState:
    """A trained classifier: static module and its parameters (a pytree).

    Attributes:
      model: the :class:`Classifier` (static).
      params: its parameters.
      image_shape: (H, W, C) the classifier was trained on (static).
    """
    model: Classifier = struct.field(pytree_node=False)
    params: Any = None
    image_shape: tuple = struct.field(pytree_node=False, default=())


class FeatureStats(NamedTuple):
    """Gaussian statistics of features.

    Attributes:
      mu: (F,) float64 mean.
      sigma: (F, F) float64 covariance (unbiased).
      n: number of images.
    """
    mu: np.ndarray
    sigma: np.ndarray
    n: int


def _check_images(images, image_shape=None, name="images"):
    images = np.asarray(images)
    if images.ndim != 4 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name} must be a float array (N, H, W, C), got {images.dtype} "
                         f"{images.shape}")
    if image_shape and tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} have shape {tuple(images.shape[1:])} per image but the "
                         f"classifier was trained on {tuple(image_shape)}")
    return images.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("model", "tx"), donate_argnums=(0, 1))
def _train_step(params, opt_state, x, y, *, model, tx):
    def loss_fn(p):
        logits = model.apply({"params": p}, x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def train_classifier(images, labels, *, num_classes: int = 10, width: int = 32,
                     features: int = 64, epochs: int = 5, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0) -> ClassifierState:
    """Trains a :class:`Classifier` with Adam and softmax cross-entropy.

    Args:
      images: (N, H, W, C) float images in [-1, 1].
      labels: (N,) int labels in [0, num_classes).
      num_classes, width, features: the architecture.
      epochs: passes over the data (shuffled per epoch; the last partial batch dropped).
      batch_size: examples per step (capped at N).
      lr: Adam learning rate.
      seed: seed of initialisation and shuffling.

    Returns:
      The trained :class:`ClassifierState`.
    """
    images = _check_images(images)
    labels = np.asarray(labels, np.int32)
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    model = Classifier(num_classes=num_classes, width=width, features=features)
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1,) + images.shape[1:],
                                                                   jnp.float32))["params"]
    tx = _adam(float(lr))
    opt_state = tx.init(params)
    n = images.shape[0]
    bs = min(int(batch_size), n)
    rng = np.random.default_rng(seed)
    for _ in range(int(epochs)):
        perm = rng.permutation(n)
        for i in range(n // bs):
            idx = perm[i * bs:(i + 1) * bs]
            params, opt_state, _ = _train_step(params, opt_state, jnp.asarray(images[idx]),
                                               jnp.asarray(labels[idx]), model=model, tx=tx)
    return ClassifierState(model=model, params=params, image_shape=tuple(images.shape[1:]))


@functools.lru_cache(maxsize=8)
def _adam(lr: float):
    return optax.adam(lr)


@functools.partial(jax.jit, static_argnames=("model", "return_features"))
def _apply(params, x, *, model, return_features):
    return model.apply({"params": params}, x, return_features=return_features)


def _batched(state: ClassifierState, images, return_features: bool, batch_size: int):
    """Applies the classifier in fixed-size batches (the last one padded: one compile)."""
    images = _check_images(images, state.image_shape)
    n = images.shape[0]
    bs = min(batch_size, n)
    outs = []
    for lo in range(0, n, bs):
        x = images[lo:lo + bs]
        pad = bs - x.shape[0]
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
        out = _apply(state.params, jnp.asarray(x), model=state.model,
                     return_features=return_features)
        outs.append(np.asarray(out)[:bs - pad])
    return np.concatenate(outs, axis=0)


def features(state: ClassifierState, images, *, batch_size: int = 500) -> np.ndarray:
    """Penultimate-layer features (N, F) float64 of (N, H, W, C) images in [-1, 1]."""
    return _batched(state, images, True, batch_size).astype(np.float64)


def accuracy(state: ClassifierState, images, labels, *, batch_size: int = 500) -> float:
    """Fraction of ``images`` whose argmax logit equals ``labels``."""
    logits = _batched(state, images, False, batch_size)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def feature_stats(state: ClassifierState, images, *, batch_size: int = 500) -> FeatureStats:
    """Mean and covariance of the classifier features of ``images`` (N >= 2)."""
    f = features(state, images, batch_size=batch_size)
    if f.shape[0] < 2:
        raise ValueError("feature statistics need at least 2 images")
    return FeatureStats(f.mean(axis=0), np.cov(f, rowvar=False), int(f.shape[0]))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``, in float64 with
    ``scipy.linalg.sqrtm``. If the product is singular enough that sqrtm fails
    (non-finite result), ``eps * I`` is added to both covariances. A small imaginary
    part from round-off is discarded; a large one raises.

    Args:
      mu1, mu2: (F,) means.
      sigma1, sigma2: (F, F) symmetric positive semi-definite covariances.

    Returns:
      The distance (>= 0 up to round-off), a Python float.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    f = mu1.shape[0]
    if mu1.shape != (f,) or mu2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 "
                         f"{mu2.shape}, sigma2 {s2.shape}")
    with warnings.catch_warnings():
        # Singular covariances are expected (e.g. ReLU features that never fire).
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(s1 @ s2)
        if not np.all(np.isfinite(root)):
            offset = eps * np.eye(f)
            root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(root):
        scale = max(1.0, float(np.max(np.abs(root))))
        if np.max(np.abs(root.imag)) > 1e-3 * scale:
            raise ValueError("sqrtm(sigma1 @ sigma2) has a large imaginary part: are the "
                             "covariances symmetric positive semi-definite?")
        root = root.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))


def fd_of_samples(samples, classifier_state: ClassifierState, real_stats: FeatureStats,
                  *, batch_size: int = 500) -> float:
    """Fréchet distance (classifier features, NOT Inception) of samples to real data.

    Args:
      samples: (N, H, W, C) generated images in [-1, 1] (values are clipped to it).
      classifier_state: a trained classifier (:func:`train_classifier`).
      real_stats: :func:`feature_stats` of real images under the same classifier.

    Returns:
      The Fréchet distance, a float.
    """
    samples = np.clip(_check_images(samples, classifier_state.image_shape, "samples"),
                      -1.0, 1.0)
    st = feature_stats(classifier_state, samples, batch_size=batch_size)
    return frechet_distance(st.mu, st.sigma, real_stats.mu, real_stats.sigma)


# ----------------------------------------------------------------------------- data, CLI


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
    import orbax.checkpoint as ocp
    (x_tr, y_tr), (x_te, y_te) = load_splits(config)
    settings = _classifier_settings(config, x_tr.shape[1:])
    directory = os.path.abspath(directory)
    mngr = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False))
    step = mngr.latest_step()
    if step is not None:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta["settings"] == settings:
            model = Classifier(settings["num_classes"], settings["width"], settings["features"])
            shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                                    jnp.zeros((1,) + tuple(settings["image_shape"]),
                                              jnp.float32))["params"]
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
            target = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), shapes)
            params = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(target)))["params"]
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
    mngr.save((step or 0) + 1, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params), meta=ocp.args.JsonSave(info)), force=True)
    mngr.wait_until_finished()
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
    from jaxdiff import bench, schedules
    from jaxdiff import train as train_lib

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


if __name__ == "__main__":
    from jaxdiff.cli import run_job
    run_job(_evaluate, _report, what="training config file", define_flags=_define_flags)
