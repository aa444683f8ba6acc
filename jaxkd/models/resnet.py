"""CIFAR ResNets of RepDistiller / CA-MKD (``models/resnet.py``) and the ImageNet-style
ResNet18 / ResNet50 with a CIFAR stem (``models/resnetv2.py``), in Flax Linen (NHWC).

``ResNet(depth, widths)``: conv3x3(widths[0]) + BN + ReLU, three stages of (depth - 2) / 6
basic blocks with widths[1:] (strides 1, 2, 2), global average pool, Linear. Feature taps
``[f0 stem, f1, f2, f3 stage outputs, pooled]``; on 32x32 inputs f0..f3 are 32/32/16/8.
``ResNetV2``: conv3x3(64) stem, four stages (64, 128, 256, 512 planes; strides 1, 2, 2, 2),
taps ``[f0, f1..f4, pooled]`` (32/32/16/8/4). Convs: Kaiming-normal fan-out; BN 1 / 0;
Linear: torch default.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from jaxkd.models._layers import FeatureNet, Head, batch_norm, conv


class ConvBN(nn.Module):
    """conv(k, stride) + BN (+ ReLU): the stems."""
    features: int
    kernel: int = 3
    stride: int = 1
    relu: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = batch_norm(train)(conv(self.features, self.kernel, self.stride)(x))
        return nn.relu(x) if self.relu else x


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut (1x1 conv + BN when the shape changes).

    ``(x (B, H, W, C_in), train) -> (relu(out), out)`` with out (B, H/s, W/s, planes).
    """
    planes: int
    stride: int = 1
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = nn.relu(batch_norm(train)(conv(self.planes, 3, self.stride)(x)))
        out = batch_norm(train)(conv(self.planes, 3)(out))
        out = out + _shortcut(x, self.planes * self.expansion, self.stride, train)
        return nn.relu(out), out


class Bottleneck(nn.Module):
    """1x1 (planes) - 3x3 (planes, stride) - 1x1 (4 planes), BN after each, + shortcut."""
    planes: int
    stride: int = 1
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = nn.relu(batch_norm(train)(conv(self.planes, 1)(x)))
        out = nn.relu(batch_norm(train)(conv(self.planes, 3, self.stride)(out)))
        out = batch_norm(train)(conv(self.planes * 4, 1)(out))
        out = out + _shortcut(x, self.planes * self.expansion, self.stride, train)
        return nn.relu(out), out


def _shortcut(x, features: int, stride: int, train: bool):
    if stride == 1 and x.shape[-1] == features:
        return x
    return batch_norm(train, name="shortcut_bn")(
        conv(features, 1, stride, padding=0, name="shortcut_conv")(x))


class Stage(nn.Module):
    """``num_blocks`` residual blocks, the first with ``stride``; returns (out, preact)."""
    block: str
    planes: int
    num_blocks: int
    stride: int = 1

    @nn.compact
    def __call__(self, h, train: bool = False):
        cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
        pre = h
        for i in range(self.num_blocks):
            h, pre = cls(self.planes, self.stride if i == 0 else 1)(h, train)
        return h, pre


class ResNet(FeatureNet):
    """CIFAR ResNet (RepDistiller ``ResNet(depth, num_filters, 'basicblock')``).

    Attributes:
      depth: 6n + 2 (basic blocks) or 9n + 2 (bottleneck blocks).
      widths: (stem, stage1, stage2, stage3) channels, e.g. (16, 16, 32, 64).
      num_classes: classifier outputs.
      block: ``"basic"`` or ``"bottleneck"``.
    """
    depth: int
    widths: Sequence[int]
    num_classes: int = 100
    block: str = "basic"

    def setup(self):
        per = {"basic": 6, "bottleneck": 9}
        if self.block not in per:
            raise ValueError(f"ResNet block {self.block!r}; expected one of {tuple(per)}")
        if (self.depth - 2) % per[self.block] or self.depth < 2 + per[self.block]:
            raise ValueError(f"ResNet depth {self.depth} with {self.block} blocks must be "
                             f"{per[self.block]}n + 2, n >= 1")
        n = (self.depth - 2) // per[self.block]
        self.stem = ConvBN(self.widths[0])
        self.stages = [Stage(self.block, w, n, s)
                       for w, s in zip(self.widths[1:], (1, 2, 2))]
        self.head = Head(self.num_classes, "torch")


class ResNetV2(FeatureNet):
    """ResNet18 / 34 / 50 ... with a CIFAR stem (3x3 conv, no max-pool; RepDistiller
    ``resnetv2.py``). ``num_blocks`` per stage, ``block`` ``"basic"`` or ``"bottleneck"``."""
    num_blocks: Sequence[int]
    num_classes: int = 100
    block: str = "basic"

    def setup(self):
        self.stem = ConvBN(64)
        self.stages = [Stage(self.block, p, n, s) for p, n, s in
                       zip((64, 128, 256, 512), self.num_blocks, (1, 2, 2, 2))]
        self.head = Head(self.num_classes, "torch")


def resnet(depth: int, widths=(16, 16, 32, 64)):
    return lambda num_classes=100, **kw: ResNet(depth, tuple(widths), num_classes, **kw)


def resnet_v2(num_blocks, block: str):
    return lambda num_classes=100, **kw: ResNetV2(tuple(num_blocks), num_classes, block, **kw)


FACTORIES = {
    **{f"resnet{d}": resnet(d) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": resnet(8, (32, 64, 128, 256)),
    "resnet32x4": resnet(32, (32, 64, 128, 256)),
    "ResNet18": resnet_v2((2, 2, 2, 2), "basic"),
    "ResNet34": resnet_v2((3, 4, 6, 3), "basic"),
    "ResNet50": resnet_v2((3, 4, 6, 3), "bottleneck"),
}
