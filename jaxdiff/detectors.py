"""Detection of diffusion-generated images (reference survey sec. 10, "diffusion-generated
image detection": beyond-image, imperceptible and data-driven detectors).

Every detector has one interface (a :class:`Detector`)::

    state = det.fit(real, fake, key)     # real, fake: (N, H, W, C) images in [-1, 1]
    s = det.score(state, images)         # (N,) float, higher = more likely generated

A detector is a *transform* (images -> features or maps; jitted) followed by a *head*
(``head_fit(x_real, x_fake, key) -> state``, ``head_score(state, x) -> (N,)``; jitted,
the state a pytree). Built-in detectors:

  :func:`dire_detector`       DIRE-style: error map |x - reconstruct(x)| of ODE inversion
                              and regeneration with any denoiser and solver,
                              reduced to log-error statistics + its radial spectrum, with
                              a logistic-regression head (``head="cnn"``: the CNN on the
                              log error map instead).
  :func:`frequency_detector`  imperceptible features: log-magnitude radial FFT spectrum
                              plus high-pass (3x3 Laplacian) residual statistics, with a
                              logistic-regression head.
  :func:`cnn_detector`        data-driven: a small Flax CNN trained with Optax (AdamW) on
                              the pixels.

Metrics (labels: 1 = generated, 0 = real): :func:`auc` (Mann-Whitney rank statistic with
ties counted 1/2; O(N log N), jittable), :func:`roc_curve`, :func:`fit_threshold`
(the balanced-accuracy-maximising threshold, fixed on the training split) and :func:`accuracy`;
:func:`evaluate` bundles them. The benchmark (train on one generator, test on others):

    python -m jaxdiff.detect --config=configs/detect_digits.py --workdir=runs/detect_digits

Example::

    from jaxdiff import detectors as detect
    det = detect.frequency_detector()
    state = det.fit(real_train, fake_train, jax.random.PRNGKey(0))
    thr = detect.fit_threshold(*detect.scores_and_labels(det, state, real_train, fake_train))
    res = detect.evaluate(det, state, real_test, fake_test, threshold=thr)
    res["auc"], res["accuracy"]
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdiff.detect_features import check_images as _check_images
from jaxdiff.detect_features import (
    dire_error,
    dire_features,
    frequency_features,
    highpass_residual,
    log_error_map,
    quantize,
    radial_spectrum,
)

__all__ = ["Detector", "LogisticState", "CNNState", "CNN", "frequency_features",
           "radial_spectrum", "highpass_residual", "dire_error", "dire_features",
           "log_error_map",
           "logistic_fit", "logistic_score", "cnn_fit", "cnn_score", "frequency_detector",
           "dire_detector", "cnn_detector", "make_detector", "DETECTORS", "auc",
           "auc_brute_force", "roc_curve", "fit_threshold", "accuracy",
           "scores_and_labels", "evaluate", "metrics", "quantize"]


class Detector(NamedTuple):
    """A detector: ``transform`` (images -> inputs of the head) and a head.

    Attributes:
      name: display name.
      transform: ``transform(images (N, H, W, C)) -> (N, F)`` features or (N, h, w, c)
        maps. Deterministic, so results may be cached per image set.
      head_fit: ``head_fit(x_real, x_fake, key) -> state`` (a pytree).
      head_score: ``head_score(state, x) -> (N,)`` scores, higher = more likely generated.
    """
    name: str
    transform: Callable
    head_fit: Callable
    head_score: Callable

    def fit(self, real, fake, key):
        """Fits on real (label 0) vs generated (label 1) images (N_r / N_f, H, W, C)."""
        real, fake = _check_images(real, "real"), _check_images(fake, "fake")
        if real.shape[1:] != fake.shape[1:]:
            raise ValueError(f"real and fake images differ in shape: {real.shape[1:]} vs "
                             f"{fake.shape[1:]}")
        return self.head_fit(self.transform(real), self.transform(fake), key)

    def score(self, state, images):
        """(N,) scores of (N, H, W, C) images; higher = more likely generated."""
        return self.head_score(state, self.transform(_check_images(images)))


# -------------------------------------------------------------------------- heads
class LogisticState(NamedTuple):
    """L2-regularised logistic regression on standardised features.

    Attributes:
      mean, scale: (F,) feature standardisation (training-set mean and std).
      w: (F,) weights; b: () bias.
    """
    mean: jax.Array
    scale: jax.Array
    w: jax.Array
    b: jax.Array


def _flat(x):
    return x.reshape(x.shape[0], -1)


@functools.partial(jax.jit, static_argnames=("iters",))
def logistic_fit(x_real, x_fake, key=None, *, l2: float = 1e-2, iters: int = 30):
    """Logistic regression real (0) vs fake (1) by Newton's method (``iters`` steps).

    Minimises mean cross-entropy + ``l2 / 2 * |w|^2`` (bias unpenalised) on features
    standardised by the pooled mean/std; the classes are weighted equally. ``key`` is
    unused (deterministic). Inputs (N, ...) are flattened to (N, F).
    """
    del key
    x = jnp.concatenate([_flat(x_real), _flat(x_fake)], axis=0)
    y = jnp.concatenate([jnp.zeros(x_real.shape[0]), jnp.ones(x_fake.shape[0])]).astype(x.dtype)
    wt = jnp.where(y > 0, 0.5 / x_fake.shape[0], 0.5 / x_real.shape[0]).astype(x.dtype)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = jnp.concatenate([(x - mean) / scale, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    reg = l2 * jnp.eye(z.shape[1], dtype=x.dtype).at[-1, -1].set(1e-8)

    def newton(_, theta):
        p = jax.nn.sigmoid(z @ theta)
        grad = z.T @ (wt * (p - y)) + reg @ theta
        hess = (z * (wt * p * (1 - p))[:, None]).T @ z + reg
        return theta - jnp.linalg.solve(hess, grad)

    theta = jax.lax.fori_loop(0, iters, newton, jnp.zeros(z.shape[1], x.dtype))
    return LogisticState(mean, scale, theta[:-1], theta[-1])


@jax.jit
def logistic_score(state: LogisticState, x):
    """(N,) logits ``w . standardise(x) + b`` of (N, ...) features."""
    return ((_flat(x) - state.mean) / state.scale) @ state.w + state.b


class CNN(nn.Module):
    """A small binary detector: conv(w)-ReLU, conv(2w, stride 2)-ReLU, global mean and
    max pooling, dense logit.

    Attributes:
      width: channels of the first conv.
    """
    width: int = 16

    @nn.compact
    def __call__(self, x):
        """(B, H, W, C) -> (B,) logits (higher = generated)."""
        h = nn.relu(nn.Conv(self.width, (3, 3))(x))
        h = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=(2, 2))(h))
        h = jnp.concatenate([h.mean(axis=(1, 2)), h.max(axis=(1, 2))], axis=-1)
        return nn.Dense(1)(h)[:, 0]


class CNNState(NamedTuple):
    """A trained :class:`CNN`: input standardisation (scalars) and parameters."""
    mean: jax.Array
    scale: jax.Array
    params: Any


@functools.partial(jax.jit, static_argnames=("width", "steps", "batch_size"))
def cnn_fit(x_real, x_fake, key, *, width: int = 16, steps: int = 600,
            batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4):
    """Trains a :class:`CNN` on real (0) vs fake (1) maps (N, H, W, C).

    Each of ``steps`` AdamW steps (one ``lax.scan``) draws ``batch_size / 2`` real and
    ``batch_size / 2`` fake examples with replacement from ``fold_in(key, step)``;
    loss: sigmoid cross-entropy. Inputs are standardised by the pooled scalar mean/std.
    """
    x = jnp.concatenate([x_real, x_fake], axis=0)
    mean, scale = jnp.mean(x), jnp.std(x) + 1e-6
    xr, xf = (x_real - mean) / scale, (x_fake - mean) / scale
    model = CNN(width)
    k_init, key = jax.random.split(key)
    params = model.init(k_init, xr[:1])["params"]
    tx = optax.adamw(lr, weight_decay=weight_decay)
    half = max(batch_size // 2, 1)

    def loss_fn(p, xb, yb):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(model.apply({"params": p}, xb), yb))

    def step(carry, i):
        p, opt = carry
        kr, kf = jax.random.split(jax.random.fold_in(key, i))
        xb = jnp.concatenate([xr[jax.random.randint(kr, (half,), 0, xr.shape[0])],
                              xf[jax.random.randint(kf, (half,), 0, xf.shape[0])]])
        yb = jnp.concatenate([jnp.zeros(half), jnp.ones(half)]).astype(xb.dtype)
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        upd, opt = tx.update(g, opt, p)
        return (optax.apply_updates(p, upd), opt), loss

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return CNNState(mean, scale, params)


@functools.partial(jax.jit, static_argnames=("width",))
def cnn_score(state: CNNState, x, *, width: int = 16):
    """(N,) logits of the trained CNN on (N, H, W, C) maps."""
    return CNN(width).apply({"params": state.params}, (x - state.mean) / state.scale)


# ---------------------------------------------------------------------- detectors
def make_detector(name: str, transform: Callable, head: str = "logistic",
                  **head_options) -> Detector:
    """A :class:`Detector` from a transform and a head "logistic" (options: l2, iters)
    or "cnn" (options: width, steps, batch_size, lr, weight_decay)."""
    if head == "logistic":
        unknown = set(head_options) - {"l2", "iters"}
        fit, score = functools.partial(logistic_fit, **head_options), logistic_score
    elif head == "cnn":
        unknown = set(head_options) - {"width", "steps", "batch_size", "lr", "weight_decay"}
        fit = functools.partial(cnn_fit, **head_options)
        score = functools.partial(cnn_score, width=head_options.get("width", 16))
    else:
        raise ValueError(f"unknown head {head!r}; valid: 'logistic', 'cnn'")
    if unknown:
        raise ValueError(f"unknown {head} head option(s) {sorted(unknown)}")
    return Detector(name, transform, fit, score)


def frequency_detector(*, l2: float = 1e-2) -> Detector:
    """Radial FFT spectrum + high-pass residual statistics (:func:`frequency_features`)
    with an L2 logistic-regression head."""
    return make_detector("frequency", frequency_features, "logistic", l2=l2)


def cnn_detector(*, width: int = 16, steps: int = 600, batch_size: int = 64,
                 lr: float = 2e-3, weight_decay: float = 1e-4) -> Detector:
    """A small CNN (:class:`CNN`) trained on the pixels with AdamW."""
    return make_detector("cnn", lambda x: x, "cnn", width=width, steps=steps,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay)


def dire_detector(denoise_fn: Callable, sigmas, *, solver: str = "euler",
                  head: str = "logistic", batch_size: int = 0, name: str | None = None,
                  **head_options) -> Detector:
    """DIRE-style detector: reconstruction error |x - Regen(Invert(x))|.

    Args:
      denoise_fn: the detector's own denoiser ``D(x, sigma)`` (e.g.
        ``jaxdiff.unet.make_denoiser(model, params)``).
      sigmas: (S,) decreasing schedule of the inversion/regeneration (see
        :func:`dire_error`).
      solver: any solver name ("euler" = DDIM, "heun", "ipndm", "dpmpp", ...).
      head: "logistic" on :func:`dire_features`, or "cnn" on the log error map
        ``log(error + 1e-3)``.
      batch_size: reconstruction chunk size (0: all at once).
      name: display name (default "dire" / "dire_cnn").
      **head_options: options of the head (see :func:`make_detector`).

    Raises:
      ValueError: bad sigmas, solver or head (checked here, before any computation).
    """
    from jaxdiff.sampling import validate_sigmas
    validate_sigmas(sigmas)
    from jaxdiff import solvers
    solvers.get(solver)
    sigmas = jnp.asarray(sigmas)

    def error(images):
        return dire_error(denoise_fn, images, sigmas.astype(images.dtype), solver=solver,
                          batch_size=batch_size)

    if head not in ("logistic", "cnn"):
        raise ValueError(f"unknown head {head!r}; valid: 'logistic', 'cnn'")
    reduce = dire_features if head == "logistic" else log_error_map
    return make_detector(name or ("dire" if head == "logistic" else "dire_cnn"),
                         lambda images: reduce(error(images)), head, **head_options)


DETECTORS = ("dire", "dire_cnn", "frequency", "cnn")


# ------------------------------------------------------------------------- metrics
def _check_scores(scores, labels):
    scores, labels = jnp.asarray(scores), jnp.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got shapes "
                         f"{scores.shape} and {labels.shape}")
    if isinstance(scores, jax.core.Tracer) or isinstance(labels, jax.core.Tracer):
        return scores, labels
    lab = np.asarray(labels)
    if not np.isin(lab, (0, 1)).all():
        raise ValueError(f"labels must be 0 (real) or 1 (generated), got values "
                         f"{np.unique(lab)[:10].tolist()}")
    if lab.min() == lab.max():
        raise ValueError(f"labels must contain both classes 0 and 1, got only {lab.min()}")
    if not np.isfinite(np.asarray(scores)).all():
        raise ValueError("scores must be finite (NaN or inf found)")
    return scores, labels


@jax.jit
def _auc(scores, labels):
    pos = labels.astype(bool)
    srt = jnp.sort(scores)
    lo = jnp.searchsorted(srt, scores, side="left")
    hi = jnp.searchsorted(srt, scores, side="right")
    ranks = (lo + hi + 1) / 2.0                # 1-based ranks, ties get their mean rank
    n_pos = jnp.sum(pos).astype(ranks.dtype)   # float: n_pos * n_neg may exceed int32
    n_neg = scores.shape[0] - n_pos
    u = jnp.sum(jnp.where(pos, ranks, 0.0)) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def auc(scores, labels):
    """Area under the ROC curve = P(s_gen > s_real) + P(s_gen = s_real) / 2.

    The Mann-Whitney U statistic from mid-ranks (ties averaged), O(N log N); jittable.

    Args:
      scores: (N,) finite scores, higher = more likely generated.
      labels: (N,) 1 = generated, 0 = real; both classes present.

    Returns:
      () float AUC in [0, 1].
    """
    return _auc(*_check_scores(scores, labels))


def auc_brute_force(scores, labels) -> float:
    """O(N_pos N_neg) AUC over all (generated, real) pairs (reference for tests)."""
    scores, labels = map(np.asarray, _check_scores(scores, labels))
    sp, sn = scores[labels == 1][:, None], scores[labels == 0][None, :]
    return float(np.mean((sp > sn) + 0.5 * (sp == sn)))


def roc_curve(scores, labels):
    """ROC points, one per distinct threshold, from (0, 0) to (1, 1).

    Returns:
      ``(fpr, tpr, thresholds)`` numpy arrays of length D + 1 (D distinct scores):
      point k classifies ``score >= thresholds[k]`` as generated; thresholds[0] = +inf.
      The trapezoidal area under (fpr, tpr) equals :func:`auc`.
    """
    scores, labels = map(np.asarray, _check_scores(scores, labels))
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]   # end of each tie group
    tp, fp = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    return fpr, tpr, np.r_[np.inf, s[last]]


def fit_threshold(scores, labels) -> float:
    """The threshold maximising balanced accuracy of ``score >= t`` (fitted on the
    training split); midway between neighbouring distinct scores."""
    fpr, tpr, thr = roc_curve(scores, labels)
    k = int(np.argmax(tpr - fpr))
    if k == 0:
        return float(thr[1]) + 1.0
    nxt = thr[k + 1] if k + 1 < thr.size else thr[k] - 1.0
    return float((thr[k] + nxt) / 2.0)


def accuracy(scores, labels, threshold: float) -> float:
    """Fraction of correct decisions ``score >= threshold`` -> generated."""
    scores, labels = map(np.asarray, _check_scores(scores, labels))
    return float(np.mean((scores >= threshold) == (labels == 1)))


def scores_and_labels(detector: Detector, state, real, fake):
    """(scores (N_r + N_f,), labels) of real (0) and fake (1) images."""
    s = jnp.concatenate([detector.score(state, real), detector.score(state, fake)])
    y = jnp.concatenate([jnp.zeros(real.shape[0], jnp.int32), jnp.ones(fake.shape[0], jnp.int32)])
    return s, y


def evaluate(detector: Detector, state, real, fake, *, threshold: float) -> dict:
    """AUC, accuracy at ``threshold`` and ROC points of a fitted detector on a test set
    of real and generated (N, H, W, C) images."""
    s, y = scores_and_labels(detector, state, real, fake)
    return metrics(s, y, threshold)


def metrics(scores, labels, threshold: float) -> dict:
    """{"auc", "accuracy" (at ``threshold``), "fpr", "tpr" (ROC points, lists)} of
    (N,) scores and 0/1 labels."""
    s, y = scores, labels
    fpr, tpr, _ = roc_curve(s, y)
    return {"auc": float(auc(s, y)), "accuracy": accuracy(s, y, threshold),
            "fpr": fpr.tolist(), "tpr": tpr.tolist()}
