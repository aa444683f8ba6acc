"""The CIFAR model zoo of RepDistiller / CA-MKD in Flax Linen (NHWC).

    model = jaxkd.models.create("resnet8x4", num_classes=100)
    variables = model.init(key, x)                     # {"params", "batch_stats"}
    logits, feats = model.apply(variables, x)          # eval mode (running BN stats)
    (logits, feats), upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
    logits = model.apply(variables, feats[2], 2, method="forward_from")

``x``: (B, H, W, C) float images; 32x32x3 (CIFAR) and 28x28x1 (Fashion-MNIST) both work
(pooling is global). ``feats = [f0 stem map, f1..fL stage maps, pooled (B, D)]``;
``feats[-2]`` is the last spatial map (CA-MKD), ``feats[2]`` the FitNet hint.
``forward_from(h, index)`` pushes a map shaped like ``feats[index]`` through the remaining
stages and the head (the reference code's ``distill_seq``); ``index = len(feats) - 2``
applies only the head. See docs/jaxkd_models.md for the table of models.
"""
from __future__ import annotations

import flax.linen as nn

from jaxkd.models import mobilenetv2, resnet, shufflenet, vgg, wrn
from jaxkd.models._layers import BN_EPS, BN_MOMENTUM, FeatureNet, count_params

_FACTORIES = {**resnet.FACTORIES, **wrn.FACTORIES, **vgg.FACTORIES, **mobilenetv2.FACTORIES,
              **shufflenet.FACTORIES}

MODELS: tuple = tuple(_FACTORIES)

__all__ = ["MODELS", "create", "count_params", "FeatureNet", "BN_MOMENTUM", "BN_EPS"]


def create(name: str, num_classes: int = 100, **kw) -> nn.Module:
    """The model ``name`` (one of :data:`MODELS`) with ``num_classes`` outputs.

    Extra keyword arguments go to the module's constructor. Raises ValueError for an
    unknown name, listing the valid ones.
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int; got {num_classes!r}")
    return _FACTORIES[name](num_classes=num_classes, **kw)
