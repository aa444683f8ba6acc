"""A tiny two-stage CNN with the jaxkd model interface, for fast trainer/method tests.

``apply(v, x, train)`` -> (logits, [f0 stem, f1, f2, pooled]); ``forward_from(h, index)``
runs the stages after ``index`` and the head. Compiles in a fraction of a ResNet's time.
"""
import types

import flax.linen as nn
import jax


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
