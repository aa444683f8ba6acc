"""KGE backbones: TransE, DistMult, ComplEx, RotatE, SimplE and TuckER (graph.md §3).

A backbone is a :class:`Backbone`: a record of pure functions (optax style), built by one
factory per model (``transe(dim, gamma)``, ...) and found by name in :data:`BACKBONES` or
through :func:`get_backbone`. Every backbone is
written as a *query* and a *match*, so that one code path scores a triple, a row of
sampled negatives or all entities:

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

Parameters are a dict: ``entity`` (num_entities, dim), ``relation`` (num_relations,
rel_dim) and, for TuckER, ``core`` (dim, dim, dim).
"""
from __future__ import annotations

import functools
import hashlib
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

# The factories (transe, distmult, complex, ...) are reached through BACKBONES or as
# attributes: ``complex`` would shadow the builtin in a star import.
__all__ = ["Backbone", "BACKBONES", "get_backbone"]

_EPS = 1e-12  # inside RotatE's modulus: keeps sqrt differentiable at 0


class Backbone(NamedTuple):
    """A KGE scoring function (hashable: a jit static argument).

    Factories are cached, so equal ``(name, dim, gamma)`` give the very same record and
    jitted functions taking it never retrace.

    Attributes:
      name: key in :data:`BACKBONES`.
      dim: real parameters per entity.
      gamma: margin of TransE / RotatE (unused by the bilinear models).
      rel_dim: width of a relation row.
      bilinear: scores are inner products (``match_all`` is one matmul).
      init_params: ``init_params(num_entities, num_relations, key, init_range=0.0) ->
        params``; tables U(-a, a) with a = ``init_range`` (<= 0: RotatE's emb_range for
        TransE / RotatE, 0.1 otherwise); the TuckER core is U(-1, 1) / dim.
      tail_query: ``tail_query(params, h, r) -> (..., dim)`` for (...,) int ids.
      head_query: ``head_query(params, r, t) -> (..., dim)``.
      match: ``match(q, cand)``: q (..., d) against (..., C, d) -> (..., C).
      match_all: ``match_all(q, table)``: q (B, d) against every row of (C, d) -> (B, C).
      score_triples: ``score_triples(params, h, r, t)``: f for broadcastable int arrays.
    """
    name: str
    dim: int
    gamma: float
    rel_dim: int
    bilinear: bool
    init_params: Callable
    tail_query: Callable
    head_query: Callable
    match: Callable
    match_all: Callable
    score_triples: Callable


def _halves(x):
    k = x.shape[-1] // 2
    return x[..., :k], x[..., k:]


def _complex_product(a, b):
    """[re | im] of a * b for [re | im] stored a, b."""
    (ar, ai), (br, bi) = _halves(a), _halves(b)
    return jnp.concatenate([ar * br - ai * bi, ar * bi + ai * br], -1)


def _l1_distance(q, cand):
    return jnp.sum(jnp.abs(q - cand), -1)


def _modulus_distance(q, cand):
    """Sum of complex moduli; halves are split before broadcasting (4x faster on CPU than
    slicing the broadcast difference)."""
    (qr, qi), (cr, ci) = _halves(q), _halves(cand)
    re, im = qr - cr, qi - ci
    return jnp.sum(jnp.sqrt(re * re + im * im + _EPS), -1)


def _table_key(key, i: int):
    """The key of the i-th (1-based) table: the fold-in Flax Linen used for a module's
    i-th parameter (the tables used to live in a Linen module), so initialisations are
    unchanged."""
    salt = int.from_bytes(hashlib.sha1(i.to_bytes(1, "big")).digest()[:4], "big")
    return jax.random.fold_in(key, jnp.uint32(salt))


def _uniform(key, shape, a):
    return jax.random.uniform(key, shape, jnp.float32, -a, a)


def _make(name: str, dim: int, gamma: float, *, tail_query, head_query, rel_dim=None,
          distance=None, default_range: float = 0.1, core: bool = False) -> Backbone:
    """The record of one backbone: bilinear when ``distance`` is None (scores are
    q . e), else ``gamma - distance(q, e)``."""
    rel_dim = dim if rel_dim is None else rel_dim
    if distance is None:
        def match(q, cand):
            return jnp.einsum("...d,...cd->...c", q, cand)

        def match_all(q, table):
            return q @ table.T
    else:
        def match(q, cand):
            return gamma - distance(q[..., None, :], cand)

        def match_all(q, table):
            return gamma - distance(q[:, None, :], table[None, :, :])

    def init_params(num_entities: int, num_relations: int, key, init_range: float = 0.0):
        a = init_range if init_range > 0 else default_range
        params = {"entity": _uniform(_table_key(key, 1), (num_entities, dim), a),
                  "relation": _uniform(_table_key(key, 2), (num_relations, rel_dim), a)}
        if core:
            params["core"] = _uniform(_table_key(key, 3), (dim, dim, dim), 1.0 / dim)
        return params

    def score_triples(params, h, r, t):
        h, r, t = jnp.broadcast_arrays(h, r, t)
        return match(tail_query(params, h, r), params["entity"][t][..., None, :])[..., 0]

    return Backbone(name, dim, gamma, rel_dim, distance is None, init_params, tail_query,
                    head_query, match, match_all, score_triples)


def _factory(even: bool):
    """Registers a ``build(dim, gamma) -> Backbone`` as a cached factory that validates
    ``dim`` (``even``: the model splits it in halves)."""
    def wrap(build):
        cached = functools.lru_cache(maxsize=None)(build)

        @functools.wraps(build)
        def factory(dim: int, gamma: float = 6.0) -> Backbone:
            if dim < 1 or (even and dim % 2):
                raise ValueError(f"{build.__name__} needs {'an even ' if even else 'a '}"
                                 f"dim >= {2 if even else 1}, got {dim}")
            return cached(int(dim), float(gamma))
        return factory
    return wrap


@_factory(even=False)
def transe(dim, gamma):
    """TransE: gamma - ||h + r - t||_1."""
    return _make("transe", dim, gamma, distance=_l1_distance, default_range=(gamma + 2) / dim,
                 tail_query=lambda p, h, r: p["entity"][h] + p["relation"][r],
                 head_query=lambda p, r, t: p["entity"][t] - p["relation"][r])


@_factory(even=False)
def distmult(dim, gamma):
    """DistMult: sum_k h_k r_k t_k."""
    return _make("distmult", dim, gamma,
                 tail_query=lambda p, h, r: p["entity"][h] * p["relation"][r],
                 head_query=lambda p, r, t: p["relation"][r] * p["entity"][t])


def _complex_head_query(p, r, t):
    """r * conj(t) stored [re | im], so that Re(<q, h>) = Re(h r conj(t))."""
    (rr, ri), (tr, ti) = _halves(p["relation"][r]), _halves(p["entity"][t])
    return jnp.concatenate([rr * tr + ri * ti, rr * ti - ri * tr], -1)


@_factory(even=True)
def complex(dim, gamma):
    """ComplEx: Re(sum_k h_k r_k conj(t_k)), dim/2 complex components."""
    return _make("complex", dim, gamma, head_query=_complex_head_query,
                 tail_query=lambda p, h, r: _complex_product(p["entity"][h], p["relation"][r]))


@_factory(even=True)
def rotate(dim, gamma):
    """RotatE: gamma - sum_k |h_k e^{i phi_k} - t_k|, phi = r_raw * pi / emb_range."""
    emb_range = (gamma + 2.0) / (dim // 2)

    def rotation(p, r):
        phase = p["relation"][r] * (math.pi / emb_range)
        return jnp.cos(phase), jnp.sin(phase)

    def tail_query(p, h, r):
        (hr, hi), (cr, ci) = _halves(p["entity"][h]), rotation(p, r)
        return jnp.concatenate([hr * cr - hi * ci, hr * ci + hi * cr], -1)

    def head_query(p, r, t):
        (cr, ci), (tr, ti) = rotation(p, r), _halves(p["entity"][t])   # t * conj(rotation)
        return jnp.concatenate([tr * cr + ti * ci, ti * cr - tr * ci], -1)

    return _make("rotate", dim, gamma, rel_dim=dim // 2, distance=_modulus_distance,
                 default_range=emb_range, tail_query=tail_query, head_query=head_query)


@_factory(even=True)
def simple(dim, gamma):
    """SimplE: (<h_H, r, t_T> + <t_H, r_inv, h_T>) / 2; entity layout [H | T]."""
    def tail_query(p, h, r):
        (h_head, h_tail), (rf, rinv) = _halves(p["entity"][h]), _halves(p["relation"][r])
        return 0.5 * jnp.concatenate([rinv * h_tail, h_head * rf], -1)

    def head_query(p, r, t):
        (rf, rinv), (t_head, t_tail) = _halves(p["relation"][r]), _halves(p["entity"][t])
        return 0.5 * jnp.concatenate([rf * t_tail, t_head * rinv], -1)

    return _make("simple", dim, gamma, tail_query=tail_query, head_query=head_query)


@_factory(even=False)
def tucker(dim, gamma):
    """TuckER: sum_ijk W_ijk h_i r_j t_k with a (dim, dim, dim) core."""
    return _make("tucker", dim, gamma, core=True,
                 tail_query=lambda p, h, r: jnp.einsum(
                     "ijk,...i,...j->...k", p["core"], p["entity"][h], p["relation"][r]),
                 head_query=lambda p, r, t: jnp.einsum(
                     "ijk,...j,...k->...i", p["core"], p["relation"][r], p["entity"][t]))


BACKBONES = {"transe": transe, "distmult": distmult, "complex": complex, "rotate": rotate,
             "simple": simple, "tucker": tucker}


def get_backbone(name: str, dim: int, gamma: float = 6.0) -> Backbone:
    """The :class:`Backbone` ``name`` (case and spaces ignored) of ``dim`` and ``gamma``.

    Raises:
      ValueError: unknown name (lists the valid ones) or an odd ``dim`` for a model that
        splits it in halves.
    """
    key = name.strip().lower()
    if key not in BACKBONES:
        raise ValueError(f"unknown KGE model {name!r}; valid: {', '.join(BACKBONES)}")
    return BACKBONES[key](dim, gamma)
