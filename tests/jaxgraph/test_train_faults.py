"""jaxgraph.train (one GNN) and jaxgraph.oad never lose work and never accept bad input
silently: exact resume and extension, faults injected into real checkpoints of tiny Cora
runs, NaN, resumes with other settings, bad config values, empty splits."""
import json

import jax.numpy as jnp
import pytest
from faults import assert_same_leaves, checkpoint_steps, flip_bit, largest_file, truncate
from test_oad import synthetic_task

from configs.gnn.gnn_planetoid import get_config as gnn_config
from configs.gnn.oad_cora import get_config as oad_config
from jaxgraph import oad, train
from jaxinfra import checkpoints
from jaxinfra.finite import NonFiniteError


def _gnn(**fields):
    """GCN on Cora, 5 epochs, metrics every epoch, checkpoints at 2, 4, 5 (keeps 4, 5)."""
    c = gnn_config("cora,gcn,tiny")
    for k, v in fields.items():
        setattr(c, k, v)
    return c


def _final_state(workdir):
    mngr, step = checkpoints.open_latest(str(workdir), what="GNN", hint="")
    try:
        return step, checkpoints.read_meta(mngr, step), checkpoints.read(
            mngr, step, state=None)["state"]
    finally:
        mngr.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 5-epoch run: (workdir, result, final state)."""
    workdir = tmp_path_factory.mktemp("gnn_ref")
    result = train.train_and_evaluate(_gnn(), str(workdir))
    return workdir, result, _final_state(workdir)[2]


def test_train_runs_resumes_exactly_and_extends(tmp_path, reference):
    """Metrics and checkpoints; 3 epochs extended to 5 equal 5 uninterrupted epochs (no
    schedule depends on the length), the epoch counter going on."""
    ref_dir, full, ref_state = reference
    assert 0.0 < full["test_accuracy_at_best_val"] <= 1.0 and full["best_epoch"] >= 0
    rows = [json.loads(line) for line in open(ref_dir / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5]
    assert checkpoint_steps(ref_dir) == [4, 5]
    train.train_and_evaluate(_gnn(epochs=3), str(tmp_path))
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"holds a GNN run \(checkpoint at step 3\) of another length: "
                             r"epochs: 3 -> 5\. To continue it to the new length add "
                             r"--config\.extend=True"):
        train.train_and_evaluate(_gnn(), str(tmp_path))
    resumed = train.train_and_evaluate(_gnn(extend=True), str(tmp_path))
    assert resumed == full
    step, meta, state = _final_state(tmp_path)
    assert step == 5 and meta["epoch"] == 5 and int(state["step"]) == 5
    assert_same_leaves(state, ref_state)
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="unknown config option"):
        gnn_config("cora,gin")


@pytest.mark.parametrize("fault", [flip_bit, truncate], ids=["bit-flip", "truncated"])
def test_corrupt_latest_checkpoint_falls_back_and_ends_as_uninterrupted(tmp_path, reference,
                                                                       fault):
    _, full, ref_state = reference
    train.train_and_evaluate(_gnn(), str(tmp_path))
    fault(largest_file(tmp_path / "checkpoints" / "5"))
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 5 in .* is corrupt .*SHA-256"
                                            r"\); moved to .*corrupt/5; using step 4"):
        result = train.train_and_evaluate(_gnn(), str(tmp_path))      # redoes epoch 5
    assert result == full
    assert checkpoint_steps(tmp_path) == [4, 5]
    assert (tmp_path / "checkpoints" / "corrupt" / "5").is_dir()
    assert_same_leaves(_final_state(tmp_path)[2], ref_state)


def test_nan_learning_rate_stops_and_saves_nothing(tmp_path):
    c = _gnn()
    c.optim.lr = float("nan")
    with pytest.raises(NonFiniteError, match=r"^gcn/cora training \(one step per epoch\) "
                                             r"stopped at step 1: l2_params is nan; nothing "
                                             r"was saved"):
        train.train_and_evaluate(c, str(tmp_path))
    assert checkpoint_steps(tmp_path) == []


def test_resume_refuses_other_settings(reference):
    ref_dir = str(reference[0])
    c = _gnn(seed=1)
    c.optim.lr = 0.02
    c.model.dropout = 0.1
    with pytest.raises(checkpoints.SettingsMismatchError) as err:
        train.train_and_evaluate(c, ref_dir)
    assert "holds a GNN checkpoint (step 5) with other settings: model.dropout: 0.5 -> 0.1; " \
           "optim.lr: 0.01 -> 0.02; seed: 0 -> 1. Use a new --workdir" in str(err.value)
    # where the data lie and how often to log / save never change results
    same = _gnn(data_dir="", log_every=3, checkpoint_every=7, progress=True)
    assert train.train_and_evaluate(same, ref_dir) == reference[1]


@pytest.mark.parametrize("field,value,message", [
    ("epochs", 0, r"config\.epochs must be an integer >= 1, got 0"),
    ("checkpoint_every", 0, r"config\.checkpoint_every must be an integer >= 1 \(epochs "
                            r"between checkpoints\), got 0"),
    ("checkpoint_every", -1, r"config\.checkpoint_every must be an integer >= 1.*got -1"),
    ("log_every", 0, r"config\.log_every must be an integer >= 1 \(epochs between logged "
                     r"metrics\), got 0"),
])
def test_gnn_bad_values_fail_before_any_work(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(_gnn(**{field: value}), str(tmp_path / "w"))
    c = _gnn()
    c.optim.lr = -0.1
    with pytest.raises(ValueError, match=r"config\.optim\.lr must be a number > 0, got -0\.1"):
        train.train_and_evaluate(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_an_empty_split_is_refused(tmp_path):
    task = synthetic_task()
    train.check_task(task, "synthetic")
    empty = task.replace(val_mask=jnp.zeros_like(task.val_mask))
    with pytest.raises(ValueError, match=r"synthetic: the val split is empty \(val_mask "
                                         r"selects no node\)"):
        train.check_task(empty, "synthetic")
    with pytest.raises(ValueError, match=r"GNN: the val split is empty"):
        train.run_epochs(None, None, empty, None, workdir=str(tmp_path), meta={}, epochs=1,
                         log_every=1, checkpoint_every=1, log_metrics=None)


# ------------------------------------------------------------------ OAD
@pytest.mark.parametrize("field,value,message", [
    ("okd_epochs", -1, r"config\.okd_epochs must be an integer >= 0, got -1"),
    ("warmup_epochs", 0, r"config\.warmup_epochs \+ config\.okd_epochs must be >= 1 \(the "
                         r"epochs to train\), got 0 \+ 0"),
    ("num_seeds", 0, r"config\.num_seeds must be an integer >= 1 \(seeds trained at once\), "
                     r"got 0"),
    ("checkpoint_every", 0, r"config\.checkpoint_every must be an integer >= 1"),
    ("log_every", -5, r"config\.log_every must be an integer >= 1.*got -5"),
])
def test_oad_bad_values_fail_before_any_work(tmp_path, field, value, message):
    c = oad_config("tiny")
    if field == "warmup_epochs":
        c.okd_epochs = 0
    setattr(c, field, value)
    with pytest.raises(ValueError, match=message):
        oad.run_oad(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_oad_on_cora_runs_and_survives_faults(tmp_path, monkeypatch):
    """``python -m jaxgraph.oad``'s path on Cora, tiny (2 seeds x 2 students, 2 warm-up + 3
    OKD epochs; selection among the OKD epochs, last-epoch accuracies); then a corrupt
    latest checkpoint, other settings, extension, a checkpoint selected over all epochs
    (before that rule), NaN (naming the seed)."""
    run = tmp_path / "run"
    first = oad.run_oad(oad_config("tiny"), str(run))
    assert first["seeds"] == [0, 1] and first["students"] == ["gcn", "gcn"]
    assert len(first["per_seed"]["student_test"]) == 2
    assert all(0 < v <= 1 for v in first["per_seed"]["best_student"])
    # selection among the OKD epochs (index >= warmup_epochs = 2) only; last-epoch accuracies
    assert first["selection_from_epoch"] == 2
    assert min(min(e) for e in first["per_seed"]["student_best_epoch"]) >= 2
    assert min(first["per_seed"]["max_student_coded_epoch"]) >= 2
    last = first["per_seed"]["student_last_test"]
    assert len(last) == 2 and all(len(row) == 2 and all(0 < v <= 1 for v in row)
                                  for row in last)
    assert first["stats"]["mean_student_last"]["n"] == 2
    with open(run / "result.json") as f:
        assert json.load(f)["stats"] == first["stats"]
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/gan" in r] == [1, 2, 3, 4, 5]
    last_row = [r for r in rows if "eval/test_accuracy" in r][-1]     # means at epoch 5
    assert last_row["step"] == 5
    assert abs(last_row["eval/test_accuracy"] - sum(map(sum, last)) / 4) < 1e-6
    assert checkpoint_steps(run) == [4, 5]
    flip_bit(largest_file(run / "checkpoints" / "5"))
    with pytest.warns(RuntimeWarning, match=r"step 5 .* is corrupt .*; using step 4"):
        again = oad.run_oad(oad_config("tiny"), str(run))
    assert again["per_seed"] == first["per_seed"]                 # epoch 5 redone exactly
    # other settings, listed; unused architectures' defaults do not count
    c = oad_config("tiny")
    c.gan_trade, c.num_seeds = 0.5, 3
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"holds a GNN OAD checkpoint \(step 5\) with other settings: "
                             r"gan_trade: 1\.0 -> 0\.5; num_seeds: 2 -> 3\. Use a new"):
        oad.run_oad(c, str(run))
    c = oad_config("tiny")
    c.models.gat.heads = 2
    c.okd_epochs, c.extend = 4, True
    c.warmup_epochs = 3                       # not a length key: refused even with extend
    with pytest.raises(checkpoints.SettingsMismatchError, match=r"warmup_epochs: 2 -> 3\. "):
        oad.run_oad(c, str(run))
    c.warmup_epochs = 2
    longer = oad.run_oad(c, str(run))
    assert longer["okd_epochs"] == 4 and checkpoint_steps(run) == [5, 6]
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert [r["step"] for r in rows if "train/gan" in r] == [1, 2, 3, 4, 5, 6]   # never twice
    _, meta, state = _final_state(run)
    assert meta["epoch"] == 6 and state["step"].tolist() == [6, 6]    # per seed
    # a checkpoint of the old code (selection over all epochs, no "selection" setting) is
    # refused, never resumed with its old selection
    old = tmp_path / "old"
    monkeypatch.setattr(oad, "selection_start", lambda config: 0)
    oad.run_oad(oad_config("tiny"), str(old))
    monkeypatch.undo()
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"other settings: selection: '<absent>' -> 'okd_epochs'\. "):
        oad.run_oad(oad_config("tiny"), str(old))
    nan = oad_config("tiny")
    nan.optim.lr = float("nan")
    with pytest.raises(NonFiniteError, match=r"^oad cora gcn/gcn training \(one step per "
                                             r"epoch\) stopped at step 1: l2_params\[seed=0\] "
                                             r"is nan; nothing was saved"):
        oad.run_oad(nan, str(tmp_path / "nan"))
    assert checkpoint_steps(tmp_path / "nan") == []
