"""jaxgraph.kge never loses work and never accepts bad input silently: faults injected
into real checkpoints of a tiny run, NaN, resumes with other settings, extension, bad
config values (in process and through ``python -m jaxgraph.kge``)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from faults import checkpoint_steps, flip_bit, largest_file, truncate
from test_kge import ROOT

from configs.kge.kge import get_config as kge_config
from jaxgraph.kge import evaluation, experiment
from jaxgraph.kge import step as kge_step
from jaxinfra import checkpoints
from jaxinfra.finite import NonFiniteError


def _config(**train):
    """rotate on the generated graph (128 training triples), 2 epochs of 8 steps, a
    checkpoint every epoch."""
    c = kge_config("rotate,tiny,epochs=2")
    c.checkpoint_every = 1
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def _params(workdir):
    _, params, meta = evaluation.load_checkpoint(str(workdir))
    return params, meta


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run: (workdir, result, params)."""
    workdir = tmp_path_factory.mktemp("kge_ref")
    result = experiment.train_and_evaluate(_config(), str(workdir))
    return workdir, result, _params(workdir)[0]


@pytest.mark.parametrize("fault", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_corrupt_latest_checkpoint_falls_back_and_ends_as_uninterrupted(tmp_path, reference,
                                                                       fault):
    _, ref_result, ref_params = reference
    experiment.train_and_evaluate(_config(), str(tmp_path))
    assert checkpoint_steps(tmp_path) == [1, 2]
    fault(largest_file(tmp_path / "checkpoints" / "2"))
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 2 in .* is corrupt \(file .* "
                                            r"does not match its recorded SHA-256\); moved "
                                            r"to .*corrupt/2; using step 1"):
        result = experiment.train_and_evaluate(_config(), str(tmp_path))   # redoes epoch 2
    assert (tmp_path / "checkpoints" / "corrupt" / "2").is_dir()
    assert checkpoint_steps(tmp_path) == [1, 2]
    params, meta = _params(tmp_path)
    assert meta["epoch"] == 2
    for k in ref_params:
        np.testing.assert_array_equal(params[k], ref_params[k])          # bit-exact
    assert result["test"] == {**ref_result["test"], "seconds": result["test"]["seconds"]}
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]   # epoch 2 redone once


def test_nan_learning_rate_stops_at_the_first_step_and_saves_nothing(tmp_path):
    c = _config(lr=float("nan"))
    with pytest.raises(NonFiniteError, match=r"^KGE training \(epoch 1\) stopped at step 1: "
                                             r"l2_params is nan; nothing was saved"):
        experiment.train_and_evaluate(c, str(tmp_path))
    assert checkpoint_steps(tmp_path) == []
    row = json.loads(open(tmp_path / "metrics.jsonl").readline())   # the evidence is logged
    assert row["step"] == 1 and np.isnan(row["train/l2_params"])


def test_a_non_finite_state_is_never_saved(tmp_path, monkeypatch):
    """Epoch 2 leaves NaN in the entity table while its metrics look finite: the save
    refuses it and the epoch-1 checkpoint stays the newest; resuming goes on from it."""
    real = kge_step.train_epoch

    def poisoned(state, *args, **kwargs):
        state, metrics = real(state, *args, **kwargs)
        if int(state.epoch) == 2:
            kge = dict(state.params["kge"])
            kge["entity"] = kge["entity"].at[3, 0].set(jnp.nan)
            state = state.replace(params=dict(state.params, kge=kge))
        return state, metrics

    monkeypatch.setattr(kge_step, "train_epoch", poisoned)
    with pytest.raises(NonFiniteError, match=r"step 2: state.*\['entity'\] holds NaN or inf; "
                                             r"not saved"):
        experiment.train_and_evaluate(_config(), str(tmp_path))
    assert checkpoint_steps(tmp_path) == [1]
    mngr = checkpoints.manager(str(tmp_path))
    assert checkpoints.verify(mngr, 1) is None
    saved = checkpoints.read(mngr, 1, state=None)["state"]
    mngr.close()
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved["params"]))
    monkeypatch.setattr(kge_step, "train_epoch", real)
    assert experiment.train_and_evaluate(_config(), str(tmp_path))["epochs_done"] == 2


def test_resume_refuses_other_settings_and_extend_continues(tmp_path, reference):
    ref_dir, _, ref_params = reference
    one = kge_config("rotate,tiny,epochs=1")
    one.checkpoint_every = 1
    experiment.train_and_evaluate(one, str(tmp_path))
    other = kge_config("rotate,tiny,epochs=1,seed=1,lr=0.02")
    other.train.batch_size = 8
    with pytest.raises(checkpoints.SettingsMismatchError) as err:
        experiment.train_and_evaluate(other, str(tmp_path))
    assert str(err.value).endswith(
        "holds a KGE checkpoint (step 1) with other settings: seed: 0 -> 1; "
        "train.batch_size: 16 -> 8; train.lr: 0.01 -> 0.02. Use a new --workdir, or the "
        "saved settings")
    # run-only fields may change: where the data lie, how often to save / validate
    same = kge_config("rotate,tiny,epochs=1")
    same.checkpoint_every, same.keep_checkpoints, same.eval.every = 3, 5, 1
    same.data_dir, same.progress = "/elsewhere", True
    assert experiment.train_and_evaluate(same, str(tmp_path))["epochs_done"] == 1
    longer = _config()                                          # epochs 1 -> 2
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"another length: train\.epochs: 1 -> 2\. To continue it to the "
                             r"new length add --config\.extend=True"):
        experiment.train_and_evaluate(longer, str(tmp_path))
    longer.extend = True
    longer.train.lr = 0.02                                      # extend allows the length only
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"other settings: train\.lr: 0\.01 -> 0\.02\. Use"):
        experiment.train_and_evaluate(longer, str(tmp_path))
    longer.train.lr = 0.01
    result = experiment.train_and_evaluate(longer, str(tmp_path))
    assert result["epochs_done"] == 2 and checkpoint_steps(tmp_path) == [1, 2]
    mngr = checkpoints.manager(str(tmp_path))
    state = checkpoints.read(mngr, 2, state=None)["state"]
    mngr.close()
    assert int(state["epoch"]) == 2 and int(state["step"]) == 2 * 8    # counters go on
    params, _ = _params(tmp_path)
    for k in ref_params:           # constant lr: extending 1 -> 2 equals a 2-epoch run
        np.testing.assert_array_equal(params[k], ref_params[k])
    rows = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2]
    with pytest.raises(ValueError, match=r"checkpoint at epoch 2, beyond "
                                         r"config\.train\.epochs=1; a run cannot be shortened"):
        shorter = kge_config("rotate,tiny,epochs=1")
        shorter.extend = True
        experiment.train_and_evaluate(shorter, str(tmp_path))
    # other data in the same workdir (same name, same sizes) are refused by fingerprint
    moved = _config()
    moved.synthetic.seed = 1
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"data\.sha256: '[0-9a-f]{16}' -> '[0-9a-f]{16}'; "
                             r"synthetic\.seed: 0 -> 1"):
        experiment.train_and_evaluate(moved, str(ref_dir))


@pytest.mark.parametrize("field,value,message", [
    ("train.num_negatives", 0, r"config\.train\.num_negatives must be an integer >= 1 "
                               r"\(negatives per positive triple, option negatives=N\), got 0"),
    ("train.batch_size", 0, r"config\.train\.batch_size must be an integer >= 1 \(training "
                            r"triples per step\), got 0"),
    ("train.batch_size", 500, r"config\.train\.batch_size=500 exceeds the 128 training "
                              r"triples; accepted: 1 to 128"),
    ("checkpoint_every", 0, r"config\.checkpoint_every must be an integer >= 1 \(epochs "
                            r"between checkpoints\), got 0"),
    ("checkpoint_every", -2, r"config\.checkpoint_every must be an integer >= 1.*got -2"),
    ("train.epochs", 0, r"config\.train\.epochs must be an integer >= 1, got 0"),
    ("train.lr", 0.0, r"config\.train\.lr must be a number > 0, got 0\.0"),
    ("keep_checkpoints", 0, r"config\.keep_checkpoints must be an integer >= 1, got 0"),
    ("synthetic.valid_fraction", 0.0, r"data set 'synthetic': the valid split is empty"),
    ("eval.select", "best", r"config\.eval\.select='best'; accepted: last, best_valid"),
    ("eval.select", "best_valid", r"config\.eval\.select='best_valid' with "
                                  r"config\.eval\.every=0: nothing to select among"),
], ids=lambda v: str(v) if not isinstance(v, str) or len(v) < 30 else "msg")
def test_bad_values_fail_before_any_work(tmp_path, field, value, message):
    c = _config()
    node = c
    *parents, name = field.split(".")
    for p in parents:
        node = node[p]
    setattr(node, name, value)
    with pytest.raises(ValueError, match=message):
        experiment.train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()                          # nothing was written


def test_cli_nan_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "jaxgraph.kge", "--config=configs/kge/kge.py:tiny",
         "--config.train.lr=nan", f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True,
        text=True, timeout=600)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "error: KGE training (epoch 1) stopped at step 1: l2_params is nan; nothing was "
        "saved after the last good checkpoint (lower the learning rate or check the data) "
        "(--verbose shows the traceback)")
    assert checkpoint_steps(tmp_path) == [] and not os.path.exists(tmp_path / "results.json")
