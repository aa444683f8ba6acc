"""FitNet hints (Romero et al. 2015) as in RepDistiller (``--distill hint``).

L = gamma CE + alpha KD + beta MSE(ConvReg(f_s[hint]), f_t[hint]), trained jointly from
the first step (RepDistiller's one-stage variant); defaults gamma 1, alpha 0, beta 100,
hint layer 2 (``-a 0 -b 100 --hint_layer 2``).
"""
import flax.linen as nn
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.connectors import ConvReg
from jaxkd.methods.base import Context, Method

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 0.0, "feat_weight": 100.0, "temperature": 4.0,
            "hint_layer": 2}


class Hint(nn.Module):
    """ConvReg applied to ``feats[index]``."""
    index: int
    out_shape: tuple

    @nn.compact
    def __call__(self, feats, train: bool = True):
        return ConvReg(self.out_shape)(feats[self.index], train)


def hint_target(opts, t_shapes):
    """(index, (h, w, C_t)) of the teacher map at ``opts.hint_layer`` (shared with
    fitnet_mkd).

    Raises:
      ValueError: the hint layer is out of range or not a spatial map.
    """
    i = int(opts.hint_layer)
    if not -len(t_shapes) <= i < len(t_shapes) or len(t_shapes[i]) != 3:
        raise ValueError(f"{opts.name} hint_layer={i} is not a spatial feature map; the "
                         f"teacher's features have shapes {list(t_shapes)}")
    return i, tuple(t_shapes[i])


def make_connector(opts, s_shapes, t_shapes, num_teachers):
    del s_shapes, num_teachers
    return Hint(*hint_target(opts, t_shapes))


def loss(opts, ctx: Context):
    ce = jnp.mean(losses.cross_entropy(ctx.s_logits, ctx.labels))
    kd = losses.kd_loss(ctx.s_logits, ctx.t_logits[0], opts.temperature)
    hint = losses.mse(ctx.conn, ctx.t_feats[int(opts.hint_layer)][0])
    total = opts.ce_weight * ce + opts.kd_weight * kd + opts.feat_weight * hint
    return total, {"ce": ce, "kd": kd, "hint": hint}


METHOD = Method(name="fitnet", teachers=1, loss=loss, defaults=DEFAULTS,
                make_connector=make_connector, doc=__doc__)
