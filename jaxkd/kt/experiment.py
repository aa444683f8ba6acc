"""The whole KT experiment of a ``configs/kd/kt.py`` config: pairs -> translator ->
evaluation, with ``results.json`` and a printed report.

Writes to ``workdir``: ``pairs/{train,val}_<chunk>.npz`` (:mod:`jaxkd.kt.pairs`),
``checkpoints/<epoch>/`` (:mod:`jaxkd.kt.translator`), ``metrics.jsonl`` + ``tb/``
(train loss per epoch, eval accuracies) and ``results.json`` (:func:`run`).

Several processes (``--num_processes``; :mod:`jaxinfra.distributed`): the pairs of a chunk
are split over every device of every process, the translator is replicated on each
process, and process 0 writes every file; the results equal one process's up to float32
rounding (which an Adam translator can scale up on parameters whose gradients are near
zero: tests/jaxinfra/test_distributed.py).
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfra import config_checks, distributed
from jaxkd.kt import data, evaluate, nets, pairs, translator
from jaxkd.kt.augmentation import check_target

__all__ = ["check_config", "report", "run"]


def check_config(config):
    """Raises a ValueError naming the bad option (its value and the accepted ones), before
    any work."""
    data.check_dataset(config.dataset)
    a = config.augment
    check_target("augment.mask_target", a.mask_target)
    check_target("augment.noise_target", a.noise_target)
    config_checks.one_of(config, "canonical", nets.CANONICAL)
    if not 0.0 <= float(a.mask_prob) < 1.0:
        raise ValueError(f"augment.mask_prob must be in [0, 1), got {a.mask_prob}")
    if not float(a.noise_std) >= 0:
        raise ValueError(f"augment.noise_std must be >= 0, got {a.noise_std}")
    t = config.translator
    translator.make_optimizer(str(t.optimizer), 1.0, 0.0, 0.0, 1, 1, str(t.schedule))
    for name in ("pairs.num_train", "pairs.num_val", "pairs.batch_size", "pairs.chunk_size",
                 "pairs.steps_large", "pairs.steps_small", "translator.num_layers",
                 "translator.c_dim", "translator.hidden_s_dim", "translator.hidden_c_dim",
                 "translator.batch_size", "translator.epochs", "checkpoint_every",
                 "keep_checkpoints", "eval_batch_size"):
        config_checks.int_at_least(config, name, 1)
    for name in ("eval_every", "max_train_examples", "max_test_examples", "seed"):
        config_checks.int_at_least(config, name, 0)
    if not 0.0 <= float(t.dropout) < 1.0:
        raise ValueError(f"translator.dropout must be in [0, 1), got {t.dropout}")
    if int(t.batch_size) > int(config.pairs.num_train):
        raise ValueError(f"translator.batch_size ({t.batch_size}) exceeds "
                         f"pairs.num_train ({config.pairs.num_train}); accepted: 1 to "
                         f"{config.pairs.num_train}")


def _check_images(train_x, test_x) -> None:
    """A ValueError for an empty split (before any pair is trained)."""
    for name, images in (("training", train_x), ("test", test_x)):
        if images.shape[0] == 0:
            raise ValueError(f"the {name} split is empty (0 images); check config.dataset, "
                             "config.max_train_examples/max_test_examples and the data files")


def run(config, workdir: str, *, stop_at_epoch: int | None = None) -> dict:
    """The whole KT pipeline (pairs -> translator -> evaluation); writes results.json.

    Args:
      config: a ``configs/kd/kt.py`` ConfigDict.
      workdir: output folder; saved pair chunks and translator checkpoints are reused.
      stop_at_epoch: stop the translator after this epoch (simulates an interruption).

    Returns:
      The ``results.json`` dict: accuracy summaries of every block (``accuracy``), the
      evaluations during training (``evals``), sizes, settings and wall times.
    """
    check_config(config)
    translator.check_resumable(config, workdir)       # other settings: refused right away
    pairs.check_pair_settings(config, workdir, record=False)
    os.makedirs(workdir, exist_ok=True)
    progress = bool(config.progress)
    t0 = time.perf_counter()
    train_x, train_y, test_x, test_y = data.load_data(config)
    _check_images(train_x, test_x)
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    train_pairs = pairs.pair_set(config, "train", train_x, train_y, workdir, progress=progress)
    val_pairs = pairs.pair_set(config, "val", train_x, train_y, workdir, progress=progress)
    t_pairs = time.perf_counter() - t0
    test_x, test_y = jnp.asarray(test_x), jnp.asarray(test_y)
    t1 = time.perf_counter()
    state, evals = translator.train_translator(config, workdir, train_pairs, val_pairs,
                                               test_x, test_y, stop_at_epoch=stop_at_epoch,
                                               progress=progress)
    t_translator = time.perf_counter() - t1
    base = evaluate.baselines(config, train_pairs, val_pairs, test_x, test_y)
    result = {
        "dataset": str(config.dataset),
        "num_train_pairs": int(config.pairs.num_train),
        "num_val_networks": int(config.pairs.num_val),
        "test_examples": int(test_x.shape[0]),
        "pair_recipe": dict(config.pairs),
        "translator": dict(config.translator),
        "augment": dict(config.augment),
        "canonical": pairs.canonical_mode(config),
        "translator_params": nets.count_params(state.params),
        "epochs_done": int(state.epoch),
        "final_train_loss_large": float(np.mean(train_pairs["loss_large"])),
        "final_train_loss_small": float(np.mean(train_pairs["loss_small"])),
        "accuracy": dict(base, translated_final=evals[-1]["translated"] if evals else None,
                         translated_best=max(evals, key=lambda e: e["translated"]["mean"])
                         if evals else None),
        "evals": evals,
        "wall_seconds": {"pairs": t_pairs, "translator": t_translator,
                         "total": time.perf_counter() - t0},
        "devices": [str(d) for d in jax.devices()],
    }
    distributed.write_json(os.path.join(workdir, "results.json"), result)
    return result


def report(result, workdir):
    """Prints the accuracy table of a :func:`run` result (on process 0)."""
    if not distributed.is_main_process():
        return
    acc = result["accuracy"]
    print(f"KT on {result['dataset']}: {result['num_train_pairs']} training pairs, "
          f"{result['num_val_networks']} held-out networks, "
          f"{result['test_examples']} test images (results in {workdir}/results.json)")
    rows = [("large (BasicBlock)", acc["large"]),
            ("direct (trained compressed)", acc["direct"]),
            ("translated (final)", acc["translated_final"]),
            ("random init", acc["random_init"]),
            ("mean train block", acc["mean_train_block"]),
            ("ridge (linear map)", acc.get("ridge"))]
    for name, s in rows:
        if s is not None:
            print(f"  {name:30s} mean {s['mean']:6.2f}%  min {s['min']:6.2f}%  "
                  f"max {s['max']:6.2f}%")
    fit = (acc.get("ridge") or {}).get("fit")
    if fit and fit["holdout"]:
        print(f"  ridge: alpha {fit['alpha']:g} (lambda {fit['lam']:.3g}), held-out MSE "
              f"{fit['holdout_mse'][str(fit['alpha'])]:.3e} vs mean block "
              f"{fit['holdout_mse_mean']:.3e} ({fit['holdout']} pairs; hidden order "
              f"{result.get('canonical', 'none')})")
