"""Distillation losses and teacher-weighting rules as pure functions of arrays.

Nothing here knows about Flax: every function takes logits, feature maps and labels
(jnp arrays) and jits, vmaps and differentiates. Shapes: B batch, C classes, K teachers,
``(..., H, W, D)`` feature maps (NHWC). Per-sample losses are (B,) vectors; "batch" losses
are their mean (PyTorch ``batchmean``).

Sources (see /work/shared/reference/distillation.md): vanilla KD and FitNet follow
RepDistiller (``DistillKL``, ``HintLoss``); the confidence weights, the per-sample KL
weighting with the extra 1/K and the intermediate loss follow CA-MKD's ``loops.py`` /
``distiller_zoo/CAMKD.py``; EBKD, AVER and AEKD are the baselines in the same code (AEKD's
one-class SVM of ``helper/optimization.py`` is solved here in JAX). DSKD's
weight allocation is a *reconstruction* (the paper's code is not public):
:func:`dskd_layer_weights` offers the candidate rules as a switch.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cross_entropy", "accuracy", "kd_kl", "kd_loss", "mse", "camkd_weights",
           "camkd_kd_loss", "camkd_inter_loss", "aver_kd_loss", "ebkd_weights",
           "ebkd_kd_loss", "one_class_svm_weights",
           "aekd_weights", "aekd_kd_loss", "dskd_layer_weights", "DSKD_WEIGHT_RULES"]


def cross_entropy(logits, labels):
    """Per-sample softmax cross-entropy.

    Args:
      logits: (..., C) float.
      labels: (...) int class indices.

    Returns:
      (...) float, -log softmax(logits)[label] (nats).
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def accuracy(logits, labels):
    """(...) float 1.0 where argmax(logits) == label, else 0.0."""
    return (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)


def kd_kl(student_logits, teacher_logits, temperature: float = 4.0):
    """Per-sample T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) (Hinton et al.).

    Args:
      student_logits: (..., C); gradients flow through them.
      teacher_logits: (..., C); used as given (stop the gradient upstream).
      temperature: T > 0.

    Returns:
      (...) float: sum over classes of p_t (log p_t - log p_s), times T^2 (RepDistiller's
      ``DistillKL(is_ca=True)`` per-sample vector).
    """
    t = temperature
    log_ps = jax.nn.log_softmax(student_logits / t, axis=-1)
    log_pt = jax.nn.log_softmax(teacher_logits / t, axis=-1)
    return jnp.sum(jnp.exp(log_pt) * (log_pt - log_ps), axis=-1) * t * t


def kd_loss(student_logits, teacher_logits, temperature: float = 4.0):
    """Vanilla KD with ``batchmean`` reduction: mean over the batch of :func:`kd_kl`."""
    return jnp.mean(kd_kl(student_logits, teacher_logits, temperature))


def mse(a, b):
    """Mean squared error over every element (PyTorch ``MSELoss()``, FitNet's HintLoss)."""
    return jnp.mean(jnp.square(a - b))


def camkd_weights(teacher_logits, labels):
    """CA-MKD confidence weights: w_ki = (1 - softmax_k(CE(z_ki, y_i))) / (K - 1).

    Args:
      teacher_logits: (K, B, C) logits of K >= 2 teachers (or of the teacher heads on the
        student's connector features for the intermediate level).
      labels: (B,) int.

    Returns:
      (K, B) weights, summing to 1 over K for every sample; the teacher with the lower
      cross-entropy on a sample gets the higher weight. Gradients flow through unless
      the caller stops them (CA-MKD does not detach the intermediate-level weights).

    Raises:
      ValueError: K < 2 (the rule divides by K - 1).
    """
    k = teacher_logits.shape[0]
    if k < 2:
        raise ValueError(f"camkd_weights needs K >= 2 teachers, got K={k}")
    ce = cross_entropy(teacher_logits, labels[None])            # (K, B)
    return (1.0 - jax.nn.softmax(ce, axis=0)) / (k - 1)


def camkd_kd_loss(student_logits, teacher_logits, weights, temperature: float = 4.0, *,
                  scale_by_k: bool = True):
    """CA-MKD's weighted KD: (1 / (B K)) sum_k sum_i w_ki KL_ki.

    Args:
      student_logits: (B, C).
      teacher_logits: (K, B, C).
      weights: (K, B) (e.g. :func:`camkd_weights`).
      temperature: T.
      scale_by_k: keep the reference code's extra 1/K (the weights already sum to 1 over
        K, so the loss is 1/K of a weighted mean); False divides by B only.

    Returns:
      () float.
    """
    kl = kd_kl(student_logits[None], teacher_logits, temperature)   # (K, B)
    k, b = kl.shape
    return jnp.sum(weights * kl) / (b * (k if scale_by_k else 1))


def camkd_inter_loss(h, teacher_feats, weights, *, scale_by_k: bool = True):
    """CA-MKD's weighted feature loss: (1 / (B K)) sum_k sum_i v_ki mean_hwc (h - f)^2.

    Args:
      h: (K, B, H, W, D) connector outputs Embed_k(f_S), one per teacher.
      teacher_feats: (K, B, H, W, D) the teachers' maps.
      weights: (K, B).
      scale_by_k: as in :func:`camkd_kd_loss`.

    Returns:
      () float.
    """
    per = jnp.mean(jnp.square(h - teacher_feats), axis=tuple(range(2, h.ndim)))   # (K, B)
    k, b = per.shape
    return jnp.sum(weights * per) / (b * (k if scale_by_k else 1))


def aver_kd_loss(student_logits, teacher_logits, temperature: float = 4.0):
    """AVER: the mean over the K teachers of the batch-mean KD loss; () float."""
    return jnp.mean(kd_kl(student_logits[None], teacher_logits, temperature))


def ebkd_weights(teacher_logits):
    """EBKD per-sample weights w_ki = 1 - H_ki / sum_j H_ji.

    H_ki is the entropy (nats) of teacher k's softmax (T = 1) on sample i. A confident
    (low-entropy) teacher gets the higher weight; the weights sum to K - 1 over K.

    Args:
      teacher_logits: (K, B, C).

    Returns:
      (K, B) weights.
    """
    logp = jax.nn.log_softmax(teacher_logits, axis=-1)
    ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1)                 # (K, B)
    return 1.0 - ent / jnp.sum(ent, axis=0, keepdims=True)


def ebkd_kd_loss(student_logits, teacher_logits, temperature: float = 4.0):
    """EBKD: (1 / (B K)) sum_k sum_i w_ki KL_ki with :func:`ebkd_weights`; () float."""
    w = ebkd_weights(teacher_logits)
    return camkd_kd_loss(student_logits, teacher_logits, w, temperature, scale_by_k=True)


def one_class_svm_weights(gram, nu, num_iters: int = 200):
    """Normalised dual of a one-class SVM on a precomputed kernel, in pure JAX.

    scikit-learn's ``OneClassSVM(kernel="precomputed", nu=nu)`` (libsvm) solves
    min_a 0.5 a^T G a  s.t.  0 <= a_k <= 1, sum_k a_k = nu K, and stores the nonzero
    a_k as ``dual_coef_`` (so ``dual_coef_.sum() == nu K``). This returns
    w = a / (nu K), the solution of
    min_w 0.5 w^T G w  s.t.  0 <= w_k <= 1 / (nu K), sum_k w_k = 1
    (the minimum-norm point of the capped convex hull of the kernel's feature vectors),
    which is the rescaling CA-MKD's ``find_optimal_svm`` applies (``dual_coef_ / (m nu)``).

    Solver: libsvm's SMO algorithm (second-order working-set selection; each step moves
    weight between one pair (i, j) by the exact line minimum, clipped to the box) from
    the uniform point, a fixed ``num_iters`` steps in ``lax.fori_loop`` (a converged
    state is a fixed point: no violating pair, zero step). Projected gradient on the
    capped simplex was tried first and stalls when the teachers' gradient norms differ
    by orders of magnitude; SMO reaches ~1e-8 relative objective in 200 steps for
    K <= 8 there. G is rescaled by its largest diagonal entry (the minimiser is scale
    invariant). Jit-able, no host callback. Where G is singular the minimiser may not be
    unique (one of them is returned).

    Args:
      gram: (K, K) symmetric positive semi-definite.
      nu: () in [1/K, 1] (libsvm's nu; the cap 1/(nu K) must be >= 1/K).
      num_iters: SMO steps.

    Returns:
      (K,) weights in [0, 1/(nu K)] summing to 1.
    """
    k = gram.shape[0]
    dtype = gram.dtype
    cap = 1.0 / (nu * k)
    top = jnp.max(jnp.diag(gram))
    q = gram / jnp.where(top > 0, top, 1.0)
    diag = jnp.diag(q)
    inf = jnp.asarray(jnp.inf, dtype)
    w0 = jnp.full((k,), 1.0 / k, dtype)

    def step(_, carry):
        w, grad = carry
        i = jnp.argmax(jnp.where(w < cap, -grad, -inf))    # most violating, can grow
        b = grad - grad[i]                                 # decrease of f per unit i <- t
        a = diag[i] + diag - 2.0 * q[i]                    # curvature along e_i - e_t
        a = jnp.where(a > 0, a, 1e-12)                     # libsvm's TAU
        score = jnp.where((w > 0) & (b > 0), -b * b / a, inf)
        j = jnp.argmin(score)                              # second-order choice, can shrink
        delta = jnp.minimum(b[j] / a[j], jnp.minimum(cap - w[i], w[j]))
        delta = jnp.where(jnp.isfinite(score[j]), jnp.maximum(delta, 0.0), 0.0)
        w = w.at[i].add(delta).at[j].add(-delta)
        return w, grad + delta * (q[:, i] - q[:, j])

    w, _ = jax.lax.fori_loop(0, num_iters, step, (w0, q @ w0))
    return w


def aekd_weights(student_logits, teacher_logits, temperature: float = 4.0, c: float = 0.6,
                 *, normalize: bool = False, num_iters: int = 200):
    """AEKD teacher weights (CA-MKD's ``AEKD`` branch and ``find_optimal_svm``).

    g_k = mean over the batch of d KD_k / d z_s (KD_k = :func:`kd_loss` of teacher k, so
    g_k = (T / B) mean_i (p_s,i - p_t_k,i)), G = [g_j . g_k]; the weights are the
    normalised one-class-SVM dual (:func:`one_class_svm_weights`) with
    nu = clip(1 / (c K), 1 / K, 1), so each weight lies in [0, min(c, 1)] when
    c >= 1/K. With ``normalize`` (the reference's ``--svm_norm``) G is built from the
    unit vectors g_k / |g_k|, then w_k <- (w_k / |g_k|) / sum_j (w_j / |g_j|).

    Args:
      student_logits: (B, C); gradients are stopped (the weights are constants).
      teacher_logits: (K, B, C).
      temperature: T.
      c: the reference's ``-C`` tolerance (default 0.6).
      normalize: the reference's ``--svm_norm`` (default off there).
      num_iters: solver iterations.

    Returns:
      (K,) weights summing to 1 (the reference's ``scale``), gradient stopped.
    """
    zs, zt = jax.lax.stop_gradient((student_logits, teacher_logits))
    k = zt.shape[0]
    grads = jax.vmap(jax.grad(kd_loss), in_axes=(None, 0, None))(zs, zt, temperature)
    g = jnp.mean(grads, axis=1)                                        # (K, C)
    if normalize:
        norm = jnp.linalg.norm(g, axis=1)
        norm = jnp.where(norm > 0, norm, 1.0)
        g = g / norm[:, None]
    nu = jnp.clip(1.0 / (c * k), 1.0 / k, 1.0)
    w = one_class_svm_weights(g @ g.T, nu, num_iters)
    if normalize:
        w = w / norm
        w = w / jnp.sum(w)
    return jax.lax.stop_gradient(w)


def aekd_kd_loss(student_logits, teacher_logits, temperature: float = 4.0, c: float = 0.6,
                 *, normalize: bool = False, num_iters: int = 200):
    """AEKD: sum_k w_k KD_k with :func:`aekd_weights` (constants) and batch-mean KD_k.

    Args:
      student_logits: (B, C).
      teacher_logits: (K, B, C).
      temperature, c, normalize, num_iters: as in :func:`aekd_weights`.

    Returns:
      (() loss, (K,) weights).
    """
    w = aekd_weights(student_logits, teacher_logits, temperature, c, normalize=normalize,
                     num_iters=num_iters)
    kd = jnp.mean(kd_kl(student_logits[None], teacher_logits, temperature), axis=1)   # (K,)
    return jnp.dot(w, kd), w


DSKD_WEIGHT_RULES = ("proportional", "softmax", "inverse_softmax", "uniform")


def dskd_layer_weights(losses, rule: str = "proportional", tau: float = 1.0):
    """DSKD's loss-based weights over the shallow layers (RECONSTRUCTION, see module doc).

    Args:
      losses: (L,) current per-layer losses (detach them upstream: the weights are
        treated as constants).
      rule: "proportional": w = L_i / sum_j L_j (a lagging layer gets more weight);
        "softmax": softmax(L / tau) (same direction, sharper); "inverse_softmax":
        (1 - softmax(L / tau)) / (L - 1), CA-MKD's rule (a lagging layer gets less);
        "uniform": 1 / L.
      tau: temperature of the two softmax rules.

    Returns:
      (L,) weights summing to 1.

    Raises:
      ValueError: unknown rule, or "inverse_softmax" with a single layer.
    """
    n = losses.shape[0]
    if rule == "proportional":
        return losses / jnp.sum(losses)
    if rule == "softmax":
        return jax.nn.softmax(losses / tau)
    if rule == "inverse_softmax":
        if n < 2:
            raise ValueError("dskd rule 'inverse_softmax' needs at least 2 layers")
        return (1.0 - jax.nn.softmax(losses / tau)) / (n - 1)
    if rule == "uniform":
        return jnp.full_like(losses, 1.0 / n)
    raise ValueError(f"unknown DSKD weight rule {rule!r}; valid: {DSKD_WEIGHT_RULES}")
