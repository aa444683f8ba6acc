"""A KGE run from a config (``configs/kge/kge.py``), and the command line.

    python -m jaxgraph.kge --config=configs/kge/kge.py:rotate,wn18rr,dim=32 --workdir=W

:func:`train_and_evaluate` checks the config values (:func:`check_config`), loads the
data, builds the step settings and the optimizer, resumes from ``workdir``, trains
(:func:`jaxgraph.kge.trainer.train_epochs`) and evaluates: validation every ``eval.every``
epochs (filter train + valid) and the final validation and test (filter train + valid +
test), realistic filtered ranks, both sides.

Model selection (``eval.select``): ``last`` reports the last epoch; ``best_valid`` (early
stopping) also tests at every validation of ``eval.every`` and reports, under
``selected``, the epoch of the highest validation MRR (the earliest on ties; the last
epoch is a candidate) with its validation and test metrics: the test set never chooses
anything, and the candidates survive a resume (they are read back from
``metrics.jsonl``).

Past one device: ``config.mesh.model = M`` splits the entity table, its gradient and Adam
moments, negative and 1-vs-all scoring and the filtered ranking over M devices by entity
rows (:mod:`jaxgraph.kge.sharded`); ``config.mesh.data = D`` splits each batch of triples
over D. The default (1, 1) is the unsharded path. A sharded run's checkpoints hold the
padded tables and resume only with the same mesh (``mesh`` is then a setting).

Several processes (:mod:`jaxinfra.distributed`; every process runs the same command):
the mesh takes as many devices of each process (``model * data`` a multiple of the
process count; the ``model`` axis spans the processes, so the table is split over all
their devices); every process computes the same ranks (the counts are summed over the
mesh), so the metrics agree everywhere; process 0 writes ``metrics.jsonl``, ``tb/`` and
``results.json``, every process takes part in the checkpoints. The unsharded default
(1, 1) runs on one process only.

Resuming (:mod:`jaxinfra.checkpoints`): the newest good checkpoint of ``workdir`` is used
(a corrupt one is moved to ``checkpoints/corrupt/<epoch>`` with a warning). It must have
been written with the same settings (:func:`run_settings`: every config field that changes
results) and the same data (:meth:`jaxgraph.kg_data.KGData.fingerprint`), else the run is
refused with every difference listed. ``--config.extend=True`` lets only
``train.epochs`` differ: a finished run continues to more epochs, its epoch and step
counters going on from the checkpoint.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import numpy as np
import optax

from jaxgraph import csd as csd_lib
from jaxgraph import kg_data, kge_models
from jaxgraph.kge import evaluation, sharded, trainer
from jaxgraph.kge import step as kge_step
from jaxinfra import checkpoints, config_checks, distributed
from jaxinfra.metrics import MetricsLog

__all__ = ["OPTIMIZERS", "SELECTIONS", "make_optimizer", "csd_config", "step_config",
           "check_config", "mesh_sizes", "make_mesh", "load_data", "run_settings", "selection",
           "select_best_valid", "train_and_evaluate", "main"]

OPTIMIZERS = ("adam", "adagrad")
SELECTIONS = ("last", "best_valid")
# Config fields that never change a trained model (besides jaxinfra's run-only fields:
# checkpoint_every, keep_checkpoints, progress, extend): where the data files lie (the
# data themselves are compared by fingerprint), how validation is batched and how often
# it runs (it never feeds back into training; with eval.select=best_valid it chooses the
# reported epoch, so then it is a setting).
_NOT_RESULTS = ("data_dir", "eval.batch_size", "eval.chunk", "eval.every")


def selection(config) -> str:
    """``config.eval.select`` ("last" when the config has none)."""
    return str(config.eval.get("select", "last"))


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
    """The validated :class:`jaxgraph.csd.CSDConfig` of ``config.csd``."""
    c = config.csd
    return csd_lib.CSDConfig(
        enabled=bool(c.enabled), weight=float(c.weight), delta=float(c.delta),
        tau=float(c.tau), confidence=str(c.confidence), target=str(c.target),
        refresh_epochs=int(c.refresh_epochs), ema=float(c.ema),
        warmup_epochs=int(c.warmup_epochs), hidden=int(c.hidden)).validate()


def step_config(config, num_entities: int) -> kge_step.StepConfig:
    """The static step settings of ``config`` (model, loss, negatives, CSD)."""
    m, tc = config.model, config.train
    if tc.loss not in kge_step.LOSSES:
        raise ValueError(f"unknown train.loss {tc.loss!r}; valid: "
                         f"{', '.join(kge_step.LOSSES)}")
    if tc.reg_type not in ("n3", "l2"):
        raise ValueError(f"unknown train.reg_type {tc.reg_type!r}; valid: n3, l2")
    return kge_step.StepConfig(
        backbone=kge_models.get_backbone(m.name, int(m.dim), float(m.gamma)),
        num_entities=int(num_entities), loss=str(tc.loss),
        num_negatives=int(tc.num_negatives),
        shared_negatives=bool(tc.shared_negatives), adv_temperature=float(tc.adv_temperature),
        regularization=float(tc.regularization), reg_type=str(tc.reg_type),
        csd=csd_config(config))


def check_config(config) -> None:
    """ValueError naming the first bad value and the accepted range; called before any
    data are read or anything is compiled."""
    config_checks.int_at_least(config, "train.epochs", 1)
    config_checks.int_at_least(config, "train.batch_size", 1, what="training triples per step")
    if config.train.loss == "self_adversarial":
        config_checks.int_at_least(config, "train.num_negatives", 1,
                            what="negatives per positive triple, option negatives=N")
    config_checks.positive(config, "train.lr")
    config_checks.int_at_least(config, "model.dim", 1)
    config_checks.int_at_least(config, "checkpoint_every", 1, what="epochs between checkpoints")
    config_checks.int_at_least(config, "keep_checkpoints", 1)
    config_checks.int_at_least(config, "eval.every", 0, what="0: validation only at the end")
    if selection(config) not in SELECTIONS:
        raise ValueError(f"config.eval.select={selection(config)!r}; accepted: "
                         f"{', '.join(SELECTIONS)}")
    if selection(config) == "best_valid" and int(config.eval.every) < 1:
        raise ValueError(f"config.eval.select='best_valid' with config.eval.every="
                         f"{config.eval.every}: nothing to select among; accepted: "
                         "eval.every >= 1, or eval.select='last'")
    config_checks.int_at_least(config, "eval.valid_max_queries", 0, what="0: the whole split")
    config_checks.int_at_least(config, "eval.batch_size", 1)
    config_checks.int_at_least(config, "eval.chunk", 1)
    if config.dataset != "synthetic":
        config_checks.one_of(config, "vocabulary", kg_data.VOCABULARIES)
        if "unseen" in config:
            config_checks.one_of(config, "unseen", kg_data.UNSEEN)
    model, data = mesh_sizes(config)
    processes = distributed.process_count()
    if (model, data) == (1, 1):
        if processes > 1:
            raise ValueError(f"config.mesh model=1, data=1 (one device) on {processes} "
                             f"processes; accepted: mesh.model * mesh.data a multiple of "
                             f"{processes}, e.g. --config.mesh.model={jax.device_count()} "
                             "(the entity table split over every device)")
        return
    if model * data > jax.device_count():
        raise ValueError(f"config.mesh data={data} x model={model} needs {model * data} "
                         f"devices; accepted: at most {jax.device_count()} (the devices "
                         "present)")
    if config.csd.enabled:
        raise ValueError(f"config.csd.enabled=True with config.mesh.model={model}, "
                         f"data={data}: CSD is not supported on sharded tables; accepted: "
                         "csd off, or mesh model=1 and data=1")
    for name in ("train.batch_size", "eval.batch_size"):
        if config_checks.get(config, name) % data:
            raise ValueError(f"config.{name}={config_checks.get(config, name)} does not "
                             f"split over config.mesh.data={data}; accepted: a multiple "
                             f"of {data}")


def mesh_sizes(config) -> tuple:
    """``(model, data)`` of ``config.mesh`` ((1, 1) when the config has no ``mesh``).

    Raises:
      ValueError: a size that is not an integer >= 1.
    """
    if config.get("mesh") is None:
        return 1, 1
    return (config_checks.int_at_least(config, "mesh.model", 1,
                                       what="devices the entity table is split over"),
            config_checks.int_at_least(config, "mesh.data", 1,
                                       what="devices a batch of triples is split over"))


def make_mesh(config):
    """The (``data``, ``model``) mesh of ``config.mesh``; None for (1, 1) (unsharded)."""
    model, data = mesh_sizes(config)
    return None if (model, data) == (1, 1) else sharded.make_mesh(model, data)


def load_data(config) -> kg_data.KGData:
    """``config.dataset``: a bundled / on-disk graph, or ``synthetic`` (``config.synthetic``).

    Raises:
      ValueError: bad files (see :func:`jaxgraph.kg_data.load_kg`) or an empty split.
    """
    if config.dataset == "synthetic":
        s = config.get("synthetic", None)
        data = kg_data.synthetic_kg(**(dict(s) if s is not None else {}))
    else:
        data = kg_data.load_kg(config.dataset, data_dir=config.data_dir or None,
                               vocabulary=config.vocabulary,
                               unseen=config.get("unseen", "keep"))
    for split in kg_data.SPLITS:
        if len(data.split(split)) == 0:
            raise ValueError(f"data set {data.name!r}: the {split} split is empty; every "
                             "split needs at least one triple")
    return data


def run_settings(config) -> dict:
    """The config fields that change a run's results (compared when resuming)."""
    unused = (("vocabulary", "unseen") if config.dataset == "synthetic"
              else ("synthetic",))
    if mesh_sizes(config) == (1, 1):     # unsharded: as before meshes existed
        unused += ("mesh",)
    ignore = _NOT_RESULTS + unused
    if selection(config) == "last":      # as before selection existed
        ignore += ("eval.select",)
    else:
        ignore = tuple(k for k in ignore if k != "eval.every")
    return checkpoints.settings(config, ignore=ignore)


def _meta(config, data) -> dict:
    return {"model": dict(config.model), "dataset": data.name,
            "num_entities": data.num_entities, "num_relations": data.num_relations,
            "csd": dict(config.csd), "seed": int(config.seed),
            "settings": run_settings(config),
            "data": {"name": data.name, "entities": data.num_entities,
                     "relations": data.num_relations,
                     "triples": [len(data.split(s)) for s in kg_data.SPLITS],
                     "sha256": data.fingerprint()[:16]}}


def _resume_key(meta: dict) -> dict:
    """What must agree between a run and the checkpoint it resumes: the settings and the
    data (a checkpoint from before settings were recorded differs in every field)."""
    return dict(meta.get("settings") or {}, data=meta.get("data"))


def train_and_evaluate(config, workdir: str, *, stop_at_epoch: int | None = None) -> dict:
    """Trains (or resumes from ``workdir``) and evaluates; returns the results dict.

    Args:
      config: a ConfigDict as built by ``configs/kge/kge.py``.
      workdir: output folder.
      stop_at_epoch: stop after this epoch (simulates an interruption; no final test).
    """
    check_config(config)              # bad values fail here, before the data are read
    data = load_data(config)          # bad data fails here, before any compilation
    cfg = step_config(config, data.num_entities)
    bs = int(config.train.batch_size)
    n_train = len(data.train)
    if n_train // bs < 1:
        raise ValueError(f"config.train.batch_size={bs} exceeds the {n_train} training "
                         f"triples; accepted: 1 to {n_train}")
    tx = make_optimizer(config, n_train // bs)
    weights = (kge_step.subsampling_weights(data.train, data.num_relations)
               if config.train.subsampling else np.ones(n_train, np.float32))
    key = jax.random.PRNGKey(int(config.seed))
    ec = config.eval

    mesh = make_mesh(config)

    def evaluate(params, split, filter_splits, max_queries=0):
        return evaluation.evaluate_split(cfg.backbone, params, data, split, filter_splits,
                                         batch_size=ec.batch_size, chunk=ec.chunk,
                                         max_queries=max_queries, mesh=mesh)

    def validate(params):
        return evaluate(params, "valid", ("train", "valid"), int(ec.valid_max_queries))

    best_valid = selection(config) == "best_valid"

    def checkpoint_eval(params):        # {log prefix: metrics} after eval.every epochs
        out = {"valid": validate(params)}
        if best_valid:
            out["test"] = evaluate(params, "test", kg_data.SPLITS)
        return out

    os.makedirs(workdir, exist_ok=True)
    mngr = checkpoints.manager(workdir, save_every=int(config.checkpoint_every),
                               keep=int(config.keep_checkpoints))
    meta = _meta(config, data)
    init_key, init_range = jax.random.fold_in(key, 1), float(config.model.init_range)
    if mesh is None:
        state = kge_step.init_state(cfg, data.num_relations, tx, init_key, init_range)
    else:
        state = sharded.init_state(cfg, data.num_relations, tx, init_key, mesh, init_range)
    state, start = checkpoints.resume(mngr, state, meta, what="KGE", workdir=workdir,
                                      key=_resume_key, extend_keys=("train.epochs",),
                                      extend=bool(config.get("extend", False)))
    epochs = int(config.train.epochs)
    if start > epochs:
        mngr.close()
        raise ValueError(f"{workdir!r} holds a KGE checkpoint at epoch {start}, beyond "
                         f"config.train.epochs={epochs}; a run cannot be shortened (use a "
                         "new --workdir)")
    end = epochs if stop_at_epoch is None else min(epochs, int(stop_at_epoch))
    result = {"dataset": data.name, "model": cfg.backbone.name, "dim": cfg.backbone.dim,
              "csd": cfg.csd.enabled, "seed": int(config.seed), "epochs": epochs}
    if mesh is not None:
        result["mesh"] = {"model": mesh.shape[sharded.MODEL], "data": mesh.shape[sharded.DATA]}
    with MetricsLog(workdir, start_step=start) as log:
        try:
            state, result["train_seconds"] = trainer.train_epochs(
                state, cfg, tx, data.train, weights, key=jax.random.fold_in(key, 2),
                seed=int(config.seed), batch_size=bs, start=start, end=end, epochs=epochs,
                mngr=mngr, meta=meta, log=log, validate=checkpoint_eval,
                eval_every=int(ec.every), progress=bool(config.progress), mesh=mesh)
        finally:
            mngr.close()
        if end == epochs and ec.test:
            params = state.params["kge"]
            valid = validate(params)
            test = evaluate(params, "test", kg_data.SPLITS)
            log.write(epochs, valid, prefix="valid")
            log.write(epochs, test, prefix="test")
            result["valid"], result["test"] = valid, test
            if best_valid and distributed.is_main_process():
                result["selected"] = select_best_valid(workdir)
    result["epochs_done"] = end
    distributed.write_json(os.path.join(workdir, "results.json"), result)
    return result


def select_best_valid(workdir: str) -> dict:
    """``{"epoch", "valid", "test"}`` of the logged epoch with the highest validation MRR
    (the earliest on ties) among those with both a validation and a test row in
    ``workdir/metrics.jsonl``."""
    rows = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            for split in ("valid", "test"):
                got = {k.split("/", 1)[1]: v for k, v in row.items()
                       if k.startswith(split + "/")}
                if got:
                    rows.setdefault(int(row["step"]), {}).setdefault(split, {}).update(got)
    candidates = sorted(e for e, r in rows.items() if "valid" in r and "test" in r)
    if not candidates:
        raise ValueError(f"{workdir}/metrics.jsonl holds no epoch with both validation and "
                         "test metrics to select among")
    epoch = max(candidates, key=lambda e: (rows[e]["valid"]["mrr"], -e))
    return {"epoch": epoch, **rows[epoch]}


def _print_result(result, workdir):
    del workdir
    if not distributed.is_main_process():
        return
    short = {k: v for k, v in result.items() if k not in ("valid", "test")}
    if "test" in result:
        short["test"] = {k: round(result["test"][k], 4) for k in
                         ("mrr", "mr", "hits@1", "hits@3", "hits@10", "seconds")}
    if "selected" in result:
        sel = result["selected"]
        short["selected"] = {"epoch": sel["epoch"], "valid_mrr": round(sel["valid"]["mrr"], 4),
                             "test_mrr": round(sel["test"]["mrr"], 4)}
    print(json.dumps(short))


def main():
    """``python -m jaxgraph.kge --config=... --workdir=...``."""
    from jaxinfra.cli import run_job
    run_job(train_and_evaluate, _print_result, what="KGE config file", multi_process=True)
