"""DSKD: knowledge distillation with deep supervision (Luo, Chen, Wang, IJCNN 2023).

RECONSTRUCTION: the paper's code is not public; every open choice is an option.
For each shallow student stage i in ``layers`` (default: every stage map before the last,
i.e. feats[1..L-1] of a 3-stage ResNet):
  h_i = C_i(f_s[i])   (Embed: spatial alignment + 1x1 conv + BN + ReLU to f_t[i]'s shape)
  z_i = teacher stages i+1..L and classifier on h_i (frozen, gradients flow into h_i)
  L_pred_i = T^2 KL(p_t || softmax(z_i / T)),  L_feat_i = MSE(h_i, f_t[i])
  w = g(stop_gradient(L_pred + lambda L_feat)), sum_i w_i = 1   (``weight_rule``)
  L = gamma CE + alpha KD + beta sum_i w_i (L_pred_i + lambda L_feat_i).
``weight_rule``: "proportional" (default; w_i = L_i / sum_j L_j, a lagging layer gets
more weight), "softmax" (softmax(L / tau)), "inverse_softmax" (CA-MKD's
(1 - softmax(L / tau)) / (n - 1)), "uniform". Defaults gamma 1, alpha 1, beta 1,
lambda 1, T 4 are our choices, not the paper's.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.connectors import Embed
from jaxkd.methods.base import Context, Method

DEFAULTS = {"ce_weight": 1.0, "kd_weight": 1.0, "deep_weight": 1.0, "feat_lambda": 1.0,
            "temperature": 4.0, "layers": (), "weight_rule": "proportional", "tau": 1.0}


def resolve_layers(opts, num_feats: int) -> tuple:
    """The supervised feature indices: ``opts.layers`` or, when empty, 1..num_feats-3."""
    layers = tuple(int(i) for i in opts.layers) or tuple(range(1, num_feats - 2))
    bad = [i for i in layers if not 0 <= i < num_feats - 2]
    if not layers or bad:
        raise ValueError(f"dskd layers {layers} must be indices of spatial maps before "
                         f"the last stage, in [0, {num_feats - 3}]")
    return layers


class DeepEmbed(nn.Module):
    """One :class:`~jaxkd.connectors.Embed` per supervised layer; a tuple of maps."""
    layers: tuple
    out_shapes: tuple

    @nn.compact
    def __call__(self, feats, train: bool = True):
        return tuple(Embed(s, name=f"embed_{i}")(feats[i], train)
                     for i, s in zip(self.layers, self.out_shapes))


def make_connector(opts, s_shapes, t_shapes, num_teachers):
    del num_teachers
    if opts.weight_rule not in losses.DSKD_WEIGHT_RULES:
        raise ValueError(f"unknown dskd weight_rule {opts.weight_rule!r}; valid: "
                         f"{losses.DSKD_WEIGHT_RULES}")
    if len(s_shapes) != len(t_shapes):
        raise ValueError(f"dskd needs student and teacher with the same number of "
                         f"stages; got {len(s_shapes)} and {len(t_shapes)} features")
    layers = resolve_layers(opts, len(t_shapes))
    return DeepEmbed(layers, tuple(tuple(t_shapes[i]) for i in layers))


def loss(opts, ctx: Context):
    ce = jnp.mean(losses.cross_entropy(ctx.s_logits, ctx.labels))
    t_logits = jax.lax.stop_gradient(ctx.t_logits[0])
    kd = losses.kd_loss(ctx.s_logits, t_logits, opts.temperature)
    layers = resolve_layers(opts, len(ctx.t_feats))
    pred, feat = [], []
    for i, h in zip(layers, ctx.conn):
        z = ctx.tail(h[None], i)[0]
        pred.append(losses.kd_loss(z, t_logits, opts.temperature))
        feat.append(losses.mse(h, ctx.t_feats[i][0]))
    per_layer = jnp.stack(pred) + opts.feat_lambda * jnp.stack(feat)
    w = losses.dskd_layer_weights(jax.lax.stop_gradient(per_layer), opts.weight_rule,
                                  opts.tau)
    deep = jnp.sum(w * per_layer)
    total = opts.ce_weight * ce + opts.kd_weight * kd + opts.deep_weight * deep
    metrics = {"ce": ce, "kd": kd, "deep": deep}
    for j, i in enumerate(layers):
        metrics.update({f"pred_{i}": pred[j], f"feat_{i}": feat[j], f"w_{i}": w[j]})
    return total, metrics


METHOD = Method(name="dskd", teachers=1, loss=loss, defaults=DEFAULTS,
                make_connector=make_connector, doc=__doc__)
