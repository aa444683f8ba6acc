"""Vanilla knowledge distillation (Hinton et al. 2015) with RepDistiller's weights.

L = gamma CE(z_s, y) + alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)), batch mean;
defaults gamma 0.1, alpha 0.9, T 4 (``-r 0.1 -a 0.9 -b 0``).
"""
from jaxkd import losses
from jaxkd.methods.base import Context, Method, ce_plus_kd

DEFAULTS = {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0}


def loss(opts, ctx: Context):
    kd = losses.kd_loss(ctx.s_logits, ctx.t_logits[0], opts.temperature)
    return ce_plus_kd(opts, ctx, kd)


METHOD = Method(name="kd", teachers=1, loss=loss, defaults=DEFAULTS, doc=__doc__)
