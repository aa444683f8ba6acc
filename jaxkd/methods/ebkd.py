"""EBKD multi-teacher baseline (entropy-based weights, CA-MKD code).

L = gamma CE + alpha (1/(B K)) sum_k sum_i w_ki KL_ki with w_ki = 1 - H_ki / sum_j H_ji
(teacher softmax entropies at T = 1); defaults gamma 1, alpha 1.
"""
from jaxkd import losses
from jaxkd.methods.base import Context, Method, ce_plus_kd

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 1.0, "temperature": 4.0}


def loss(opts, ctx: Context):
    kd = losses.ebkd_kd_loss(ctx.s_logits, ctx.t_logits, opts.temperature)
    return ce_plus_kd(opts, ctx, kd)


METHOD = Method(name="ebkd", teachers=-1, loss=loss, defaults=DEFAULTS, doc=__doc__)
