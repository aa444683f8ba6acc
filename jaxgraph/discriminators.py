"""OAD's graph-convolutional discriminators (graph.md §5.2).

One discriminator per student; each is a GCN on the *same graph* that maps hidden node
features (N, D) to one logit per node, so it judges a node's representation together with
its neighbourhood. Probabilities are ``sigmoid(logit)``.

Reference-code quirk: its last layer has a ReLU, so ``sigmoid(ReLU(x)) >= 0.5`` and the
"fake" target 0 is unreachable (the fake loss is >= log 2). ``final_relu=True`` reproduces
it; the default ``False`` is the clean version.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgraph import gnn

__all__ = ["Discriminator", "make_discriminator", "bce_real", "bce_fake"]


class Discriminator(nn.Module):
    """GCNConv layers of widths ``features`` (the last must be 1), ReLU between them.

    Attributes:
      features: layer widths, e.g. (1,) for a GCN student or (d_dim, 1) for GAT / SAGE.
      final_relu: ReLU after the last layer too (reference code; logits >= 0).

    ``__call__(graph, h)``: h (N, D) -> logits (N,).
    """
    features: Sequence[int]
    final_relu: bool = False

    @nn.compact
    def __call__(self, graph, h):
        if not self.features or self.features[-1] != 1:
            raise ValueError(f"discriminator widths must end in 1, got {self.features}")
        for i, f in enumerate(self.features):
            h = gnn.GCNConv(f)(graph, h)
            if i < len(self.features) - 1 or self.final_relu:
                h = nn.relu(h)
        return h[:, 0]


def make_discriminator(student_arch: str, *, d_dim: int = 16,
                       final_relu: bool = False) -> Discriminator:
    """The reference code's discriminator for a student: GCN -> one GraphConv(D -> 1);
    GAT / SAGE -> GraphConv(D -> d_dim) -> GraphConv(d_dim -> 1)."""
    arch = str(student_arch).lower()
    if arch not in gnn.ARCHS:
        raise ValueError(f"unknown student architecture {student_arch!r}; valid: "
                         f"{', '.join(gnn.ARCHS)}")
    features = (1,) if arch == "gcn" else (int(d_dim), 1)
    return Discriminator(features=features, final_relu=final_relu)


def bce_real(logits):
    """Per-node BCE(sigmoid(logits), 1) = softplus(-logits)."""
    return jax.nn.softplus(-logits)


def bce_fake(logits):
    """Per-node BCE(sigmoid(logits), 0) = softplus(logits)."""
    return jax.nn.softplus(logits)


def masked_mean(values, mask):
    """Mean of (N,) ``values`` over nodes with ``mask`` 1 (padding excluded)."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
