"""FitNet-MKD multi-teacher baseline (CA-MKD code, ``--distill hint``, ``AVERAGE_LOSS``).

AVER plus one FitNet hint per teacher, each through its own ConvReg regressor:
  L = gamma CE + alpha mean_k KD(z_s, z_t_k)
      + beta mean_k MSE(ConvReg_k(f_s[hint]), f_t_k[hint]),
defaults gamma 1, alpha 1, beta 100, hint layer 2 (``-r 1 -a 1 -b 100 --hint_layer 2``).

Reference-code quirks as options: ``hint_from_epoch`` (default 2: the training loop
drops the beta term in epoch 1, as for CA-MKD) and ``detach_hint`` (default False). The
reference averages the per-teacher hint losses with ``torch.mean(torch.tensor(list))``,
which copies their values out of the autograd graph: there the hint term shifts the
loss but sends no gradient to the student or the regressors. ``detach_hint=True``
reproduces that (the method then trains like AVER); the default trains the hints as
the method describes.
"""
import jax

from jaxkd import losses
from jaxkd.connectors import ConvReg, PerTeacher
from jaxkd.methods import fitnet
from jaxkd.methods.base import Context, Method, ce_plus_kd

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 1.0, "feat_weight": 100.0, "temperature": 4.0,
            "hint_layer": 2, "hint_from_epoch": 2, "detach_hint": False}


def make_connector(opts, s_shapes, t_shapes, num_teachers):
    del s_shapes
    return PerTeacher(ConvReg, "reg", num_teachers, *fitnet.hint_target(opts, t_shapes))


def loss(opts, ctx: Context):
    kd = losses.aver_kd_loss(ctx.s_logits, ctx.t_logits, opts.temperature)
    total, metrics = ce_plus_kd(opts, ctx, kd)
    # (K, B, h, w, C) against the teachers' (K, B, h, w, C): every teacher's map has the
    # same size, so the mean over all elements is the mean over k of the per-teacher MSE.
    hint = losses.mse(ctx.conn, ctx.t_feats[int(opts.hint_layer)])
    if opts.detach_hint:
        hint = jax.lax.stop_gradient(hint)
    on = (ctx.epoch >= opts.hint_from_epoch).astype(hint.dtype)
    return total + on * opts.feat_weight * hint, dict(metrics, hint=hint)


METHOD = Method(name="fitnet_mkd", teachers=-1, loss=loss, defaults=DEFAULTS,
                make_connector=make_connector, doc=__doc__)
