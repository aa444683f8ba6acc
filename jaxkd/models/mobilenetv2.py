"""MobileNetV2 for CIFAR as in RepDistiller / CA-MKD ``models/mobilenetv2.py``
(``MobileNetV2`` = ``mobile_half``: expansion T = 6, width multiplier 0.5).

Stem conv3x3(32 w, stride 2) + BN + ReLU; inverted-residual blocks (t, c, n, s) =
(1,16,1,1) (T,24,2,1) (T,32,3,2) (T,64,4,2) (T,96,3,1) (T,160,3,2) (T,320,1,1), every block
with its 1x1 expansion conv (also for t = 1), residual when stride 1 and shapes match;
head conv1x1(1280) + BN + ReLU, global average pool, Linear(1280, classes).
Feature taps ``[f0 stem, f1 after blocks 0-1, f2 after block 2, f3 after blocks 3-4,
f4 after blocks 5-6, pooled]`` (16/16/8/4/2 on 32x32 inputs); ``forward_from(f4, 4)`` is
the head (1x1 conv, pool, Linear). ``preact`` changes nothing (the block outputs are linear).
Init: convs N(0, sqrt(2 / (k k out))); BN 1 / 0; Linear N(0, 0.01), zero bias.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from jaxkd.models._layers import FeatureNet, Head, batch_norm, conv
from jaxkd.models.resnet import ConvBN


class InvertedResidual(nn.Module):
    """1x1 expand (t) + BN + ReLU, 3x3 depthwise (stride) + BN + ReLU, 1x1 project + BN."""
    features: int
    stride: int
    expand: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        hidden = x.shape[-1] * self.expand
        h = nn.relu(batch_norm(train)(conv(hidden, 1)(x)))
        h = nn.relu(batch_norm(train)(conv(hidden, 3, self.stride, groups=hidden)(h)))
        h = batch_norm(train)(conv(self.features, 1)(h))
        if self.stride == 1 and x.shape[-1] == self.features:
            return x + h
        return h


class MBStage(nn.Module):
    """A run of inverted-residual groups, each (t, c, n, s); returns (out, out)."""
    settings: Sequence[Sequence[int]]

    @nn.compact
    def __call__(self, h, train: bool = False):
        for t, c, n, s in self.settings:
            for i in range(n):
                h = InvertedResidual(c, s if i == 0 else 1, t)(h, train)
        return h, h


class MobileNetV2(FeatureNet):
    """MobileNetV2(T, width_mult) with the RepDistiller stage split for feature taps."""
    expand: int = 6
    width_mult: float = 0.5
    num_classes: int = 100

    def setup(self):
        t, w = self.expand, self.width_mult
        cfg = [(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1),
               (t, 160, 3, 2), (t, 320, 1, 1)]
        cfg = [(e, int(c * w), n, s) for e, c, n, s in cfg]
        self.stem = ConvBN(int(32 * w), 3, 2)
        self.stages = [MBStage(cfg[0:2]), MBStage(cfg[2:3]), MBStage(cfg[3:5]),
                       MBStage(cfg[5:7])]
        last = int(1280 * w) if w > 1.0 else 1280
        self.head = Head(self.num_classes, "normal", conv_features=last)


FACTORIES = {"MobileNetV2":
             lambda num_classes=100, **kw: MobileNetV2(6, 0.5, num_classes, **kw)}
