"""The method interface shared by every distillation method module.

A method is a :class:`Method`: a loss ``loss(opts, ctx) -> (scalar, metrics)`` over a
:class:`Context` (student and frozen-teacher outputs of one batch), an optional trainable
connector (a Flax module applied to the student's features) and its default
hyperparameters. The trainer (:mod:`jaxkd.train`) builds the context; methods never see
parameters, optimizers or data.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from jaxkd import losses

__all__ = ["Context", "Method", "ce_plus_kd"]


class Context(NamedTuple):
    """One training batch seen by a method's loss.

    Attributes:
      labels: (B,) int32.
      s_logits: (B, C) student logits (differentiated).
      s_feats: the student's features [f0 stem, f1..fL stage maps (B, H, W, D),
        pooled (B, D)].
      t_logits: (K, B, C) logits of the K frozen teachers (gradient stopped), or None.
      t_feats: the teachers' features, each with a leading K axis, or None.
      conn: the connector's output (method-specific pytree), or None.
      tail: ``tail(h, index) -> (K, B, C)``: (K, B, ...) maps shaped like the teachers'
        ``feats[index]`` pushed through teacher k's remaining layers (frozen parameters,
        gradients flow into ``h``).
      epoch: () int32, the 1-indexed epoch of this step (traced).
    """
    labels: Any
    s_logits: Any
    s_feats: Any
    t_logits: Any
    t_feats: Any
    conn: Any
    tail: Callable
    epoch: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
    """A registered distillation method (hashed by identity: a jit static argument).

    Attributes:
      name: registry name.
      teachers: 0 (no teacher), 1 (one teacher) or -1 (K >= 2 same-architecture teachers).
      loss: ``loss(opts, ctx) -> (() loss, {name: () metric})``; ``opts`` is the frozen
        ``config.method``.
      defaults: default hyperparameters (the ``config.method`` fields besides ``name``).
      make_connector: ``make_connector(opts, s_shapes, t_shapes, num_teachers)`` -> a
        Flax module called as ``module(s_feats, train)``, or None; shapes are the
        per-example feature shapes (no batch or teacher axis); None when the method has
        no trainable connector.
    """
    name: str
    teachers: int
    loss: Callable
    defaults: dict
    make_connector: Callable | None = None
    doc: str = ""


def ce_plus_kd(opts, ctx: Context, kd):
    """``opts.ce_weight * CE(s_logits, labels) + opts.kd_weight * kd`` and its metrics
    {"ce", "kd"}: the total of every logit-only method (kd, aver, ebkd, aekd) and the
    base of fitnet_mkd."""
    ce = jnp.mean(losses.cross_entropy(ctx.s_logits, ctx.labels))
    return opts.ce_weight * ce + opts.kd_weight * kd, {"ce": ce, "kd": kd}
