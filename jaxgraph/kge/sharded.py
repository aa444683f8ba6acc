"""Entity-sharded KGE: tables split along the entity axis over a ``model`` mesh axis.

The entity table (V, d), its Adam moments and its gradient live as M row blocks, one per
device of the ``model`` axis (M = ``mesh.shape["model"]``), so the largest table that fits
is the sum of the devices' memory, not one device's. V is padded to Vp = M * ceil(V / M)
with zero rows that are masked everywhere: they are never sampled as negatives (ids are
drawn in [0, V)), never a 1-vs-all class, never a ranking candidate; their gradient is 0
and Adam leaves them at 0. Relation tables (R, rel_dim) and TuckER's core are replicated:
they are small (R is 11 / 237 for WN18RR / FB15k-237) and every query needs them. An
optional ``data`` axis splits each batch of triples (and of ranking queries); the tables
are replicated along it.

Design: explicit ``jax.shard_map`` with collectives, not jit with NamedSharding
annotations. With annotations alone, XLA's partitioner decides how ``entity[ids]`` and
``q @ entity.T`` are split, and for a gather along the sharded axis it may all-gather the
table, which is the very memory this module exists to avoid, with nothing in the program
saying so. Under ``shard_map`` every cross-device step is written out and none moves a
table block:

  lookup     rows of given ids: each device takes the ids it owns from its block
             (zeros elsewhere), one ``psum`` over ``model`` of (n, d) rows; its gradient
             is a scatter-add into the owner's block (one gather per step for the
             batch's heads, tails and negatives, so one block-sized gradient buffer);
  negatives  each device scores the candidates it owns against the (replicated) query,
             ``psum`` of (B, 1 + n) scores (no candidate row travels);
  1-vs-all   (B, Vp / M) local scores; softmax cross-entropy from ``pmax`` of the local
             maxima and ``psum`` of the local sums of exp;
  ranking    filtered rank = 1 + ``psum`` over devices of each block's count of
             better-scored (non-filtered, non-padded) entities; the true entity's score
             comes from its owner by ``psum``. Per batch B * (d + 3) numbers cross
             devices, whatever V is.

Gradients are taken outside the ``shard_map`` (``jax.grad`` of the mapped loss), so its
transpose adds the replicated tables' gradients over devices; the optimizer update
(Adam: elementwise) runs under ``jit`` on the sharded arrays, with no communication.

Randomness equals the unsharded step's (:func:`jaxgraph.kge.step.loss_fn`): every device
draws the same batch-wide corruption sides and negatives from the same key and takes its
rows, and the padded initial table's first V rows equal the unsharded one (JAX's
partitionable threefry, the default, draws element i of any shape from counter i).
Sharded and unsharded runs agree to float32 rounding (sums in another order).

Several processes (:mod:`jaxinfra.distributed`): :func:`make_mesh` takes as many devices
of each process, process-major, so the ``model`` axis (and the table) spans them and the
collectives above cross processes; every process passes the same host arrays (batches:
:func:`place_batches`; ranking queries) and each device receives only its rows; ranks
come back replicated, so every process computes the same metrics.

Not supported with sharding: CSD self-distillation (``csd.enabled``); the trainer
refuses it. A sharded state has an empty teacher (no second copy of the tables).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxgraph import ranking
from jaxgraph.kge import step as kge_step
from jaxinfra import mesh as mesh_lib

__all__ = ["DATA", "MODEL", "make_mesh", "padded_entities", "param_specs", "shardings",
           "shard_params", "unshard_params", "init_params", "init_state", "place_batches",
           "candidate_scores", "all_scores", "loss_fn", "train_epoch", "batch_ranks",
           "rank_batch", "evaluate", "bytes_per_device"]

DATA, MODEL = "data", "model"


def make_mesh(model: int = 1, data: int = 1, devices=None) -> jax.sharding.Mesh:
    """A (``data``, ``model``) mesh over ``data * model`` devices: the first ones of
    ``devices``, by default :func:`jaxinfra.mesh.mesh_devices` (one process: its first
    devices; several: as many of each process's devices, process-major, so the
    ``model`` axis, and with it the entity table, spans the processes).

    Raises:
      ValueError: a size below 1, more devices asked for than there are, or (several
        processes) a count that does not split evenly over them.
    """
    for name, n in ((MODEL, model), (DATA, data)):
        if int(n) < 1:
            raise ValueError(f"mesh {name} size {n} is invalid; accepted: an int >= 1")
    n = int(model) * int(data)
    available = jax.device_count() if devices is None else len(devices)
    if n > available:
        raise ValueError(f"mesh data={data} x model={model} needs {n} devices; "
                         f"accepted: at most {available} (the devices present)")
    devices = mesh_lib.mesh_devices(n) if devices is None else list(devices)[:n]
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh((int(data), int(model)), (DATA, MODEL), axis_types=(auto, auto),
                         devices=devices)


def padded_entities(num_entities: int, model: int) -> int:
    """Vp: ``num_entities`` rounded up to a multiple of ``model`` (rows per device Vp/M)."""
    return -(-int(num_entities) // int(model)) * int(model)


def _is_entity(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and last.key == "entity"


def param_specs(tree):
    """PartitionSpecs of a tree holding entity tables: a leaf under a key ``entity``
    (params, gradients, Adam moments) is split by rows over ``model``; all else is
    replicated."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: P(MODEL, None) if _is_entity(path) and np.ndim(x) == 2 else P(),
        tree)


def shardings(mesh, tree):
    """NamedShardings of :func:`param_specs`."""
    return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(tree),
                        is_leaf=lambda s: isinstance(s, P))


def _model_size(mesh) -> int:
    return int(mesh.shape[MODEL])


def shard_params(params, mesh):
    """An unsharded backbone parameter dict (``entity`` (V, d), ...) padded with zero rows
    to Vp and placed on ``mesh`` (it passes through host memory: for tests and for
    tables that fit one device; :func:`init_params` never builds the whole table)."""
    ent = np.asarray(params["entity"])
    vp = padded_entities(ent.shape[0], _model_size(mesh))
    out = dict(params, entity=np.pad(ent, ((0, vp - ent.shape[0]), (0, 0))))
    return jax.device_put(out, shardings(mesh, out))


def unshard_params(params, num_entities: int):
    """The unsharded dict (entity rows ``[:num_entities]``), as numpy arrays on the host."""
    out = {k: np.asarray(v) for k, v in params.items()}
    out["entity"] = out["entity"][:int(num_entities)]
    return out


def _masked_init(backbone, vp: int, num_entities: int, num_relations: int, init_range):
    def init(key):
        p = backbone.init_params(vp, num_relations, key, init_range)
        real = jnp.arange(vp)[:, None] < num_entities
        return dict(p, entity=jnp.where(real, p["entity"], 0.0))
    return init


def init_params(backbone, num_entities: int, num_relations: int, key, mesh,
                init_range: float = 0.0):
    """Backbone tables created sharded (each device draws only its rows).

    Returns:
      dict like ``backbone.init_params`` with ``entity`` (Vp, d) split over ``model``;
      rows < V equal the unsharded initialisation, rows >= V are 0.
    """
    return _jitted_init(backbone, int(num_entities), int(num_relations), float(init_range),
                        mesh)(key)


@functools.lru_cache(maxsize=32)
def _jitted_init(backbone, num_entities, num_relations, init_range, mesh):
    init = _masked_init(backbone, padded_entities(num_entities, _model_size(mesh)),
                        num_entities, num_relations, init_range)
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return jax.jit(init, out_shardings=shardings(mesh, jax.eval_shape(init, key)))


def init_state(cfg: kge_step.StepConfig, num_relations: int, tx, key, mesh,
               init_range: float = 0.0) -> kge_step.KGEState:
    """A fresh sharded :class:`jaxgraph.kge.step.KGEState` (same tables as
    :func:`jaxgraph.kge.step.init_state` with the same key, padded; empty teacher;
    optimizer state split like the tables).

    Raises:
      ValueError: CSD enabled (not supported with sharded tables).
    """
    _check_cfg(cfg)
    return _jitted_state(cfg, int(num_relations), tx, float(init_range), mesh)(key)


@functools.lru_cache(maxsize=32)
def _jitted_state(cfg, num_relations, tx, init_range, mesh):
    init = _masked_init(cfg.backbone, padded_entities(cfg.num_entities, _model_size(mesh)),
                        cfg.num_entities, num_relations, init_range)

    def state(key):
        k_model, _ = jax.random.split(key)            # as jaxgraph.kge.step.init_state
        params = {"kge": init(k_model)}
        return kge_step.KGEState(step=jnp.zeros((), jnp.int32),
                                 epoch=jnp.zeros((), jnp.int32), params=params, teacher={},
                                 opt_state=tx.init(params))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return jax.jit(state, out_shardings=shardings(mesh, jax.eval_shape(state, key)))


def place_batches(mesh, *arrays):
    """(S, B, ...) host arrays of an epoch's batches placed with B split over ``data`` (and
    replicated over ``model``). Every process passes the same arrays; each device
    receives only its rows."""
    sharding = NamedSharding(mesh, P(None, DATA))
    return tuple(jax.device_put(np.asarray(a), sharding) for a in arrays)


def _check_cfg(cfg):
    if cfg.csd.enabled:
        raise ValueError("csd.enabled=True is not supported with entity-sharded tables; "
                         "accepted: csd off, or mesh model=1 and data=1")
    if cfg.loss not in kge_step.LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; valid: {', '.join(kge_step.LOSSES)}")


# ---- inside shard_map: one device's view (entity block ``ent`` (Vl, d)) -------------

def _offset(ent):
    """() global id of the block's first row."""
    return jax.lax.axis_index(MODEL) * ent.shape[0]


def _owned(ent, ids):
    """(local ids clipped into the block, mask of the ids this block owns)."""
    loc = ids - _offset(ent)
    own = (loc >= 0) & (loc < ent.shape[0])
    return jnp.clip(loc, 0, ent.shape[0] - 1), own


def _local_rows(ent, ids):
    """This block's rows of global ``ids`` (...,): ((..., d) rows, 0 where another block
    owns the id; (...,) mask of the owned ids). One gather per step keeps the backward
    pass to one scatter-add into a block-sized gradient."""
    loc, own = _owned(ent, ids)
    return jnp.where(own[..., None], ent[loc], 0.0), own


def _owner_sum(values, own):
    """psum over ``model`` of ``values`` where this block owns them, else 0."""
    return jax.lax.psum(jnp.where(own, values, 0.0), MODEL)


def _queries(backbone, kp, triples, head, local=None):
    """Queries of (b, 3) triples: head side where ``head`` (b,) (or a Python bool for the
    whole batch), else tail side.

    Args:
      local: (2b, d) this block's rows of [heads; tails] (:func:`_local_rows`; None:
        gathered here). The whole rows are their ``psum`` over ``model``.

    Returns:
      (q (b, d), target ids (b,), head rows (b, d), tail rows (b, d)).
    """
    h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
    b = triples.shape[0]
    if local is None:
        local, _ = _local_rows(kp["entity"], jnp.concatenate([h, t]))
    rows = jax.lax.psum(local, MODEL)
    pb = dict(kp, entity=rows)                     # the batch's rows, ids 0 .. 2b - 1
    hi, ti = jnp.arange(b), b + jnp.arange(b)
    if isinstance(head, bool):
        q = backbone.head_query(pb, r, ti) if head else backbone.tail_query(pb, hi, r)
        return q, h if head else t, rows[:b], rows[b:]
    q = jnp.where(head[:, None], backbone.head_query(pb, r, ti),
                  backbone.tail_query(pb, hi, r))
    return q, jnp.where(head, h, t), rows[:b], rows[b:]


def _candidate_scores(backbone, q, rows, own):
    """(b, C) scores of per-query candidates, each computed on its owner.

    Args:
      q: (b, d) queries; rows, own: (b, C, d) / (b, C) :func:`_local_rows` of the ids.
    """
    return _owner_sum(backbone.match(q, rows), own)


def _shared_scores(backbone, q, rows, own):
    """(b, n) scores of one candidate set shared by all queries (rows (n, d), own (n,))."""
    return _owner_sum(backbone.match_all(q, rows), own[None, :])


def _valid_columns(ent, num_entities: int):
    """(Vl,) mask of the block's real (not padded) rows."""
    return _offset(ent) + jnp.arange(ent.shape[0]) < num_entities


def _cross_entropy(scores, valid, target_local, own):
    """(b,) softmax cross-entropy over all blocks' columns (padded ones excluded).

    Args:
      scores: (b, Vl) this block's scores; valid: (Vl,) real columns;
      target_local, own: the target's clipped local column and whether it is here.
    """
    s = jnp.where(valid[None, :], scores, -jnp.inf)
    m = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(s, axis=1)), MODEL)
    shifted = s - m[:, None]
    lse = jnp.log(jax.lax.psum(jnp.sum(jnp.exp(shifted), axis=1), MODEL))
    label = _owner_sum(jnp.take_along_axis(shifted, target_local[:, None], 1)[:, 0], own)
    return lse - label


def _data_rows(x, rows: int):
    """The ``rows`` rows of batch-wide ``x`` that belong to this ``data`` shard."""
    return jax.lax.dynamic_slice_in_dim(x, jax.lax.axis_index(DATA) * rows, rows)


def _local_loss(kp, batch, weights, key, *, cfg: kge_step.StepConfig, batch_size: int):
    """Loss of one device's share (the math of :func:`jaxgraph.kge.step.loss_fn`)."""
    b, ent = cfg.backbone, kp["entity"]
    nb = batch.shape[0]
    k_mode, k_neg = jax.random.split(key)
    head = _data_rows(jax.random.bernoulli(k_mode, 0.5, (batch_size,)), nb)
    h, t = batch[:, 0], batch[:, 2]
    if cfg.loss != "self_adversarial":
        cands = jnp.zeros((0,), jnp.int32)
    elif cfg.shared_negatives:     # one set of n negatives for the whole batch
        cands = jax.random.randint(k_neg, (cfg.num_negatives,), 0, cfg.num_entities,
                                   jnp.int32)
    else:                          # [target, n negatives] per query
        neg = _data_rows(jax.random.randint(k_neg, (batch_size, cfg.num_negatives), 0,
                                            cfg.num_entities, jnp.int32), nb)
        cands = jnp.concatenate([jnp.where(head, h, t)[:, None], neg], 1)
    local, own = _local_rows(ent, jnp.concatenate([h, t, cands.ravel()]))
    q, target, rows_h, rows_t = _queries(b, kp, batch, head, local[:2 * nb])
    c_rows = local[2 * nb:].reshape(cands.shape + local.shape[-1:])
    c_own = own[2 * nb:].reshape(cands.shape)
    w = weights / jax.lax.psum(jnp.sum(weights), DATA)

    def batch_sum(x):
        return jax.lax.psum(jnp.sum(x), DATA)

    if cfg.loss == "self_adversarial":
        if cfg.shared_negatives:
            pos = b.match(q, jnp.where(head[:, None], rows_h, rows_t)[:, None, :])
            s = jnp.concatenate([pos, _shared_scores(b, q, c_rows, c_own)], axis=1)
        else:
            s = _candidate_scores(b, q, c_rows, c_own)
        pos_term, neg_term = kge_step.self_adversarial_terms(s, cfg.adv_temperature)
        base = 0.5 * (batch_sum(w * pos_term) + batch_sum(w * neg_term))
    else:   # 1vsall
        loc, own = _owned(ent, target)
        ce = _cross_entropy(b.match_all(q, ent), _valid_columns(ent, cfg.num_entities),
                            loc, own)
        base = batch_sum(w * ce)
    aux = {"base_loss": base}
    loss = base
    if cfg.regularization > 0:
        embs = [rows_h, kp["relation"][batch[:, 1]], rows_t]
        reg = sum(batch_sum(kge_step.reg_norms(e, cfg.reg_type)) / batch_size for e in embs)
        loss = loss + cfg.regularization * reg
        aux["reg"] = reg
    aux["loss"] = loss
    return loss, aux


def _local_ranks(kp, queries, mask_rows, mask_cols, *, backbone, side: str, chunk: int,
                 num_entities: int):
    """(b, 3) filtered ranks of one device's queries (see :func:`batch_ranks`)."""
    ent = kp["entity"]
    nb = queries.shape[0]
    q, target, _, _ = _queries(backbone, kp, queries, side == "head")
    scores = ranking.score_all(backbone, q, ent, chunk)                 # (b, Vl)
    scores = jnp.where(_valid_columns(ent, num_entities)[None, :], scores, -jnp.inf)
    loc, own = _owned(ent, target)
    s_true = _owner_sum(jnp.take_along_axis(scores, loc[:, None], 1)[:, 0], own)[:, None]
    rows = mask_rows - jax.lax.axis_index(DATA) * nb
    cols, col_own = _owned(ent, mask_cols)
    keep = col_own & (rows >= 0) & (rows < nb)
    scores = scores.at[jnp.where(keep, rows, nb), cols].set(-jnp.inf, mode="drop")
    gt = jax.lax.psum(jnp.sum(scores > s_true, axis=1), MODEL)
    ge = jax.lax.psum(jnp.sum(scores >= s_true, axis=1), MODEL)        # includes the target
    optimistic = 1.0 + gt
    pessimistic = ge.astype(jnp.float32)
    return jnp.stack([optimistic, pessimistic, 0.5 * (optimistic + pessimistic)], 1)


# ---- global functions (sharded arrays in and out) ---------------------------------

def _mapped(fn, mesh, in_specs, out_specs):
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)


@functools.partial(jax.jit, static_argnames=("backbone", "mesh"))
def candidate_scores(params, triples, head, cands, *, backbone, mesh):
    """(B, C) scores of candidate entities (negative sampling) on the sharded tables.

    Args:
      params: sharded backbone tables (:func:`shard_params` / :func:`init_params`).
      triples: (B, 3) int32; head: (B,) bool, True: score candidate heads for (?, r, t),
        else candidate tails for (h, r, ?).
      cands: (B, C) int32 global entity ids < V.
    """
    def body(kp, tr, hd, c):
        q, _, _, _ = _queries(backbone, kp, tr, hd)
        return _candidate_scores(backbone, q, *_local_rows(kp["entity"], c))
    return _mapped(body, mesh, (param_specs(params), P(DATA), P(DATA), P(DATA)),
                   P(DATA))(params, triples, head, cands)


@functools.partial(jax.jit, static_argnames=("backbone", "mesh", "chunk"))
def all_scores(params, triples, head, *, backbone, mesh, chunk: int = 4096):
    """(B, Vp) 1-vs-all scores, columns split over ``model`` (each device computes and
    holds only its (B, Vp / M) block; padded columns hold the zero rows' scores)."""
    def body(kp, tr, hd):
        q, _, _, _ = _queries(backbone, kp, tr, hd)
        return ranking.score_all(backbone, q, kp["entity"], chunk)
    return _mapped(body, mesh, (param_specs(params), P(DATA), P(DATA)),
                   P(DATA, MODEL))(params, triples, head)


def loss_fn(params, batch, weights, key, cfg: kge_step.StepConfig, mesh):
    """Loss of one batch on sharded tables, as :func:`jaxgraph.kge.step.loss_fn` (CSD
    off): ``params`` {"kge": sharded tables}; batch (B, 3), weights (B,) split over
    ``data``. Returns (loss, aux); differentiable (``jax.grad`` gives sharded gradients).
    """
    _check_cfg(cfg)
    kp = params["kge"]
    body = functools.partial(_local_loss, cfg=cfg, batch_size=batch.shape[0])
    return _mapped(body, mesh, (param_specs(kp), P(DATA), P(DATA), P()),
                   (P(), P()))(kp, batch, weights, key)


@functools.partial(jax.jit, static_argnames=("cfg", "tx", "mesh"), donate_argnums=(0,))
def train_epoch(state: kge_step.KGEState, batches, weights, key, kd_weight, *,
                cfg: kge_step.StepConfig, tx: optax.GradientTransformation, mesh):
    """:func:`jaxgraph.kge.step.train_epoch` on sharded tables (same arguments, plus the
    mesh; ``kd_weight`` is unused: CSD is off). Every step's state keeps the shardings of
    :func:`shardings` (tables and Adam moments split by entity rows)."""
    del kd_weight
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    keep = shardings(mesh, state)

    def step(st, xs):
        batch, w = xs
        k = jax.random.fold_in(key, st.step)
        (_, aux), grads = grad_fn(st.params, batch, w, k, cfg, mesh)
        updates, opt_state = tx.update(grads, st.opt_state, st.params)
        params = optax.apply_updates(st.params, updates)
        aux["l2_grads"] = kge_step.tree_norm(grads)
        aux["l2_params"] = kge_step.tree_norm(params)
        new = st.replace(step=st.step + 1, params=params, opt_state=opt_state)
        return jax.lax.with_sharding_constraint(new, keep), aux

    state, metrics = jax.lax.scan(step, state, (batches, weights))
    return state.replace(epoch=state.epoch + 1), metrics


@functools.partial(jax.jit, static_argnames=("backbone", "side", "chunk", "mesh",
                                             "num_entities"))
def batch_ranks(params, queries, mask_rows, mask_cols, *, backbone, side: str, mesh,
                num_entities: int, chunk: int = 4096):
    """:func:`jaxgraph.ranking.batch_ranks` on sharded tables; the table is never
    gathered.

    Each device scores its (B / D, Vp / M) block (entity ``chunk`` s for the distance
    models), sets its filter pairs and padded rows to -inf and counts the entities
    scored above / at least as high as the true one (its score comes from the owner by
    ``psum``); ranks are 1 + ``psum`` of the counts.

    Args:
      params: sharded tables; queries: (B, 3) int32, B divisible by the ``data`` size;
      mask_rows, mask_cols: (P,) filter pairs (row in batch, global entity id); row = B:
        padding.
      num_entities: V (rows >= V are padding).

    Returns:
      (B, 3) float32 (optimistic, pessimistic, realistic) ranks, replicated on every
      device (B * 3 numbers gathered over ``data``), so every process reads them all.
    """
    body = functools.partial(_local_ranks, backbone=backbone, side=side, chunk=chunk,
                             num_entities=int(num_entities))
    ranks = _mapped(body, mesh, (param_specs(params), P(DATA), P(), P()),
                    P(DATA))(params, queries, mask_rows, mask_cols)
    return jax.lax.with_sharding_constraint(ranks, NamedSharding(mesh, P()))


def rank_batch(backbone, mesh, num_entities: int, chunk: int = 4096):
    """The ``rank_batch`` of :func:`jaxgraph.ranking.filtered_ranks` for sharded tables."""
    return functools.partial(batch_ranks, backbone=backbone, mesh=mesh,
                             num_entities=int(num_entities), chunk=int(chunk))


def evaluate(backbone, params, triples, filter_triples, num_relations: int, *, mesh,
             num_entities: int, batch_size: int = 256, chunk: int = 4096) -> dict:
    """:func:`jaxgraph.ranking.evaluate` (filtered, realistic ranks, both sides) on
    sharded tables.

    Raises:
      ValueError: ``batch_size`` not a multiple of the ``data`` size.
    """
    data = int(mesh.shape[DATA])
    if batch_size % data:
        raise ValueError(f"evaluation batch_size={batch_size} does not split over the "
                         f"data axis of {data} devices; accepted: a multiple of {data}")
    return ranking.evaluate(backbone, params, triples, filter_triples, num_relations,
                            batch_size=batch_size, chunk=chunk,
                            rank_batch=rank_batch(backbone, mesh, num_entities, chunk))


def bytes_per_device(tree) -> dict:
    """{device id: bytes of ``tree``'s array shards held there} (replicated arrays count
    on every device)."""
    out: dict = {}
    for leaf in jax.tree.leaves(tree):
        for s in getattr(leaf, "addressable_shards", ()):
            out[s.device.id] = out.get(s.device.id, 0) + s.data.nbytes
    return out
