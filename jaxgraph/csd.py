"""CSD-like self-semantic distillation for KGE (graph.md §2.1: a RECONSTRUCTION).

The CIKM 2024 paper (Liu et al., "Confidence-aware Self-Semantic Distillation on
Knowledge Graph Embedding") has no public code or equations. What follows implements the
reconstruction of graph.md §2.1; every unknown is a switch (``CSDConfig``), and reports
call it "CSD-like".

One model, two roles: the teacher is a stop-gradient copy theta_{k-1} of the model's own
embedding tables from an earlier iteration (refreshed every ``refresh_epochs`` epochs, or
an EMA). Per batch, teacher and student score the same candidates [positive, negatives]:

  s_S = f_theta_k  (B, 1 + n)      s_T = f_theta_{k-1}  (B, 1 + n)   (no gradient)
  c   = confidence in [0, 1]^B from the teacher (``confidence``):
          margin   sigmoid(tau * (s_T[:, 0] - max_j s_T[:, 1:]))
          softmax  softmax(s_T / tau)[:, 0]
          mlp      sigmoid(g(features)): the "semantic module" g, an MLP on the teacher's
                   embeddings of (h, r, t) and its score, trained with a logistic loss
                   to tell the positive from a negative (its own loss term)
          none     1
  L_KD = mean_B( c * mean_j Huber_delta(s_S[:, j] - s_T[:, j]) )         target=scores
       or mean_B( c * mean_k Huber_delta(e_S - e_T) ) over the batch's h, r, t rows
                                                                        target=embeddings
  L    = L_base + lambda * L_KD     (lambda = 0 before ``warmup_epochs``, and off = baseline)
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

__all__ = ["CSDConfig", "SemanticModule", "confidence", "kd_loss", "CONFIDENCES",
           "TARGETS"]

CONFIDENCES = ("margin", "softmax", "mlp", "none")
TARGETS = ("scores", "embeddings")


class CSDConfig(NamedTuple):
    """Static CSD settings (hashable).

    Attributes:
      enabled: False = the baseline (no teacher, no KD term).
      weight: lambda, the KD loss weight.
      delta: Huber delta.
      tau: temperature of the margin / softmax confidences.
      confidence: one of CONFIDENCES.
      target: one of TARGETS (what is distilled).
      refresh_epochs: the teacher copy is refreshed every this many epochs (0 with
        ema > 0: an EMA teacher updated every step).
      ema: EMA decay of the teacher (0: frozen copies).
      warmup_epochs: epochs of plain training before the KD term starts.
      hidden: width of the semantic module (confidence='mlp').
    """
    enabled: bool = False
    weight: float = 1.0
    delta: float = 1.0
    tau: float = 1.0
    confidence: str = "margin"
    target: str = "scores"
    refresh_epochs: int = 1
    ema: float = 0.0
    warmup_epochs: int = 1
    hidden: int = 32

    def validate(self) -> "CSDConfig":
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"unknown csd.confidence {self.confidence!r}; valid: "
                             f"{', '.join(CONFIDENCES)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown csd.target {self.target!r}; valid: "
                             f"{', '.join(TARGETS)}")
        if self.enabled and self.refresh_epochs < 1 and self.ema <= 0:
            raise ValueError("csd needs refresh_epochs >= 1 or ema > 0")
        if not 0 <= self.ema < 1:
            raise ValueError(f"csd.ema must be in [0, 1), got {self.ema}")
        return self


class SemanticModule(nn.Module):
    """The confidence-estimating "semantic module": features (..., F) -> logit (...)."""
    hidden: int = 32

    @nn.compact
    def __call__(self, features):
        x = nn.relu(nn.Dense(self.hidden)(features))
        return nn.Dense(1)(x)[..., 0]


def confidence(kind: str, teacher_scores, *, tau: float = 1.0, logits=None):
    """Per-example confidence in [0, 1] (stop-gradient).

    Args:
      kind: one of CONFIDENCES.
      teacher_scores: (B, 1 + n) teacher scores, column 0 = the positive.
      tau: temperature.
      logits: (B,) semantic-module logits of the positives (kind='mlp').

    Returns:
      (B,) float confidence.
    """
    s = jax.lax.stop_gradient(teacher_scores)
    if kind == "margin":
        c = jax.nn.sigmoid(tau * (s[:, 0] - jnp.max(s[:, 1:], axis=1)))
    elif kind == "softmax":
        c = jax.nn.softmax(s / tau, axis=1)[:, 0]
    elif kind == "mlp":
        c = jax.nn.sigmoid(logits)
    elif kind == "none":
        c = jnp.ones(s.shape[:1], s.dtype)
    else:
        raise ValueError(f"unknown confidence {kind!r}; valid: {', '.join(CONFIDENCES)}")
    return jax.lax.stop_gradient(c)


def kd_loss(student, teacher, conf, *, delta: float = 1.0):
    """mean_B( conf * mean_rest Huber_delta(student - teacher) ).

    Args:
      student: (B, ...) student values (scores or embeddings).
      teacher: same shape; treated as constants.
      conf: (B,) weights.
      delta: Huber delta.

    Returns:
      () loss; exactly 0 when student == teacher.
    """
    teacher = jax.lax.stop_gradient(teacher)
    per = optax.losses.huber_loss(student, teacher, delta=delta)
    per = jnp.mean(per.reshape(per.shape[0], -1), axis=1)
    return jnp.mean(conf * per)
