"""Plain cross-entropy training (teachers, and the student-alone baseline)."""
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.methods.base import Context, Method


def loss(opts, ctx: Context):
    """mean_i CE(z_s,i, y_i)."""
    del opts
    ce = jnp.mean(losses.cross_entropy(ctx.s_logits, ctx.labels))
    return ce, {"ce": ce}


METHOD = Method(name="ce", teachers=0, loss=loss, defaults={},
                doc="cross-entropy only")
