"""KGE training state, losses and the jitted epoch.

Training (graph.md §3): per positive (h, r, t), the head or the tail (probability 1/2
each, per example) is corrupted with ``num_negatives`` entities drawn uniformly (not
filtered against train: LibKGE's default; ``shared_negatives=True`` draws one set of
``num_negatives`` for the whole batch, which on CPU avoids a (B, n, d) gather and its
scatter-add gradient, ~10x cheaper), and the self-adversarial loss

  L_base = -1/2 [ w log sigma(f(pos)) + w sum_i p_i log sigma(-f(neg_i)) ],
  p = softmax(alpha f(neg)) (stop-gradient; alpha = 0: uniform mean),

with w the RotatE subsampling weight 1/sqrt(count(h, r) + count(t, r^-1)) (counts from 4,
normalised over the batch; ``subsampling=False``: w = 1). ``loss='1vsall'`` instead
scores every entity for the corrupted side and uses the softmax cross-entropy.
Optional N3 / L2 regularisation of the batch's embeddings. CSD (``jaxgraph.csd``) adds
lambda * L_KD against a stop-gradient copy of the model from an earlier epoch.

One jitted call trains one epoch (``lax.scan`` over its steps); every step's negatives
come from fold_in(key, step), so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxgraph import csd as csd_lib
from jaxgraph import kge_models

__all__ = ["LOSSES", "StepConfig", "KGEState", "subsampling_weights", "loss_fn",
           "self_adversarial_terms", "reg_norms", "train_epoch", "refresh_teacher",
           "init_state", "kd_weight", "refresh_due", "tree_norm"]

LOSSES = ("self_adversarial", "1vsall")


class StepConfig(NamedTuple):
    """Static settings of a training step (hashable: a jit static argument)."""
    backbone: kge_models.Backbone
    num_entities: int
    loss: str = "self_adversarial"
    num_negatives: int = 64
    shared_negatives: bool = False
    adv_temperature: float = 1.0
    regularization: float = 0.0
    reg_type: str = "n3"
    csd: csd_lib.CSDConfig = csd_lib.CSDConfig()


class KGEState(struct.PyTreeNode):
    """Training state (an immutable pytree; checkpoints save it whole).

    Attributes:
      step: () int32 optimizer updates done.
      epoch: () int32 epochs done.
      params: {"kge": backbone tables, "semantic": MLP params (CSD mlp confidence only)}.
      teacher: stop-gradient copy of params["kge"] (the CSD teacher; unused otherwise).
      opt_state: optax state.
    """
    step: jax.Array
    epoch: jax.Array
    params: Any
    teacher: Any
    opt_state: Any


def subsampling_weights(train, num_relations: int):
    """RotatE's 1/sqrt(count(h, r) + count(t, r^-1)) per training triple, counts from 4.

    Args:
      train: (N, 3) int triples.
    Returns:
      (N,) float32 weights.
    """
    t = np.asarray(train, np.int64)
    hr = t[:, 0] * num_relations + t[:, 1]
    tr = t[:, 2] * num_relations + t[:, 1]
    _, inv_hr, c_hr = np.unique(hr, return_inverse=True, return_counts=True)
    _, inv_tr, c_tr = np.unique(tr, return_inverse=True, return_counts=True)
    count = 4 + c_hr[inv_hr] - 1 + 4 + c_tr[inv_tr] - 1   # RotatE starts each count at 4
    return (1.0 / np.sqrt(count)).astype(np.float32)


def self_adversarial_terms(scores, temperature: float):
    """RotatE's self-adversarial negative-sampling loss per example.

    Args:
      scores: (B, 1 + n) scores, column 0 = the positive.
      temperature: alpha of the (stop-gradient) softmax weights of the negatives.

    Returns:
      (pos_term, neg_term), each (B,): -log sigmoid(s+) and
      -sum_j softmax(alpha s-)_j log sigmoid(-s-_j).
    """
    pos, negs = scores[:, 0], scores[:, 1:]
    p_adv = jax.lax.stop_gradient(jax.nn.softmax(temperature * negs, axis=1))
    return -jax.nn.log_sigmoid(pos), -jnp.sum(p_adv * jax.nn.log_sigmoid(-negs), axis=1)


def reg_norms(emb, reg_type: str):
    """(...,) sum_k |emb_k|^p of (..., d) rows: p = 3 (``n3``) or 2 (``l2``)."""
    power = 3 if reg_type == "n3" else 2
    return jnp.sum(jnp.abs(emb) ** power, -1)


def _semantic_features(teacher, h, r, t, score):
    return jnp.concatenate([teacher["entity"][h], teacher["relation"][r],
                            teacher["entity"][t], score[:, None]], axis=-1)


def loss_fn(params, teacher, batch, weights, key, kd_weight, cfg: StepConfig):
    """Loss of one batch.

    Args:
      params: {"kge": ..., ["semantic": ...]}.
      teacher: backbone tables of the CSD teacher (constants).
      batch: (B, 3) int32 positive triples.
      weights: (B,) float32 example weights.
      key: PRNG key (corruption side and negatives).
      kd_weight: () float, lambda (0: no distillation this epoch).
      cfg: static settings.

    Returns:
      (loss, aux dict of () metrics).
    """
    b, kp = cfg.backbone, params["kge"]
    h, r, t = batch[:, 0], batch[:, 1], batch[:, 2]
    k_mode, k_neg = jax.random.split(key)
    head = jax.random.bernoulli(k_mode, 0.5, h.shape)
    target = jnp.where(head, h, t)

    def query(p):
        return jnp.where(head[:, None], b.head_query(p, r, t), b.tail_query(p, h, r))

    w = weights / jnp.sum(weights)
    aux = {}
    if cfg.loss == "self_adversarial":
        if cfg.shared_negatives:   # one set of n negatives for the whole batch
            shared = jax.random.randint(k_neg, (cfg.num_negatives,), 0, cfg.num_entities,
                                        jnp.int32)
            neg = jnp.broadcast_to(shared, (h.shape[0], cfg.num_negatives))

            def scores_of(p):
                q = query(p)
                pos = b.match(q, p["entity"][target][:, None, :])
                return jnp.concatenate([pos, b.match_all(q, p["entity"][shared])], axis=1)
        else:
            neg = jax.random.randint(k_neg, (h.shape[0], cfg.num_negatives), 0,
                                     cfg.num_entities, jnp.int32)
            cands = jnp.concatenate([target[:, None], neg], axis=1)      # (B, 1 + n)
            scores_of = lambda p: b.match(query(p), p["entity"][cands])
        s = scores_of(kp)
        pos_term, neg_term = self_adversarial_terms(s, cfg.adv_temperature)
        base = 0.5 * (jnp.sum(w * pos_term) + jnp.sum(w * neg_term))
    elif cfg.loss == "1vsall":
        neg = None
        scores_of = lambda p: b.match_all(query(p), p["entity"])
        s = scores_of(kp)                                                # (B, V)
        base = jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(s, target))
    else:
        raise ValueError(f"unknown loss {cfg.loss!r}; valid: {', '.join(LOSSES)}")
    loss = base
    aux["base_loss"] = base
    if cfg.regularization > 0:
        embs = [kp["entity"][h], kp["relation"][r], kp["entity"][t]]
        reg = sum(jnp.mean(reg_norms(e, cfg.reg_type)) for e in embs)
        loss = loss + cfg.regularization * reg
        aux["reg"] = reg
    c = cfg.csd
    if c.enabled:
        s_t = jax.lax.stop_gradient(scores_of(teacher))
        if cfg.loss == "1vsall":   # column 0 = the positive, then the others (target -inf)
            pos_t = jnp.take_along_axis(s_t, target[:, None], 1)
            others = s_t.at[jnp.arange(s_t.shape[0]), target].set(-jnp.inf)
            cand_t = jnp.concatenate([pos_t, others], 1)
        else:
            cand_t = s_t
        logits = None
        if c.confidence == "mlp":
            module = csd_lib.SemanticModule(c.hidden)
            f_pos = jax.lax.stop_gradient(_semantic_features(teacher, h, r, t, cand_t[:, 0]))
            if neg is None:    # 1vsall: the teacher's best-scored wrong entity
                neg0 = jnp.argmax(cand_t[:, 1:], axis=1).astype(jnp.int32)
                s_neg0 = jnp.max(cand_t[:, 1:], axis=1)
            else:
                neg0, s_neg0 = neg[:, 0], cand_t[:, 1]
            hn, tn = jnp.where(head, neg0, h), jnp.where(head, t, neg0)
            f_neg = jax.lax.stop_gradient(_semantic_features(teacher, hn, r, tn, s_neg0))
            logits = module.apply({"params": params["semantic"]}, f_pos)
            logit_neg = module.apply({"params": params["semantic"]}, f_neg)
            sem = -jnp.mean(jax.nn.log_sigmoid(logits) + jax.nn.log_sigmoid(-logit_neg))
            loss = loss + sem
            aux["semantic_loss"] = sem
        conf = csd_lib.confidence(c.confidence, cand_t, tau=c.tau, logits=logits)
        if c.target == "scores":
            kd = csd_lib.kd_loss(s, s_t, conf, delta=c.delta)
        else:
            cat = lambda p: jnp.concatenate([p["entity"][h], p["relation"][r],
                                             p["entity"][t]], -1)
            kd = csd_lib.kd_loss(cat(kp), cat(teacher), conf, delta=c.delta)
        loss = loss + kd_weight * kd
        aux["kd_loss"] = kd
        aux["confidence"] = jnp.mean(conf)
    aux["loss"] = loss
    return loss, aux


@functools.partial(jax.jit, static_argnames=("cfg", "tx"), donate_argnums=(0,))
def train_epoch(state: KGEState, batches, weights, key, kd_weight, *, cfg: StepConfig,
                tx: optax.GradientTransformation):
    """One epoch: ``lax.scan`` of optimizer steps over ``batches``.

    Args:
      state: KGEState (donated).
      batches: (S, B, 3) int32 positive triples, one row per step.
      weights: (S, B) float32 example weights.
      key: the run's base key; step i uses fold_in(key, state.step + i).
      kd_weight: () float32 CSD lambda for this epoch (a traced value: no retrace).
      cfg, tx: static settings and optimizer.

    Returns:
      (new_state, metrics) with metrics a dict of (S,) arrays (loss, base_loss, [kd_loss,
      confidence, semantic_loss, reg], l2_grads, l2_params).
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(st, xs):
        batch, w = xs
        k = jax.random.fold_in(key, st.step)
        (_, aux), grads = grad_fn(st.params, st.teacher, batch, w, k, kd_weight, cfg)
        updates, opt_state = tx.update(grads, st.opt_state, st.params)
        params = optax.apply_updates(st.params, updates)
        teacher = st.teacher
        if cfg.csd.enabled and cfg.csd.ema > 0:
            e = cfg.csd.ema
            teacher = jax.tree.map(lambda a, p: e * a + (1 - e) * p, teacher, params["kge"])
        aux["l2_grads"] = tree_norm(grads)
        aux["l2_params"] = tree_norm(params)
        return st.replace(step=st.step + 1, params=params, teacher=teacher,
                          opt_state=opt_state), aux

    state, metrics = jax.lax.scan(step, state, (batches, weights))
    return state.replace(epoch=state.epoch + 1), metrics


def tree_norm(tree):
    """() global L2 norm of a pytree's leaves."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@jax.jit
def refresh_teacher(state: KGEState) -> KGEState:
    """Copies the current backbone tables into ``state.teacher`` (CSD teacher refresh)."""
    return state.replace(teacher=jax.tree.map(jnp.copy, state.params["kge"]))


def init_state(cfg: StepConfig, num_relations: int, tx, key, init_range: float = 0.0):
    """Fresh :class:`KGEState` (one jitted call: tables, semantic module, optimizer)."""
    return _init_state(cfg, int(num_relations), tx, key, float(init_range))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4))
def _init_state(cfg, num_relations, tx, key, init_range):
    k_model, k_sem = jax.random.split(key)
    kge = cfg.backbone.init_params(cfg.num_entities, num_relations, k_model, init_range)
    params = {"kge": kge}
    if cfg.csd.enabled and cfg.csd.confidence == "mlp":
        feat = 2 * cfg.backbone.dim + cfg.backbone.rel_dim + 1
        params["semantic"] = csd_lib.SemanticModule(cfg.csd.hidden).init(
            k_sem, jnp.zeros((1, feat), jnp.float32))["params"]
    return KGEState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                    params=params, teacher=jax.tree.map(jnp.copy, kge),
                    opt_state=tx.init(params))


def kd_weight(c: csd_lib.CSDConfig, epoch: int) -> float:
    """The CSD lambda of (0-based) ``epoch``: 0 when off or during warm-up."""
    return c.weight if c.enabled and epoch >= c.warmup_epochs else 0.0


def refresh_due(c: csd_lib.CSDConfig, epoch: int) -> bool:
    """Whether the teacher copy is refreshed before (0-based) ``epoch``: every
    ``refresh_epochs`` epochs after the first, unless the teacher is an EMA."""
    return c.enabled and c.ema == 0 and epoch >= 1 and epoch % c.refresh_epochs == 0
