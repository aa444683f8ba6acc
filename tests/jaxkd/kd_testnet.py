"""A tiny two-stage CNN with the jaxkd model interface, for fast trainer/method tests, and
the tiny training config that uses it (:func:`tiny_config`).

``apply(v, x, train)`` -> (logits, [f0 stem, f1, f2, pooled]); ``forward_from(h, index)``
runs the stages after ``index`` and the head. Compiles in a fraction of a ResNet's time.
"""
import types

import flax.linen as nn
import jax

from configs.kd import common


class TinyNet(nn.Module):
    width: int = 4
    num_classes: int = 10

    def setup(self):
        self.stem = nn.Conv(self.width, (3, 3))
        self.c1 = nn.Conv(self.width, (3, 3))
        self.c2 = nn.Conv(2 * self.width, (3, 3), strides=2)
        self.bn = nn.BatchNorm(momentum=0.9)
        self.head = nn.Dense(self.num_classes)

    def _stage(self, i, h, train):
        if i == 0:
            return nn.relu(self.bn(self.c1(h), use_running_average=not train))
        return nn.relu(self.c2(h))

    def __call__(self, x, train: bool = False):
        f0 = nn.relu(self.stem(x))
        f1 = self._stage(0, f0, train)
        f2 = self._stage(1, f1, train)
        pooled = f2.mean((1, 2))
        return self.head(pooled), [f0, f1, f2, pooled]

    def forward_from(self, h, index, train: bool = False):
        for i in range(index, 2):
            h = self._stage(i, h, train)
        return self.head(h.mean((1, 2)))


MODELS = {"tiny4": 4, "tiny8": 8}


def create(name, num_classes=100):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return TinyNet(MODELS[name], num_classes)


def count_params(params):
    return sum(x.size for x in jax.tree.leaves(params))


ZOO = types.SimpleNamespace(MODELS=tuple(MODELS), create=create, count_params=count_params)


def tiny_config(method="ce", **overrides):
    """configs/kd/common.py's ``tiny`` recipe for ``method`` on the 4-channel TinyNet
    (student and teachers "tiny4"; swap ``jaxkd.train._models`` for :data:`ZOO`): 8x8
    digits, batch 16, 2 epochs, constant lr 0.2, crops shifted by <= 1 pixel, a log
    every 2 updates, the test split in batches of 40, one device. ``overrides`` set
    top-level fields (e.g. ``num_epochs=3``, ``num_devices=0``)."""
    c = common.make(method, "tiny", num_teachers=2 if method == "camkd" else 1)
    c.student = "tiny4"
    c.teacher.model = "tiny4"
    c.batch_size = 16
    c.num_epochs = 2
    c.optim.milestones = ()
    c.optim.lr = 0.2
    c.augment.pad = 1                       # 8x8 digits: crops shifted by <= 1 pixel
    c.log_every = 2
    c.eval_batch_size = 40
    c.num_devices = 1
    for k, v in overrides.items():
        c[k] = v
    return c
