"""Shared building blocks of the jaxkd model zoo: PyTorch-matching layers and the base class.

Every model is a Linen module over NHWC images whose ``__call__`` returns
``(logits (B, num_classes), feats)`` with ``feats = [stem map, stage maps..., pooled (B, D)]``
and whose ``forward_from(h, index)`` runs the layers after ``feats[index]`` (the
``distill_seq`` of the RepDistiller / CA-MKD code). Subclasses only define ``setup`` with
``self.stem`` (``(x, train) -> map``), ``self.stages`` (each ``(h, train) -> (out, preact)``)
and ``self.head`` (``(h, train) -> (logits, pooled)``).

PyTorch -> Flax details (reference: distillation.md §1):
  * BatchNorm: torch momentum 0.1 = Flax ``momentum=0.9``, eps 1e-5, scale 1 / bias 0.
    (Flax keeps the biased batch variance in ``batch_stats``; torch the unbiased one.)
  * Convs: explicit symmetric padding as in torch (never ``SAME``, which pads stride-2
    convs asymmetrically). Kaiming-normal fan-out (= N(0, sqrt(2 / (k k out))), the
    WRN / VGG / MobileNetV2 rule) or torch's default U(+-1/sqrt(fan_in)) (ShuffleNets).
  * Linear: torch's default U(+-1/sqrt(fan_in)) for weight and bias, or the model's own
    rule (zero bias; N(0, 0.01) weight).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

BN_MOMENTUM = 0.9   # = torch.nn.BatchNorm2d(momentum=0.1)
BN_EPS = 1e-5

# torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): N(0, 2 / (k*k*out)),
# untruncated; also the WRN / VGG / MobileNetV2 rule normal_(0, sqrt(2 / n)), n = k*k*out.
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# torch's default Conv2d / Linear weight init, kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)).
torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """torch.nn.BatchNorm2d equivalent: batch statistics in training, running ones in eval."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                        name=name)


def conv(features: int, kernel: int, stride: int = 1, *, padding: int | None = None,
         groups: int = 1, bias: bool = False, init: Callable = kaiming_fan_out,
         name: str | None = None) -> nn.Conv:
    """torch.nn.Conv2d(k, stride, padding=k // 2 unless given, groups, bias) in NHWC.

    A bias, when present, starts at zero (the zoo's models that have conv biases, VGG,
    zero them).
    """
    pad = kernel // 2 if padding is None else padding
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                   use_bias=bias, kernel_init=init, bias_init=nn.initializers.zeros,
                   name=name)


def _uniform(bound: float) -> Callable:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


class Linear(nn.Module):
    """torch.nn.Linear on (..., fan_in) inputs, params ``kernel`` (fan_in, out) and ``bias``.

    Attributes:
      features: output size.
      rule: init, ``"torch"`` (weight and bias U(+-1/sqrt(fan_in)), torch's default),
        ``"torch_zero_bias"`` (torch weight, zero bias; WRN) or ``"normal"``
        (weight N(0, 0.01), zero bias; VGG, MobileNetV2).
    """
    features: int
    rule: str = "torch"

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        if self.rule == "normal":
            k_init, b_init = nn.initializers.normal(0.01), nn.initializers.zeros
        elif self.rule in ("torch", "torch_zero_bias"):
            k_init = _uniform(bound)
            b_init = _uniform(bound) if self.rule == "torch" else nn.initializers.zeros
        else:
            raise ValueError(f"Linear init rule {self.rule!r}; expected 'torch', "
                             "'torch_zero_bias' or 'normal'")
        kernel = self.param("kernel", k_init, (fan_in, self.features), jnp.float32)
        bias = self.param("bias", b_init, (self.features,), jnp.float32)
        kernel, bias = kernel.astype(x.dtype), bias.astype(x.dtype)
        return x @ kernel + bias


class Head(nn.Module):
    """[optional 1x1 conv + BN + ReLU] -> global average pool -> Linear.

    ``(h (B, H, W, C), train) -> (logits (B, num_classes), pooled (B, D))``. The global mean
    equals the reference models' fixed ``AvgPool2d`` on 32x32 inputs and also serves
    other input sizes (28x28 Fashion-MNIST).
    """
    num_classes: int
    linear_init: str = "torch"
    conv_features: int = 0            # 0: no conv before pooling
    conv_init: Callable = kaiming_fan_out

    @nn.compact
    def __call__(self, h, train: bool = False):
        if self.conv_features:
            h = conv(self.conv_features, 1, init=self.conv_init, name="conv")(h)
            h = nn.relu(batch_norm(train, name="bn")(h))
        pooled = jnp.mean(h, axis=(1, 2))
        return Linear(self.num_classes, self.linear_init, name="fc")(pooled), pooled


def check_image(x, model: str):
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{model} expects images (B, H, W, C) (NHWC); got shape "
                         f"{getattr(x, 'shape', type(x))}")


class FeatureNet(nn.Module):
    """Base class: stem -> stages -> head, with feature taps and ``forward_from``.

    Subclasses define ``setup`` assigning ``self.stem``, ``self.stages`` (a list) and
    ``self.head``; ``self.stem(x, train) -> map``, ``stage(h, train) -> (out, preact)``,
    ``self.head(h, train) -> (logits, pooled)``.
    """

    def __call__(self, x, train: bool = False, preact: bool = False):
        """Classify NHWC images and return the feature taps.

        Args:
          x: (B, H, W, C) float images (32x32x3 CIFAR or 28x28x1 Fashion-MNIST, ...).
          train: batch statistics for BatchNorm (and update ``batch_stats``, which must
            then be mutable) instead of the running ones.
          preact: the stage maps before their final ReLU (RepDistiller ``preact=True``).
        Returns:
          ``(logits (B, num_classes), feats)``, ``feats = [f0 stem map, f1..fL stage maps
          (B, H_i, W_i, C_i), pooled (B, D)]``; ``feats[-2]`` is the last spatial map.
        """
        check_image(x, type(self).__name__)
        h = self.stem(x, train)
        feats = [h]
        for stage in self.stages:
            h, pre = stage(h, train)
            feats.append(pre if preact else h)
        logits, pooled = self.head(h, train)
        feats.append(pooled)
        return logits, feats

    def forward_from(self, h, index: int, train: bool = False):
        """Logits of a map shaped like ``feats[index]`` run through the remaining layers.

        ``index`` in [0, len(feats) - 2] (negative counts from the end, as for lists);
        ``len(feats) - 2`` applies only the head (pooling and classifier). Used as
        ``model.apply(variables, h, index, method="forward_from")``.
        """
        n = len(self.stages) + 2
        i = index + n if index < 0 else index
        if not 0 <= i <= n - 2:
            raise ValueError(f"forward_from index {index} is out of range for "
                             f"{type(self).__name__}: feats has {n} entries, valid indices "
                             f"are 0..{n - 2} (or {-n}..-2)")
        for stage in self.stages[i:]:
            h, _ = stage(h, train)
        return self.head(h, train)[0]


def count_params(params: Any) -> int:
    """Number of scalars in a parameter pytree (arrays or ``jax.ShapeDtypeStruct`` leaves).

    Given the whole ``variables`` dict, counts only its ``"params"`` collection
    (BatchNorm running statistics are not parameters).
    """
    if hasattr(params, "keys") and "params" in params:
        params = params["params"]
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
