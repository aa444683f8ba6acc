"""KGE backbones: TransE, DistMult, ComplEx, RotatE, SimplE and TuckER (graph.md §3).

Every backbone is written as a *query* and a *match*, so that one code path scores
a triple, a row of sampled negatives or all entities:

  - ``tail_query(params, h, r)`` -> q of shape (..., d): what a tail must match;
  - ``head_query(params, r, t)`` -> q of shape (..., d): what a head must match;
  - ``match(q, cand)``: q (..., d) against candidates (..., C, d) -> scores (..., C);
  - ``match_all(q, table)``: q (B, d) against a shared (C, d) table -> (B, C) (a matmul
    for the bilinear models).

f(h, r, t) = match(tail_query(h, r), e_t) = match(head_query(r, t), e_h), higher = more
plausible (the head form agrees with the tail form up to rounding; tests check it).

``dim`` is the number of REAL parameters per entity for every backbone, so models of one
``dim`` have equally large entity tables: ComplEx / RotatE use dim/2 complex components
(stored [real | imaginary]); SimplE uses dim/2 for the head role and dim/2 for the tail
role; TuckER uses relation dimension ``dim`` and a (dim, dim, dim) core.

Scores (``gamma`` = margin, ``|.|`` complex modulus):
  TransE    gamma - ||h + r - t||_1
  DistMult  sum_k h_k r_k t_k
  ComplEx   Re(sum_k h_k r_k conj(t_k))
  RotatE    gamma - sum_k |h_k e^{i phi_k} - t_k|,  phi = r_raw * pi / emb_range,
            emb_range = (gamma + 2) / (dim / 2)   (RotatE code convention)
  SimplE    (<h_H, r, t_T> + <t_H, r_inv, h_T>) / 2
  TuckER    sum_ijk W_ijk h_i r_j t_k
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["BACKBONES", "Backbone", "KGEModel", "get_backbone", "score_triples"]

_EPS = 1e-12  # inside RotatE's modulus: keeps sqrt differentiable at 0


class Backbone(NamedTuple):
    """Static description of a scoring function (hashable: usable as a jit static arg)."""
    name: str
    dim: int                # real parameters per entity
    gamma: float = 6.0      # margin of TransE / RotatE (unused by the bilinear models)

    @property
    def rel_dim(self) -> int:
        return {"rotate": self.dim // 2}.get(self.name, self.dim)

    @property
    def emb_range(self) -> float:
        """RotatE's (gamma + 2) / (complex dimension)."""
        return (self.gamma + 2.0) / (self.dim // 2 if self.name in ("rotate", "complex")
                                     else self.dim)

    @property
    def bilinear(self) -> bool:
        return self.name in ("distmult", "complex", "simple", "tucker")


BACKBONES = ("transe", "distmult", "complex", "rotate", "simple", "tucker")


def get_backbone(name: str, dim: int, gamma: float = 6.0) -> Backbone:
    """Validated :class:`Backbone`.

    Raises:
      ValueError: unknown name (lists the valid ones) or an odd ``dim`` for a model that
        splits it in halves.
    """
    key = name.strip().lower()
    if key not in BACKBONES:
        raise ValueError(f"unknown KGE model {name!r}; valid: {', '.join(BACKBONES)}")
    if dim < 1 or (key in ("complex", "rotate", "simple") and dim % 2):
        raise ValueError(f"{key} needs an even dim >= 2 (dim < 1 is invalid for all), got {dim}")
    return Backbone(key, int(dim), float(gamma))


def _halves(x):
    k = x.shape[-1] // 2
    return x[..., :k], x[..., k:]


def _rotation(b: Backbone, r_raw):
    phase = r_raw * (math.pi / b.emb_range)
    return jnp.cos(phase), jnp.sin(phase)


def tail_query(b: Backbone, params, h, r):
    """Query for tails: (...,) int ids -> (..., dim)."""
    eh, er = params["entity"][h], params["relation"][r]
    if b.name == "transe":
        return eh + er
    if b.name == "distmult":
        return eh * er
    if b.name == "complex":
        (hr, hi), (rr, ri) = _halves(eh), _halves(er)
        return jnp.concatenate([hr * rr - hi * ri, hr * ri + hi * rr], -1)
    if b.name == "rotate":
        (hr, hi), (cr, ci) = _halves(eh), _rotation(b, er)
        return jnp.concatenate([hr * cr - hi * ci, hr * ci + hi * cr], -1)
    if b.name == "simple":
        (h_head, h_tail), (rf, rinv) = _halves(eh), _halves(er)
        # f = (<h_H r, t_T> + <r_inv h_T, t_H>) / 2; entity layout [H | T]
        return 0.5 * jnp.concatenate([rinv * h_tail, h_head * rf], -1)
    if b.name == "tucker":
        return jnp.einsum("ijk,...i,...j->...k", params["core"], eh, er)
    raise AssertionError(b.name)


def head_query(b: Backbone, params, r, t):
    """Query for heads: (...,) int ids -> (..., dim)."""
    er, et = params["relation"][r], params["entity"][t]
    if b.name == "transe":
        return et - er
    if b.name == "distmult":
        return er * et
    if b.name == "complex":
        (rr, ri), (tr, ti) = _halves(er), _halves(et)
        return jnp.concatenate([rr * tr + ri * ti, rr * ti - ri * tr], -1)
    if b.name == "rotate":
        (cr, ci), (tr, ti) = _rotation(b, er), _halves(et)   # t * conj(rotation)
        return jnp.concatenate([tr * cr + ti * ci, ti * cr - tr * ci], -1)
    if b.name == "simple":
        (rf, rinv), (t_head, t_tail) = _halves(er), _halves(et)
        return 0.5 * jnp.concatenate([rf * t_tail, t_head * rinv], -1)
    if b.name == "tucker":
        return jnp.einsum("ijk,...j,...k->...i", params["core"], er, et)
    raise AssertionError(b.name)


def _distance(b: Backbone, q, cand):
    """Broadcast distance over the last axis: L1 (TransE) or the sum of complex moduli
    (RotatE). Halves are split before broadcasting (4x faster on CPU than slicing the
    broadcast difference)."""
    if b.name == "transe":
        return jnp.sum(jnp.abs(q - cand), -1)
    (qr, qi), (cr, ci) = _halves(q), _halves(cand)
    re, im = qr - cr, qi - ci
    return jnp.sum(jnp.sqrt(re * re + im * im + _EPS), -1)


def match(b: Backbone, q, cand):
    """Scores of queries q (..., d) against their own candidates (..., C, d) -> (..., C)."""
    if b.bilinear:
        return jnp.einsum("...d,...cd->...c", q, cand)
    return b.gamma - _distance(b, q[..., None, :], cand)


def match_all(b: Backbone, q, table):
    """Scores of queries q (B, d) against every row of ``table`` (C, d) -> (B, C)."""
    if b.bilinear:
        return q @ table.T
    return b.gamma - _distance(b, q[:, None, :], table[None, :, :])


def score_triples(b: Backbone, params, h, r, t):
    """f(h, r, t) for broadcastable int arrays -> scores of the broadcast shape."""
    h, r, t = jnp.broadcast_arrays(h, r, t)
    return match(b, tail_query(b, params, h, r), params["entity"][t][..., None, :])[..., 0]


class KGEModel(nn.Module):
    """Flax Linen holder of the embedding tables; ``__call__`` scores triples.

    Params: ``entity`` (num_entities, dim), ``relation`` (num_relations, rel_dim) and, for
    TuckER, ``core`` (dim, dim, dim). Initialisation: U(-init_range, init_range)
    (``init_range`` <= 0: RotatE's emb_range for TransE/RotatE, 0.1 otherwise); the TuckER
    core is U(-1, 1) / dim.
    """
    backbone: Backbone
    num_entities: int
    num_relations: int
    init_range: float = 0.0

    def setup(self):
        b = self.backbone
        a = self.init_range if self.init_range > 0 else (
            b.emb_range if b.name in ("transe", "rotate") else 0.1)
        uni = lambda lo, hi: (lambda key, shape: jax.random.uniform(
            key, shape, jnp.float32, lo, hi))
        self.entity = self.param("entity", uni(-a, a), (self.num_entities, b.dim))
        self.relation = self.param("relation", uni(-a, a), (self.num_relations, b.rel_dim))
        if b.name == "tucker":
            self.core = self.param("core", uni(-1.0 / b.dim, 1.0 / b.dim),
                                   (b.dim, b.dim, b.dim))

    def __call__(self, h, r, t):
        """Scores of (h, r, t) int id arrays (broadcast) -> float32 scores."""
        params = {"entity": self.entity, "relation": self.relation}
        if self.backbone.name == "tucker":
            params["core"] = self.core
        return score_triples(self.backbone, params, h, r, t)


def init_params(b: Backbone, num_entities: int, num_relations: int, key,
                init_range: float = 0.0):
    """The parameter dict of :class:`KGEModel` (``entity``, ``relation`` [, ``core``])."""
    model = KGEModel(b, num_entities, num_relations, init_range)
    z = jnp.zeros((1,), jnp.int32)
    return model.init(key, z, z, z)["params"]
