"""AVER multi-teacher baseline (CA-MKD code, ``AVERAGE_LOSS``).

L = gamma CE + alpha mean_k KD(z_s, z_t_k); defaults gamma 1, alpha 1 (``-r 1 -a 1 -b 0``).
"""
from jaxkd import losses
from jaxkd.methods.base import Context, Method, ce_plus_kd

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 1.0, "temperature": 4.0}


def loss(opts, ctx: Context):
    kd = losses.aver_kd_loss(ctx.s_logits, ctx.t_logits, opts.temperature)
    return ce_plus_kd(opts, ctx, kd)


METHOD = Method(name="aver", teachers=-1, loss=loss, defaults=DEFAULTS, doc=__doc__)
