"""ShuffleNetV1 / V2 for CIFAR as in RepDistiller / CA-MKD ``models/ShuffleNetv{1,2}.py``.

Both: 1x1 conv stem (24) + BN + ReLU at full resolution, three stride-2 stages, global
average pool, Linear. Feature taps ``[f0 stem, f1, f2, f3 stage outputs, pooled]``
(32/16/8/4 on 32x32 inputs); ``preact=True`` gives the last block's output before its ReLU
(V2: concatenated with the pass-through half, before the channel shuffle, as the reference).
Init: PyTorch defaults everywhere (the reference sets none): convs and Linear
U(+-1/sqrt(fan_in)) (Linear bias too); BN 1 / 0.

ShuffleV1: out (240, 480, 960), blocks (4, 8, 4), groups 3; first block of a stage has
stride 2 and concatenates an avg-pooled shortcut. ShuffleV2 (net_size 1): out
(116, 232, 464, 1024), a down-sampling block then (3, 7, 3) basic blocks, head 1x1
conv(1024) + BN + ReLU.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxkd.models._layers import FeatureNet, Head, batch_norm, conv, torch_default


def channel_shuffle(x, groups: int):
    """torch ``x.view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)`` in NHWC."""
    *lead, c = x.shape
    return x.reshape(*lead, groups, c // groups).swapaxes(-1, -2).reshape(*lead, c)


def _conv(features, kernel, stride=1, groups=1, name=None):
    return conv(features, kernel, stride, groups=groups, init=torch_default, name=name)


class _Stem(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.relu(batch_norm(train)(_conv(24, 1)(x)))


class ShuffleV1Block(nn.Module):
    """Grouped 1x1 (out/4) + BN + ReLU, shuffle, depthwise 3x3 (stride) + BN, grouped 1x1 +
    BN; + identity (stride 1) or concat with avg-pool(3, 2, 1) of the input (stride 2).
    Returns (relu(pre), pre)."""
    features: int
    stride: int
    groups: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        mid = self.features // 4
        g = 1 if x.shape[-1] == 24 else self.groups
        out = nn.relu(batch_norm(train)(_conv(mid, 1, groups=g)(x)))
        out = channel_shuffle(out, g)
        out = nn.relu(batch_norm(train)(_conv(mid, 3, self.stride, groups=mid)(out)))
        out = batch_norm(train)(_conv(self.features, 1, groups=self.groups)(out))
        if self.stride == 2:
            res = nn.avg_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)),
                              count_include_pad=True)
            pre = jnp.concatenate([out, res], axis=-1)
        else:
            pre = out + x
        return nn.relu(pre), pre


class ShuffleV1Stage(nn.Module):
    out_planes: int
    num_blocks: int
    groups: int

    @nn.compact
    def __call__(self, h, train: bool = False):
        pre = h
        for i in range(self.num_blocks):
            features = self.out_planes - (h.shape[-1] if i == 0 else 0)
            h, pre = ShuffleV1Block(features, 2 if i == 0 else 1, self.groups)(h, train)
        return h, pre


class ShuffleNetV1(FeatureNet):
    out_planes: Sequence[int] = (240, 480, 960)
    num_blocks: Sequence[int] = (4, 8, 4)
    groups: int = 3
    num_classes: int = 100

    def setup(self):
        self.stem = _Stem()
        self.stages = [ShuffleV1Stage(o, n, self.groups)
                       for o, n in zip(self.out_planes, self.num_blocks)]
        self.head = Head(self.num_classes, "torch")


class ShuffleV2Down(nn.Module):
    """Left: dw3x3 s2 + BN, 1x1 + BN + ReLU. Right: 1x1 + BN + ReLU, dw3x3 s2 + BN,
    1x1 + BN + ReLU. Concat (out/2 each), shuffle(2)."""
    features: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        c, mid = x.shape[-1], self.features // 2
        left = batch_norm(train)(_conv(c, 3, 2, groups=c)(x))
        left = nn.relu(batch_norm(train)(_conv(mid, 1)(left)))
        right = nn.relu(batch_norm(train)(_conv(mid, 1)(x)))
        right = batch_norm(train)(_conv(mid, 3, 2, groups=mid)(right))
        right = nn.relu(batch_norm(train)(_conv(mid, 1)(right)))
        return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleV2Basic(nn.Module):
    """Split channels in half; the second half goes 1x1 + BN + ReLU, dw3x3 + BN, 1x1 + BN
    (+ ReLU); concat with the first half and shuffle(2). Returns (out, preact)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1] // 2
        x1, x2 = x[..., :c], x[..., c:]
        out = nn.relu(batch_norm(train)(_conv(c, 1)(x2)))
        out = batch_norm(train)(_conv(c, 3, groups=c)(out))
        pre = batch_norm(train)(_conv(c, 1)(out))
        out = jnp.concatenate([x1, nn.relu(pre)], axis=-1)
        return channel_shuffle(out, 2), jnp.concatenate([x1, pre], axis=-1)


class ShuffleV2Stage(nn.Module):
    features: int
    num_blocks: int

    @nn.compact
    def __call__(self, h, train: bool = False):
        h = pre = ShuffleV2Down(self.features)(h, train)
        for _ in range(self.num_blocks):
            h, pre = ShuffleV2Basic()(h, train)
        return h, pre


class ShuffleNetV2(FeatureNet):
    out_channels: Sequence[int] = (116, 232, 464, 1024)
    num_blocks: Sequence[int] = (3, 7, 3)
    num_classes: int = 100

    def setup(self):
        self.stem = _Stem()
        self.stages = [ShuffleV2Stage(o, n)
                       for o, n in zip(self.out_channels[:3], self.num_blocks)]
        self.head = Head(self.num_classes, "torch", conv_features=self.out_channels[3],
                         conv_init=torch_default)


FACTORIES = {
    "ShuffleV1": lambda num_classes=100, **kw: ShuffleNetV1(num_classes=num_classes, **kw),
    "ShuffleV2": lambda num_classes=100, **kw: ShuffleNetV2(num_classes=num_classes, **kw),
}
