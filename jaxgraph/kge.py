"""Trains and evaluates KGE backbones, optionally with CSD-like self-distillation.

    python -m jaxgraph.kge --config=configs/kge/kge.py:rotate,wn18rr,dim=32 --workdir=W
    python -m jaxgraph.kge --config=configs/kge/rotate_wn18rr_csd.py --workdir=W

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

One jitted call trains one epoch (``lax.scan`` over its steps); an epoch visits a
permutation of the training triples drawn from (seed, epoch), dropping the last partial
batch, and every step's negatives come from fold_in(key, step), so a resumed run repeats
an uninterrupted one exactly.

Writes to ``workdir``: ``checkpoints/<epoch>/`` (Orbax items ``state`` and ``meta``),
``metrics.jsonl`` (per epoch ``train/*``, validation ``valid/*``, final ``test/*``),
``tb/``, and ``results.json`` (final filtered metrics, timings, settings).
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxdiff import runlog
from jaxgraph import csd as csd_lib
from jaxgraph import kg_data, kge_models, ranking

__all__ = ["StepConfig", "KGEState", "loss_fn", "train_epoch", "make_optimizer",
           "init_state", "refresh_teacher", "kd_weight",
           "subsampling_weights", "train_and_evaluate", "load_checkpoint", "LOSSES"]

LOSSES = ("self_adversarial", "1vsall")
OPTIMIZERS = ("adam", "adagrad")


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
    """Training state (an immutable pytree; Orbax saves it whole).

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
        return jnp.where(head[:, None], kge_models.head_query(b, p, r, t),
                         kge_models.tail_query(b, p, h, r))

    w = weights / jnp.sum(weights)
    aux = {}
    if cfg.loss == "self_adversarial":
        if cfg.shared_negatives:   # one set of n negatives for the whole batch
            shared = jax.random.randint(k_neg, (cfg.num_negatives,), 0, cfg.num_entities,
                                        jnp.int32)
            neg = jnp.broadcast_to(shared, (h.shape[0], cfg.num_negatives))

            def scores_of(p):
                q = query(p)
                pos = kge_models.match(b, q, p["entity"][target][:, None, :])
                return jnp.concatenate([pos, kge_models.match_all(b, q, p["entity"][shared])],
                                       axis=1)
        else:
            neg = jax.random.randint(k_neg, (h.shape[0], cfg.num_negatives), 0,
                                     cfg.num_entities, jnp.int32)
            cands = jnp.concatenate([target[:, None], neg], axis=1)      # (B, 1 + n)
            scores_of = lambda p: kge_models.match(b, query(p), p["entity"][cands])
        s = scores_of(kp)
        pos, negs = s[:, 0], s[:, 1:]
        p_adv = jax.lax.stop_gradient(jax.nn.softmax(cfg.adv_temperature * negs, axis=1))
        neg_term = -jnp.sum(p_adv * jax.nn.log_sigmoid(-negs), axis=1)
        pos_term = -jax.nn.log_sigmoid(pos)
        base = 0.5 * (jnp.sum(w * pos_term) + jnp.sum(w * neg_term))
    elif cfg.loss == "1vsall":
        neg = None
        scores_of = lambda p: kge_models.match_all(b, query(p), p["entity"])
        s = scores_of(kp)                                                # (B, V)
        base = jnp.sum(w * optax.softmax_cross_entropy_with_integer_labels(s, target))
    else:
        raise ValueError(f"unknown loss {cfg.loss!r}; valid: {', '.join(LOSSES)}")
    loss = base
    aux["base_loss"] = base
    if cfg.regularization > 0:
        embs = [kp["entity"][h], kp["relation"][r], kp["entity"][t]]
        power = 3 if cfg.reg_type == "n3" else 2
        reg = sum(jnp.mean(jnp.sum(jnp.abs(e) ** power, -1)) for e in embs)
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
        aux["l2_grads"] = _norm(grads)
        aux["l2_params"] = _norm(params)
        return st.replace(step=st.step + 1, params=params, teacher=teacher,
                          opt_state=opt_state), aux

    state, metrics = jax.lax.scan(step, state, (batches, weights))
    return state.replace(epoch=state.epoch + 1), metrics


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@jax.jit
def refresh_teacher(state: KGEState) -> KGEState:
    """Copies the current backbone tables into ``state.teacher`` (CSD teacher refresh)."""
    return state.replace(teacher=jax.tree.map(jnp.copy, state.params["kge"]))


def make_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam or Adagrad (``config.train.optimizer``), constant lr or RotatE's step decay
    (lr / 10 after ``decay_fraction`` of the run: ``schedule='step'``).

    Cached on the settings, so runs with equal settings share one compiled epoch."""
    tc = config.train
    return _optimizer(str(tc.optimizer), float(tc.lr), str(tc.schedule),
                      int(tc.epochs) * steps_per_epoch,
                      float(tc.get("decay_fraction", 0.5)))


@functools.lru_cache(maxsize=32)
def _optimizer(name: str, lr: float, schedule: str, total: int, decay_fraction: float):
    if schedule == "constant":
        rate = lr
    elif schedule == "step":
        rate = optax.piecewise_constant_schedule(
            lr, {max(1, int(total * decay_fraction)): 0.1})
    else:
        raise ValueError(f"unknown train.schedule {schedule!r}; valid: constant, step")
    if name == "adam":
        return optax.adam(rate)
    if name == "adagrad":
        return optax.adagrad(rate)
    raise ValueError(f"unknown train.optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def csd_config(config) -> csd_lib.CSDConfig:
    c = config.csd
    return csd_lib.CSDConfig(
        enabled=bool(c.enabled), weight=float(c.weight), delta=float(c.delta),
        tau=float(c.tau), confidence=str(c.confidence), target=str(c.target),
        refresh_epochs=int(c.refresh_epochs), ema=float(c.ema),
        warmup_epochs=int(c.warmup_epochs), hidden=int(c.hidden)).validate()


def step_config(config, num_entities: int) -> StepConfig:
    m, tc = config.model, config.train
    if tc.loss not in LOSSES:
        raise ValueError(f"unknown train.loss {tc.loss!r}; valid: {', '.join(LOSSES)}")
    if tc.reg_type not in ("n3", "l2"):
        raise ValueError(f"unknown train.reg_type {tc.reg_type!r}; valid: n3, l2")
    return StepConfig(
        backbone=kge_models.get_backbone(m.name, int(m.dim), float(m.gamma)),
        num_entities=int(num_entities), loss=str(tc.loss),
        num_negatives=int(tc.num_negatives),
        shared_negatives=bool(tc.shared_negatives), adv_temperature=float(tc.adv_temperature),
        regularization=float(tc.regularization), reg_type=str(tc.reg_type),
        csd=csd_config(config))


def load_data(config) -> kg_data.KGData:
    if config.dataset == "synthetic":
        s = config.get("synthetic", None)
        kw = dict(s) if s is not None else {}
        return kg_data.synthetic_kg(**kw)
    return kg_data.load_kg(config.dataset, data_dir=config.data_dir or None,
                           vocabulary=config.vocabulary)


def init_state(cfg: StepConfig, num_relations: int, tx, key, init_range: float = 0.0):
    """Fresh :class:`KGEState` (one jitted call: tables, semantic module, optimizer)."""
    return _init_state(cfg, int(num_relations), tx, key, float(init_range))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4))
def _init_state(cfg, num_relations, tx, key, init_range):
    k_model, k_sem = jax.random.split(key)
    kge = kge_models.init_params(cfg.backbone, cfg.num_entities, num_relations, k_model,
                                 init_range)
    params = {"kge": kge}
    if cfg.csd.enabled and cfg.csd.confidence == "mlp":
        feat = 2 * cfg.backbone.dim + cfg.backbone.rel_dim + 1
        params["semantic"] = csd_lib.SemanticModule(cfg.csd.hidden).init(
            k_sem, jnp.zeros((1, feat), jnp.float32))["params"]
    return KGEState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                    params=params, teacher=jax.tree.map(jnp.copy, kge),
                    opt_state=tx.init(params))


def _meta(config, data) -> dict:
    return {"model": dict(config.model), "dataset": data.name,
            "num_entities": data.num_entities, "num_relations": data.num_relations,
            "csd": dict(config.csd), "seed": int(config.seed)}


def kd_weight(c: csd_lib.CSDConfig, epoch: int) -> float:
    """The CSD lambda of (0-based) ``epoch``: 0 when off or during warm-up."""
    return c.weight if c.enabled and epoch >= c.warmup_epochs else 0.0


def _eval(cfg, params, triples, data, splits, config, max_queries=0):
    if max_queries and len(triples) > max_queries:
        idx = np.random.default_rng(0).permutation(len(triples))[:max_queries]
        triples = triples[np.sort(idx)]
    return ranking.evaluate(cfg.backbone, params, triples, data.all_triples(splits),
                            data.num_relations, batch_size=int(config.eval.batch_size),
                            chunk=int(config.eval.chunk))


def train_and_evaluate(config, workdir: str, *, stop_at_epoch: int | None = None) -> dict:
    """Trains (or resumes from ``workdir``) and evaluates; returns the results dict.

    Validation (every ``eval.every`` epochs, filter train + valid) and the final test
    (filter train + valid + test) use realistic filtered ranks, both sides.

    Args:
      config: a ConfigDict as built by ``configs/kge/kge.py``.
      workdir: output folder.
      stop_at_epoch: stop after this epoch (simulates an interruption; no final test).
    """
    import orbax.checkpoint as ocp
    from tqdm import tqdm

    data = load_data(config)          # bad data fails here, before any compilation
    cfg = step_config(config, data.num_entities)
    bs = int(config.train.batch_size)
    n_train = len(data.train)
    steps = n_train // bs
    if steps < 1:
        raise ValueError(f"train.batch_size {bs} exceeds the {n_train} training triples")
    tx = make_optimizer(config, steps)
    weights = (subsampling_weights(data.train, data.num_relations)
               if config.train.subsampling else np.ones(n_train, np.float32))
    key = jax.random.PRNGKey(int(config.seed))
    os.makedirs(workdir, exist_ok=True)
    mngr = runlog.checkpoint_manager(workdir, save_every=int(config.checkpoint_every),
                                     keep=int(config.keep_checkpoints))
    meta = _meta(config, data)
    state = init_state(cfg, data.num_relations, tx, jax.random.fold_in(key, 1),
                       float(config.model.init_range))
    state, start = runlog.resume(
        mngr, state, meta, what="run", workdir=workdir,
        key=lambda m: {k: m[k] for k in ("model", "dataset", "csd")})
    epochs = int(config.train.epochs)
    end = epochs if stop_at_epoch is None else min(epochs, int(stop_at_epoch))
    step_key = jax.random.fold_in(key, 2)
    result = {"dataset": data.name, "model": cfg.backbone.name, "dim": cfg.backbone.dim,
              "csd": cfg.csd.enabled, "seed": int(config.seed), "epochs": epochs}
    train_seconds = 0.0
    with runlog.MetricsLog(workdir, start_step=start) as log, \
            tqdm(total=end, initial=start, desc=f"{cfg.backbone.name}", unit="epoch",
                 disable=not config.progress) as bar:
        for epoch in range(start, end):
            if (cfg.csd.enabled and cfg.csd.ema == 0 and epoch >= 1
                    and epoch % cfg.csd.refresh_epochs == 0):
                state = refresh_teacher(state)
            perm = np.random.default_rng([int(config.seed), epoch]).permutation(n_train)
            idx = perm[:steps * bs].reshape(steps, bs)
            t0 = time.perf_counter()
            state, metrics = train_epoch(state, jnp.asarray(data.train[idx]),
                                         jnp.asarray(weights[idx]), step_key,
                                         jnp.float32(kd_weight(cfg.csd, epoch)), cfg=cfg,
                                         tx=tx)
            metrics = jax.device_get(metrics)
            dt = time.perf_counter() - t0
            train_seconds += dt
            row = {k: float(np.mean(v)) for k, v in metrics.items()}
            row.update(triples_per_sec=steps * bs / dt, epoch_seconds=dt)
            log.write(epoch + 1, row, prefix="train")
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if not np.isfinite(row["loss"]):
                raise FloatingPointError(f"loss became {row['loss']} at epoch {epoch + 1}")
            ev = int(config.eval.every)
            if ev and (epoch + 1) % ev == 0 and epoch + 1 < epochs:
                m = _eval(cfg, state.params["kge"], data.valid, data, ("train", "valid"),
                          config, int(config.eval.valid_max_queries))
                log.write(epoch + 1, {k: v for k, v in m.items()}, prefix="valid")
            mngr.save(epoch + 1, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(dict(meta, epoch=epoch + 1))),
                force=epoch + 1 == end)
            bar.update(1)
        mngr.wait_until_finished()
        mngr.close()
        result["train_seconds"] = train_seconds
        if end == epochs and config.eval.test:
            params = state.params["kge"]
            valid = _eval(cfg, params, data.valid, data, ("train", "valid"), config,
                          int(config.eval.valid_max_queries))
            test = _eval(cfg, params, data.test, data, kg_data.SPLITS, config)
            log.write(epochs, valid, prefix="valid")
            log.write(epochs, test, prefix="test")
            result["valid"], result["test"] = valid, test
    result["epochs_done"] = end
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def load_checkpoint(workdir: str, epoch: int | None = None):
    """``(backbone, kge_params, meta)`` from a training workdir (latest epoch if None)."""
    import orbax.checkpoint as ocp
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise FileNotFoundError(f"no checkpoints in {workdir!r}; train first with "
                                f"python -m jaxgraph.kge --config=... --workdir={workdir}")
    mngr = runlog.checkpoint_manager(workdir, read_only=True)
    epoch = mngr.latest_step() if epoch is None else epoch
    if epoch is None:
        raise FileNotFoundError(f"no checkpoints in {workdir!r}")
    meta = mngr.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    state = mngr.restore(epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    mngr.close()
    m = meta["model"]
    b = kge_models.get_backbone(m["name"], int(m["dim"]), float(m["gamma"]))
    params = jax.tree.map(jnp.asarray, state["state"]["params"]["kge"])
    return b, params, meta


def _print_result(result, workdir):
    del workdir
    short = {k: v for k, v in result.items() if k not in ("valid", "test")}
    if "test" in result:
        short["test"] = {k: round(result["test"][k], 4) for k in
                         ("mrr", "mr", "hits@1", "hits@3", "hits@10", "seconds")}
    print(json.dumps(short))


if __name__ == "__main__":
    from jaxdiff.cli import run_job
    run_job(train_and_evaluate, _print_result, what="KGE config file")
