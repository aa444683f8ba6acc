"""AEKD multi-teacher baseline (adaptive ensemble KD in gradient space; CA-MKD code).

L = gamma CE + alpha sum_k w_k KD(z_s, z_t_k), defaults gamma 1, alpha 1 (``-r 1 -a 1
-b 0``, ``--distill kd --ensemble_method AEKD``). The teacher weights are constants
(stop-gradient) computed every step as in the reference's ``find_optimal_svm``:
  g_k = mean over the batch of d KD_k / d z_s                       (K, C)
  G = [g_j . g_k]                                                   (K, K)
  a = dual of OneClassSVM(kernel="precomputed", nu) on G, nu = 1 / (C K), C = 0.6
  w = a / (nu K)
scikit-learn's (libsvm's) dual has 0 <= a_k <= 1 and sum_k a_k = nu K; the reference
divides by nu K, so the weights lie in [0, C] and sum to 1 (the minimum-norm point of
the gradients' convex hull with every weight capped at C). This is the reference
behaviour, solved in pure JAX (:func:`jaxkd.losses.one_class_svm_weights`, SMO in a
fixed-length ``lax.fori_loop``, jit-able, no host callback). ``svm_norm`` is the
reference's ``--svm_norm`` (off there): unit-norm g_k, then w_k / |g_k| renormalised.
As in the reference, nu is clipped to [1/K, 1]. ``svm_iters`` is the solver's fixed
step count. Only the logit-level variant (``--distill kd``) is implemented.
"""
from jaxkd import losses
from jaxkd.methods.base import Context, Method, ce_plus_kd

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 1.0, "temperature": 4.0, "svm_c": 0.6,
            "svm_norm": False, "svm_iters": 200}


def loss(opts, ctx: Context):
    kd, w = losses.aekd_kd_loss(ctx.s_logits, ctx.t_logits, opts.temperature, opts.svm_c,
                                normalize=opts.svm_norm, num_iters=int(opts.svm_iters))
    total, metrics = ce_plus_kd(opts, ctx, kd)
    metrics.update({f"w_{k}": w[k] for k in range(w.shape[0])})
    return total, metrics


METHOD = Method(name="aekd", teachers=-1, loss=loss, defaults=DEFAULTS, doc=__doc__)
