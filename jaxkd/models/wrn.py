"""Wide ResNets (pre-activation, Zagoruyko & Komodakis) as in CA-MKD ``models/wrn.py``.

WRN-d-k: conv3x3(16) stem, three stages of n = (d - 4) / 6 pre-activation blocks with
widths 16k, 32k, 64k (strides 1, 2, 2), then BN + ReLU, global average pool, Linear.
Feature taps (CA-MKD's version): ``[f0 stem conv, f1, f2 stage outputs, f3 = relu(bn(stage3)),
pooled]``, so ``feats[-2]`` is the map the classifier pools (32/32/16/8 on 32x32 inputs)
and ``forward_from(f3, 3)`` is pool + Linear. ``preact=True`` gives the values before
the ReLU: f1 and f2 are unchanged (pre-activation blocks end without one), f3 = bn(stage3).
(RepDistiller instead applies the next block's BN to f1 and f2.)
Init: convs N(0, sqrt(2 / (k k out))); BN 1 / 0; Linear torch-default weight, zero bias.
"""
from __future__ import annotations

import flax.linen as nn

from jaxkd.models._layers import FeatureNet, Head, batch_norm, conv


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 + shortcut (1x1 conv of the activated input
    when the width changes, else the raw input)."""
    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        act = nn.relu(batch_norm(train)(x))
        out = nn.relu(batch_norm(train)(conv(self.features, 3, self.stride)(act)))
        out = conv(self.features, 3)(out)
        if x.shape[-1] == self.features:
            return x + out
        return conv(self.features, 1, self.stride, padding=0, name="shortcut")(act) + out


class WideStage(nn.Module):
    """``num_blocks`` blocks; the last stage also applies the final BN + ReLU."""
    features: int
    num_blocks: int
    stride: int
    final_bn: bool = False

    @nn.compact
    def __call__(self, h, train: bool = False):
        for i in range(self.num_blocks):
            h = WideBlock(self.features, self.stride if i == 0 else 1)(h, train)
        if not self.final_bn:
            return h, h
        pre = batch_norm(train, name="bn_final")(h)
        return nn.relu(pre), pre


class WideResNet(FeatureNet):
    """WRN-``depth``-``widen`` (depth = 6n + 4)."""
    depth: int
    widen: int
    num_classes: int = 100

    def setup(self):
        if (self.depth - 4) % 6 or self.depth < 10:
            raise ValueError(f"WideResNet depth {self.depth} must be 6n + 4, n >= 1")
        n = (self.depth - 4) // 6
        self.stem = lambda x, train: self.stem_conv(x)
        self.stem_conv = conv(16, 3)
        widths = (16 * self.widen, 32 * self.widen, 64 * self.widen)
        self.stages = [WideStage(w, n, s, final_bn=(i == 2))
                       for i, (w, s) in enumerate(zip(widths, (1, 2, 2)))]
        self.head = Head(self.num_classes, "torch_zero_bias")


def wrn(depth: int, widen: int):
    return lambda num_classes=100, **kw: WideResNet(depth, widen, num_classes, **kw)


FACTORIES = {f"wrn_{d}_{k}": wrn(d, k) for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))}
