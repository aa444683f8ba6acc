"""CA-MKD: confidence-aware multi-teacher KD (Zhang, Chen, Wang, ICASSP 2022).

With K teachers of one architecture and T = 4 (reference code: Rorozhl/CA-MKD):
  w_ki = (1 - softmax_k CE(z_t_k,i, y_i)) / (K - 1)            (teacher logits, detached)
  L_KD = (1/(B K)) sum_k sum_i w_ki T^2 KL(p_t_k,i || p_s,i)
  h_k = Embed_k(f_s[-2]) (1x1 conv + BN + ReLU, spatially aligned to f_t_k[-2])
  u_k = teacher k's avgpool + fc on h_k (frozen, gradients flow into h_k)
  v_ki = (1 - softmax_k CE(u_k,i, y_i)) / (K - 1)               (NOT detached by default)
  L_inter = (1/(B K)) sum_k sum_i v_ki mean_chw (h_k,i - f_t_k,i)^2
  L = gamma CE + alpha L_KD + beta L_inter, defaults gamma 1, alpha 1, beta 50.

The reference code's quirks are options: ``scale_by_k`` (the extra 1/K on normalised
weights, default True), ``detach_inter_weights`` (default False: gradients flow through
v), ``inter_from_epoch`` (default 2: the first epoch omits the beta term).
"""
import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.connectors import Embed, PerTeacher
from jaxkd.methods.base import Context, Method

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 1.0, "feat_weight": 50.0, "temperature": 4.0,
            "scale_by_k": True, "detach_inter_weights": False, "inter_from_epoch": 2}


def make_connector(opts, s_shapes, t_shapes, num_teachers):
    del opts
    if len(s_shapes[-2]) != 3 or len(t_shapes[-2]) != 3:
        raise ValueError("camkd needs spatial maps at feats[-2]; got student "
                         f"{s_shapes[-2]}, teacher {t_shapes[-2]}")
    return PerTeacher(Embed, "embed", num_teachers, len(s_shapes) - 2, tuple(t_shapes[-2]))


def loss(opts, ctx: Context):
    ce = jnp.mean(losses.cross_entropy(ctx.s_logits, ctx.labels))
    t_logits = jax.lax.stop_gradient(ctx.t_logits)
    w = losses.camkd_weights(t_logits, ctx.labels)
    kd = losses.camkd_kd_loss(ctx.s_logits, t_logits, w, opts.temperature,
                              scale_by_k=opts.scale_by_k)
    index = len(ctx.t_feats) - 2
    u = ctx.tail(ctx.conn, index)                                   # (K, B, C)
    v = losses.camkd_weights(u, ctx.labels)
    if opts.detach_inter_weights:
        v = jax.lax.stop_gradient(v)
    inter = losses.camkd_inter_loss(ctx.conn, ctx.t_feats[index], v,
                                    scale_by_k=opts.scale_by_k)
    on = (ctx.epoch >= opts.inter_from_epoch).astype(inter.dtype)
    total = opts.ce_weight * ce + opts.kd_weight * kd + on * opts.feat_weight * inter
    metrics = {"ce": ce, "kd": kd, "inter": inter}
    metrics.update({f"w_{k}": jnp.mean(w[k]) for k in range(w.shape[0])})
    return total, metrics


METHOD = Method(name="camkd", teachers=-1, loss=loss, defaults=DEFAULTS,
                make_connector=make_connector, doc=__doc__)
