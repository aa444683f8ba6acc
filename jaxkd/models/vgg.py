"""VGG with BatchNorm for CIFAR as in RepDistiller / CA-MKD ``models/vgg.py``.

Five blocks of conv3x3 (with bias) + BN + ReLU (widths from the config), 2x2 max-pools
between blocks 0-1, 1-2, 2-3 (and 3-4 only for 64x64 inputs, RepDistiller's ``h == 64``,
detected here as a block-3 map 8 pixels high), global average pool, Linear(512, classes).
Feature taps ``[f0..f4 block outputs after ReLU, pooled]`` (32/16/8/4/4 on 32x32 inputs);
``preact=True`` gives f1..f4 before their last ReLU.
Init: convs N(0, sqrt(2 / (k k out))) with zero bias; BN 1 / 0; Linear N(0, 0.01), zero bias.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from jaxkd.models._layers import FeatureNet, Head, batch_norm, conv

CFGS = {
    "S": ((64,), (128,), (256,), (512,), (512,)),                       # vgg8
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),           # vgg11
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),    # vgg13
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),  # vgg16
    "E": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),   # vgg19
}


class VGGBlock(nn.Module):
    """[max-pool 2x2] then conv3x3 + BN + ReLU per width; returns (relu(out), out)."""
    widths: Sequence[int]
    pool: str = "none"     # "none" | "always" | "if8" (only when the input map is 8 high)

    @nn.compact
    def __call__(self, h, train: bool = False):
        if self.pool == "always" or (self.pool == "if8" and h.shape[1] == 8):
            h = nn.max_pool(h, (2, 2), (2, 2))
        pre = h
        for i, w in enumerate(self.widths):
            if i:
                h = nn.relu(pre)
            pre = batch_norm(train)(conv(w, 3, bias=True)(h))
        return nn.relu(pre), pre


class VGG(FeatureNet):
    """VGG-BN with config ``cfg`` (a key of :data:`CFGS`)."""
    cfg: str
    num_classes: int = 100

    def setup(self):
        blocks = CFGS[self.cfg]
        block0 = VGGBlock(blocks[0])
        self.stem = lambda x, train: block0(x, train)[0]
        self.block0 = block0
        pools = ("always", "always", "always", "if8")
        self.stages = [VGGBlock(b, p) for b, p in zip(blocks[1:], pools)]
        self.head = Head(self.num_classes, "normal")


def vgg(cfg: str):
    return lambda num_classes=100, **kw: VGG(cfg, num_classes, **kw)


FACTORIES = {"vgg8": vgg("S"), "vgg11": vgg("A"), "vgg13": vgg("B"), "vgg16": vgg("D"),
             "vgg19": vgg("E")}
