"""jaxkd.train: loss goes down, exact resume, sharded == single-device, clear errors, and
the faults a user met: corrupt checkpoints (fallback to the newest good step), NaN (stop,
save nothing), resumes with other settings (refused; --config.extend=True to go longer),
the missing-teacher hint, bad values.

Uses the tiny CNN of kd_testnet (the jaxkd model interface) on scikit-learn digits so
that each compiled step costs a second, not a ResNet's compile.
"""
import importlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from faults import assert_same_leaves, flip_bit, largest_file, truncate
from kd_testnet import ZOO
from kd_testnet import tiny_config as _config

from configs.kd import common
from jaxinfra import checkpoints
from jaxinfra import mesh as mesh_lib
from jaxkd import data, train

REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[2])


@pytest.fixture(scope="module", autouse=True)
def tiny_zoo():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_models", lambda: ZOO)
        yield


@pytest.fixture(scope="module")
def datasets():
    tr = data.load("digits", "train", max_examples=64)
    te = data.load("digits", "test", max_examples=40)
    return tr, te


def _teachers(k, seed=0):
    """K random tiny teachers stacked (K, ...): one compiled, vmapped init."""
    m = ZOO.create("tiny4", num_classes=10)
    init = lambda key: m.init(key, jnp.zeros((1, 8, 8, 1), jnp.float32), train=False)
    return jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(seed), k))


def test_a_few_steps_lower_the_loss(datasets):
    tr, _ = datasets
    # The settings (and so the compiled step) of the resume test's runs.
    fill = tuple(-m / s for m, s in zip(tr.mean, tr.std))
    setup = train.build(_config("ce"), (8, 8, 1), 10, 4, fill=fill)
    batch = mesh_lib.sharded(setup.mesh)
    x, y = jax.device_put(tr.images[:16], batch), jax.device_put(tr.labels[:16], batch)
    state, losses_seen = setup.state, []
    for _ in range(20):
        state, m = train.train_step(state, setup.teacher_vars, x, y, jax.random.PRNGKey(0),
                                    cfg=setup.cfg)
        losses_seen.append(float(m["loss"]))
    # One fixed batch (randomly cropped each step): the loss goes down.
    assert np.mean(losses_seen[-4:]) < 0.95 * np.mean(losses_seen[:4]), losses_seen
    assert int(state.step) == 20


@pytest.fixture(scope="module")
def full(datasets, tmp_path_factory):
    """A finished 2-epoch CE run (4 steps per epoch; checkpoints at steps 4 and 8, the
    best epoch's student in best/). Tests work on copies (:func:`_copy`)."""
    workdir = str(tmp_path_factory.mktemp("kd") / "full")
    return workdir, train.train_and_evaluate(_config("ce"), workdir, datasets=datasets)


@pytest.fixture(scope="module")
def full3(datasets, tmp_path_factory):
    """The same run trained for 3 epochs without interruption."""
    workdir = str(tmp_path_factory.mktemp("kd") / "full3")
    return workdir, train.train_and_evaluate(_config("ce", num_epochs=3), workdir,
                                             datasets=datasets)


def _copy(run, tmp_path, name="run"):
    dst = str(tmp_path / name)
    shutil.copytree(run[0], dst)
    return dst


def _state(workdir, step):
    """The saved TrainState leaves and meta of checkpoint ``step`` (read as saved)."""
    mngr = checkpoints.manager(workdir, subdir=train.LAST_SUBDIR, read_only=True)
    try:
        state = checkpoints.read(mngr, step, state=None)["state"]
        return jax.tree.leaves(state), checkpoints.read_meta(mngr, step)
    finally:
        mngr.close()


def _steps(workdir, subdir=train.LAST_SUBDIR):
    path = os.path.join(workdir, subdir)
    return sorted(int(d) for d in os.listdir(path) if d.isdigit()) if os.path.isdir(
        path) else []


def _rows(workdir, prefix):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r for r in rows if any(k.startswith(prefix + "/") for k in r)]


def _largest_file(step_dir):
    return largest_file(pathlib.Path(step_dir))


def test_resume_is_exact_and_teacher_checks(datasets, full, tmp_path):
    c = _config("ce")
    part = train.train_and_evaluate(c, str(tmp_path / "cut"), datasets=datasets,
                                    stop_at_step=5)
    assert part["step"] == 5
    resumed = train.train_and_evaluate(c, str(tmp_path / "cut"), datasets=datasets)
    assert resumed["step"] == full[1]["step"] == 8 and full[1]["steps_per_epoch"] == 4
    a, _ = train.load_student(full[0], "last")
    b, meta = train.load_student(str(tmp_path / "cut"), "last")
    assert_same_leaves(jax.tree.leaves(a), jax.tree.leaves(b))
    assert resumed["best_acc"] == full[1]["best_acc"] and meta["model"] == "tiny4"
    assert 0.0 <= full[1]["best_acc"] <= 1.0 and full[1]["best_acc"] >= full[1]["last_acc"]

    # The trained model serves as a teacher; a config naming another architecture fails.
    kd = _config("kd")
    kd.teacher.workdirs = (full[0],)
    stacked = train.load_teachers(kd, (8, 8, 1), 10)
    assert jax.tree.leaves(stacked)[0].shape[0] == 1
    kd.teacher.model = "tiny8"
    with pytest.raises(ValueError, match="holds .*tiny4.*asks for .*tiny8"):
        train.load_teachers(kd, (8, 8, 1), 10)


# ------------------------------------------------------------------ corrupt checkpoints

@pytest.mark.parametrize("fault", [flip_bit, truncate])
def test_corrupt_latest_checkpoint_falls_back_to_the_good_one(datasets, full, tmp_path,
                                                              fault):
    """The newest step (8, the end of the run) is damaged: the run resumes from step 4
    with a warning, retrains epoch 2 and ends bitwise where the uninterrupted run did;
    the damaged step is kept in checkpoints/corrupt/8, and retention (keep 2) never drops
    a good step for it."""
    w = _copy(full, tmp_path)
    fault(_largest_file(os.path.join(w, "checkpoints", "8")))
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 8 in .* is corrupt "
                                            r"\(file .*\); moved to .*corrupt.*; using step 4"):
        res = train.train_and_evaluate(_config("ce"), w, datasets=datasets)
    assert res["step"] == 8 and res["best_acc"] == full[1]["best_acc"]
    assert res["last_acc"] == full[1]["last_acc"]
    assert _steps(w) == [4, 8] and os.path.isdir(os.path.join(w, "checkpoints", "corrupt",
                                                              "8"))
    got, meta = _state(w, 8)
    want, want_meta = _state(full[0], 8)
    assert_same_leaves(got, want)
    assert meta["history"] == want_meta["history"] and len(meta["history"]) == 2
    # best/ and the metrics agree with the resumed run: no duplicated steps.
    assert _steps(w, train.BEST_SUBDIR) == [4 * full[1]["best_epoch"]]
    assert [r["step"] for r in _rows(w, "train")] == [2, 4, 6, 8]
    assert [r["step"] for r in _rows(w, "test")] == [4, 8]


def test_corrupt_checkpoint_then_more_epochs_matches_an_uninterrupted_run(
        datasets, full, full3, tmp_path):
    """The user's case: the last step is truncated, then the run is continued to 3
    epochs (--config.num_epochs=3 --config.extend=True): it falls back to step 4 and ends
    bitwise like a 3-epoch run that was never interrupted (constant lr)."""
    w = _copy(full, tmp_path)
    truncate(_largest_file(os.path.join(w, "checkpoints", "8")))
    with pytest.warns(RuntimeWarning, match="step 8 .* is corrupt .*using step 4"):
        res = train.train_and_evaluate(_config("ce", num_epochs=3, extend=True), w,
                                       datasets=datasets)
    assert (res["step"], res["epoch"]) == (12, 3.0)
    got, meta = _state(w, 12)
    want, want_meta = _state(full3[0], 12)
    assert_same_leaves(got, want)
    assert meta["history"] == want_meta["history"] and len(meta["history"]) == 3
    assert (res["best_acc"], res["best_epoch"]) == (full3[1]["best_acc"],
                                                   full3[1]["best_epoch"])
    assert not any(np.isnan(v) for v in meta["history"])


def test_corrupt_best_is_taken_from_the_kept_checkpoints(datasets, full, tmp_path):
    """best/ damaged: loading the teacher uses the best epoch's step of checkpoints/
    (same student) with a warning; a resumed run writes best/ back."""
    w = _copy(full, tmp_path)
    best = _steps(w, train.BEST_SUBDIR)
    assert best == [4 * full[1]["best_epoch"]]
    want, _ = train.load_student(full[0], "best")
    flip_bit(_largest_file(os.path.join(w, train.BEST_SUBDIR, str(best[0]))))
    kd = _config("kd")
    kd.teacher.workdirs = (w,)
    with pytest.warns(RuntimeWarning) as record:
        stacked = train.load_teachers(kd, (8, 8, 1), 10)
    msgs = [str(r.message) for r in record]
    assert any(re.search(r"checkpoint step %d in .*best/checkpoints is corrupt .*no good "
                         r"checkpoint left" % best[0], m) for m in msgs), msgs
    assert any(re.search(r"no good best/ checkpoint; using the best epoch's .*step %d"
                         % best[0], m) for m in msgs), msgs
    assert_same_leaves(jax.tree.leaves(stacked),
                       [np.asarray(x)[None] for x in jax.tree.leaves(want)])
    assert os.path.isdir(os.path.join(w, train.BEST_SUBDIR, "corrupt", str(best[0])))
    with pytest.warns(RuntimeWarning, match=r"restored it from checkpoints/ step %d" % best[0]):
        res = train.train_and_evaluate(_config("ce", num_epochs=3, extend=True), w,
                                       datasets=datasets)
    assert res["best_acc"] >= full[1]["best_acc"]
    got, meta = train.load_student(w, "best")
    assert meta["best_acc"] == res["best_acc"] and meta["step"] == 4 * res["best_epoch"]
    if res["best_epoch"] == full[1]["best_epoch"]:
        assert_same_leaves(jax.tree.leaves(got), jax.tree.leaves(want))


def test_fallback_keeps_a_newer_best_until_the_run_makes_it_again(datasets, tmp_path,
                                                                  monkeypatch):
    """Scripted test accuracies 0.5, 0.3, 0.7: best/ moved from epoch 1 to epoch 3 (step
    12) and checkpoints/ keeps steps 8 and 12. Step 12 is corrupt, so the run resumes at
    step 8, whose meta knows epoch 1 as the best, a student no longer kept anywhere. The
    epoch-3 student of best/ stays (nothing is lost, the teacher still loads) until the
    run trains epoch 3 again and saves it; best_acc and best/ then agree."""
    real = train.evaluate
    script = []
    monkeypatch.setattr(train, "evaluate",
                        lambda *a, **k: dict(real(*a, **k), acc=script.pop(0)))
    w = str(tmp_path / "w")
    script[:] = [0.5, 0.3, 0.7]
    train.train_and_evaluate(_config("ce", num_epochs=3), w, datasets=datasets)
    assert _steps(w) == [8, 12] and _steps(w, train.BEST_SUBDIR) == [12]
    assert _state(w, 8)[1]["best_step"] == 4
    want, _ = train.load_student(w, "best")
    flip_bit(_largest_file(os.path.join(w, "checkpoints", "12")))
    script[:] = []
    with pytest.warns(RuntimeWarning) as record:        # interrupted again before epoch 3
        train.train_and_evaluate(_config("ce", num_epochs=3), w, datasets=datasets,
                                 stop_at_step=10)
    assert not [r for r in record if "is lost" in str(r.message)]
    assert _steps(w, train.BEST_SUBDIR) == [12]
    got, meta = train.load_student(w, "best")
    assert_same_leaves(jax.tree.leaves(got), jax.tree.leaves(want))
    script[:] = [0.7]
    res = train.train_and_evaluate(_config("ce", num_epochs=3), w, datasets=datasets)
    assert (res["best_acc"], res["best_epoch"], res["step"]) == (0.7, 3, 12)
    assert _state(w, 12)[1]["history"] == [0.5, 0.3, 0.7]
    got, meta = train.load_student(w, "best")
    assert (meta["best_acc"], meta["best_step"]) == (0.7, 12)
    assert_same_leaves(jax.tree.leaves(got), jax.tree.leaves(want))   # bitwise re-made


def test_checkpoint_without_settings_record_is_resumed_with_a_warning(datasets, full,
                                                                      tmp_path, monkeypatch):
    """Checkpoints of the code before settings were recorded: compared on what their
    meta has (model, method, seed, ...), resumed with a warning; the next one records."""
    real = train._run_meta
    monkeypatch.setattr(train, "_run_meta",
                        lambda *a: {k: v for k, v in real(*a).items() if k != "settings"})
    w = str(tmp_path / "old")
    train.train_and_evaluate(_config("ce"), w, datasets=datasets, stop_at_step=4)
    monkeypatch.setattr(train, "_run_meta", real)
    assert "settings" not in _state(w, 4)[1]
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"\(step 4\) with other settings: seed: 0 -> 1"):
        train.train_and_evaluate(_config("ce", seed=1), w, datasets=datasets)
    with pytest.warns(RuntimeWarning, match=r"model checkpoint step 4 predates settings "
                                            r"records; only dataset, method, model, seed, "
                                            r"teacher could be compared"):
        res = train.train_and_evaluate(_config("ce"), w, datasets=datasets)
    assert res["step"] == 8 and _state(w, 8)[1]["settings"] == train.settings(_config("ce"))
    assert_same_leaves(_state(w, 8)[0], _state(full[0], 8)[0])


# ------------------------------------------------------------------------ NaN / inf

def test_nan_learning_rate_stops_at_step_1_and_saves_nothing(datasets, tmp_path):
    w = str(tmp_path / "nan")
    c = _config("ce")
    c.optim.lr = float("nan")                  # --config.optim.lr=nan
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"ce training stopped at step 1: l2_params is nan; nothing was "
                             r"saved after the last good checkpoint"):
        train.train_and_evaluate(c, w, datasets=datasets)
    assert _steps(w) == [] and _steps(w, train.BEST_SUBDIR) == []
    assert not os.path.exists(os.path.join(w, "metrics.jsonl")) or _rows(w, "train") == []


def test_divergence_keeps_the_last_good_checkpoint(datasets, full, tmp_path, monkeypatch):
    """NaN enters at step 6 (a poisoned batch): training stops there naming the step and
    the metric; steps 4 (checkpoints/ and best/) stay the last saved, all finite; the
    fixed run resumes from 4 and ends bitwise like the uninterrupted one."""
    step_fn = train.train_step

    def poisoned(state, teacher_vars, images, labels, key, *, cfg):
        if int(state.step) == 5:
            images = images * jnp.nan
        return step_fn(state, teacher_vars, images, labels, key, cfg=cfg)

    w = str(tmp_path / "div")
    monkeypatch.setattr(train, "train_step", poisoned)
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"ce training stopped at step 6: loss is nan"):
        train.train_and_evaluate(_config("ce"), w, datasets=datasets)
    assert _steps(w) == [4] and _steps(w, train.BEST_SUBDIR) == [4]
    for sub in (train.LAST_SUBDIR, train.BEST_SUBDIR):
        mngr = checkpoints.manager(w, subdir=sub, read_only=True)
        assert checkpoints.verify(mngr, 4) is None
        items = checkpoints.read(mngr, 4, student=None)["student"]
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(items))
        mngr.close()
    assert [r["step"] for r in _rows(w, "train")] == [2, 4]
    monkeypatch.setattr(train, "train_step", step_fn)
    res = train.train_and_evaluate(_config("ce"), w, datasets=datasets)
    assert res["step"] == 8 and res["best_acc"] == full[1]["best_acc"]
    assert_same_leaves(_state(w, 8)[0], _state(full[0], 8)[0])


# ------------------------------------------------------------------ settings on resume

@pytest.mark.parametrize("change,expected", [
    ({"seed": 1}, "seed: 0 -> 1"),
    ({"optim.lr": 0.1}, "optim.lr: 0.2 -> 0.1"),
    ({"batch_size": 8}, "batch_size: 16 -> 8"),
    ({"augment.pad": 2}, "augment.pad: 1 -> 2"),
    ({"seed": 1, "optim.lr": 0.1, "batch_size": 8},
     "batch_size: 16 -> 8; optim.lr: 0.2 -> 0.1; seed: 0 -> 1"),
])
def test_resume_refuses_other_settings(datasets, full, tmp_path, change, expected):
    w = _copy(full, tmp_path)
    before = sorted(os.listdir(w)), _rows(w, "test")
    c = _config("ce")
    for k, v in change.items():
        node, *rest = k.split(".")
        if rest:
            c[node][rest[0]] = v
        else:
            c[k] = v
    for extend in (False, True):
        c.extend = extend
        with pytest.raises(checkpoints.SettingsMismatchError) as err:
            train.train_and_evaluate(c, w, datasets=datasets)
        msg = str(err.value)
        assert f"holds a model checkpoint (step 8) with other settings: {expected}. Use a new" \
            " --workdir, or the saved settings" in msg, msg
    assert (sorted(os.listdir(w)), _rows(w, "test")) == before      # nothing touched


def test_resume_refuses_another_method_option(datasets, full, tmp_path):
    kd = _config("kd")
    kd.teacher.workdirs = (full[0],)
    w = str(tmp_path / "kd")
    train.train_and_evaluate(kd, w, datasets=datasets, stop_at_step=1)
    kd.method.temperature = 2.0
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"\(step 1\) with other settings: method.temperature: 4.0 -> 2.0"):
        train.train_and_evaluate(kd, w, datasets=datasets)
    kd.method.temperature = 4.0
    kd.teacher.checkpoint = "last"
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"teacher.checkpoint: 'best' -> 'last'"):
        train.train_and_evaluate(kd, w, datasets=datasets)


def test_more_epochs_need_extend_and_counters_continue(datasets, full, full3, tmp_path):
    w = _copy(full, tmp_path)
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"of another length: num_epochs: 2 -> 3. To continue it to the "
                             r"new length add --config.extend=True"):
        train.train_and_evaluate(_config("ce", num_epochs=3), w, datasets=datasets)
    with pytest.raises(ValueError, match=r"holds a run at epoch 2 \(step 8\); "
                                         r"config.num_epochs=1 would shorten it; accepted: "
                                         r"num_epochs >= 2"):
        train.train_and_evaluate(_config("ce", num_epochs=1, extend=True), w,
                                 datasets=datasets)
    res = train.train_and_evaluate(_config("ce", num_epochs=3, extend=True), w,
                                   datasets=datasets)
    assert (res["step"], res["epoch"]) == (12, 3.0)
    assert [(r["step"], r["test/epoch"]) for r in _rows(w, "test")] == [(4, 1), (8, 2),
                                                                         (12, 3)]
    assert [r["step"] for r in _rows(w, "train")] == [2, 4, 6, 8, 10, 12]
    got, meta = _state(w, 12)
    assert_same_leaves(got, _state(full3[0], 12)[0])
    assert meta["epoch"] == 3 and meta["history"][:2] == _state(full[0], 8)[1]["history"]
    assert res["best_acc"] == max(meta["history"]) == full3[1]["best_acc"]
    best, best_meta = train.load_student(w, "best")
    assert best_meta["best_acc"] == res["best_acc"]
    assert best_meta["step"] == 4 * res["best_epoch"]
    # Once extended, the same command is a no-op and reports the same numbers.
    again = train.train_and_evaluate(_config("ce", num_epochs=3, extend=True), w,
                                     datasets=datasets)
    assert (again["step"], again["best_acc"]) == (12, res["best_acc"])


# ------------------------------------------------------------------- bad values

@pytest.mark.parametrize("name,value,expected", [
    ("batch_size", 0, "config.batch_size must be an integer >= 1, got 0"),
    ("num_epochs", 0, "config.num_epochs must be an integer >= 1, got 0"),
    ("checkpoint_every_epochs", 0, "config.checkpoint_every_epochs must be an integer >= 1, "
                                   "got 0"),
    ("checkpoint_every_epochs", -1, "config.checkpoint_every_epochs must be an integer >= 1, "
                                    "got -1"),
    ("log_every", 0, "config.log_every must be an integer >= 1, got 0"),
    ("eval_batch_size", -5, "config.eval_batch_size must be an integer >= 1, got -5"),
    ("keep_checkpoints", 0, "config.keep_checkpoints must be an integer >= 1, got 0"),
    ("max_train", -1, "config.max_train must be an integer >= 0, got -1"),
    ("teacher_map", "pmap", "unknown config.teacher_map 'pmap'; valid: auto, vmap, map"),
    ("max_train", 8, "config.batch_size=16 is larger than the 8 training images "
                     "(config.max_train); accepted: 1 to 8"),
])
def test_bad_values_fail_before_any_work(tmp_path, name, value, expected):
    w = tmp_path / "w"
    with pytest.raises(ValueError) as err:
        train.train_and_evaluate(_config("ce", **{name: value}), str(w),
                                 datasets=("not", "loaded"))
    assert str(err.value) == expected
    assert not w.exists()


def test_empty_data_and_too_large_batches_are_refused(datasets, tmp_path):
    tr, te = datasets
    empty = tr._replace(images=tr.images[:0], labels=tr.labels[:0])
    with pytest.raises(ValueError, match=r"^the training split is empty \(0 examples\)"):
        train.train_and_evaluate(_config("ce"), str(tmp_path / "a"), datasets=(empty, te))
    with pytest.raises(ValueError, match=r"^the test split is empty"):
        train.train_and_evaluate(_config("ce"), str(tmp_path / "b"),
                                 datasets=(tr, te._replace(images=te.images[:0],
                                                           labels=te.labels[:0])))
    with pytest.raises(ValueError, match=r"config.batch_size=100 is larger than the 64 "
                                         r"training examples .*accepted: 1 to 64"):
        train.train_and_evaluate(_config("ce", batch_size=100), str(tmp_path / "c"),
                                 datasets=datasets)
    assert _steps(str(tmp_path / "a")) == _steps(str(tmp_path / "c")) == []


# ----------------------------------------------------------- missing teacher: the hint

def test_missing_teacher_hint_keeps_the_config_options_and_workdir(tmp_path):
    """``python -m jaxkd.train --config=configs/kd/kd.py:tiny`` without its teacher: exit 2
    with one line whose command trains that teacher with the same options (``:tiny``, not
    the full CIFAR-100 recipe) into the configured workdir, before any data are loaded."""
    teacher = str(tmp_path / "teacher_s0")
    out = subprocess.run(
        [sys.executable, "-m", "jaxkd.train", "--config=configs/kd/kd.py:tiny",
         f"--workdir={tmp_path / 'kd'}", f"--config.teacher.workdirs=('{teacher}',)"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    hint = (f"train it first with python -m jaxkd.train --config=configs/kd/teacher.py:tiny"
            f" --workdir={teacher}")
    assert f"no teacher ('best') checkpoints in '{teacher}'; {hint}" in lines[0], lines[0]
    assert _steps(str(tmp_path / "kd")) == []


def test_hints_for_several_missing_teachers(tmp_path):
    c = common.make("camkd", "tiny", num_teachers=3)
    assert [a.rsplit("/", 1)[-1] for a in c.teacher.train_configs] == [
        "teacher.py:tiny,seed=0", "teacher.py:tiny,seed=1", "teacher.py:tiny,seed=2"]
    assert common.make("kd", "fashion,seed=2").teacher.train_configs[0].endswith(
        "teacher.py:fashion,seed=2")
    assert common.make("kd").teacher.train_configs[0].endswith("configs/kd/teacher.py")
    c.teacher.workdirs = tuple(str(tmp_path / f"t{i}") for i in range(3))
    with pytest.raises(FileNotFoundError) as err:
        train.check_teachers(c)
    msg = str(err.value)
    for i in range(3):
        assert (f"teacher.py:tiny,seed={i} --workdir={tmp_path / f't{i}'}") in msg, msg


def test_sharded_step_equals_single_device(datasets):
    """4-device data parallel == 1 device: CA-MKD (2 vmapped teachers, connectors,
    gradients through the teachers' heads)."""
    assert jax.device_count() >= 4, "tests/conftest.py sets 4 host CPU devices"
    tr, _ = datasets
    tv = _teachers(2)
    x, y = tr.images[:16], tr.labels[:16]
    setup = train.build(_config("camkd", teacher_map="vmap"), (8, 8, 1), 10, 4,
                        teacher_vars=tv, mesh=mesh_lib.mesh_1d("data", 1))
    fn = jax.jit(train.loss_and_grads, static_argnames=("cfg",))
    out = {}
    for n, how in ((1, "vmap"), (4, "vmap")):
        mesh = mesh_lib.mesh_1d("data", n)
        rep, batch = mesh_lib.replicated(mesh), mesh_lib.sharded(mesh)
        xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
        loss, metrics, _, grads = fn(jax.device_put(setup.state, rep),
                                     jax.device_put(setup.teacher_vars, rep), xs, ys,
                                     jax.random.PRNGKey(1),
                                     cfg=setup.cfg._replace(teacher_map=how))
        assert len(xs.sharding.device_set) == n
        out[n, how] = (float(loss), jax.tree.leaves(jax.tree.map(np.asarray, grads)),
                       float(metrics["inter"]))
    ref = out[1, "vmap"]
    assert ref[2] > 0 and len(ref[1]) > 0
    for other in (out[4, "vmap"],):
        assert np.isclose(other[0], ref[0], rtol=1e-5)
        assert len(other[1]) == len(ref[1])
        for g1, g2 in zip(ref[1], other[1]):
            np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-6)


def test_teacher_map_loop_equals_vmap():
    """``teacher_map="map"`` (lax.map, the CPU default) computes what vmap does."""
    f = lambda v, h: jnp.tanh(h @ v["w"]) + v["b"]
    rng = np.random.default_rng(0)
    v = {"w": jnp.asarray(rng.normal(size=(3, 4, 5))), "b": jnp.asarray(rng.normal(size=(3, 5)))}
    h = jnp.asarray(rng.normal(size=(3, 2, 4)))
    np.testing.assert_allclose(train._over_teachers(f, "map", v, h),
                               train._over_teachers(f, "vmap", v, h), rtol=1e-12)
    with pytest.raises(ValueError, match="'vmap' or 'map'"):
        train._over_teachers(f, "pmap", v, h)


def test_bad_names_fail_early(datasets, tmp_path):
    bad = _config("ce")
    bad.method.name = "crd"
    with pytest.raises(ValueError, match="unknown distillation method 'crd'.*camkd"):
        train.train_and_evaluate(bad, str(tmp_path), datasets=datasets)
    with pytest.raises(ValueError, match="unknown student model 'resnet9'.*tiny4"):
        train.build(_config("ce", student="resnet9"), (8, 8, 1), 10, 4)
    with pytest.raises(ValueError, match="needs >= 2 teachers"):
        c = _config("camkd")
        c.teacher.workdirs = ("only_one",)
        train.build(c, (8, 8, 1), 10, 4)
    with pytest.raises(ValueError, match=r"config\.batch_size=15 does not split over the 4 "
                                         r"devices of the mesh; accepted: a multiple of 4"):
        train.build(_config("ce", batch_size=15, num_devices=4), (8, 8, 1), 10, 4)
    with pytest.raises(FileNotFoundError, match="train it first"):
        train.load_student(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="'tinny'; accepted: fashion, fashion_full, tiny, seed="):
        common.make("kd", "tinny")
    with pytest.raises(ValueError, match="exclude each other"):
        common.make("kd", "fashion,tiny")
    with pytest.raises(ValueError, match="seed='x' is not a valid int"):
        common.make("kd", "seed=x")


@pytest.mark.parametrize("name", ["teacher", "ce", "kd", "fitnet", "dskd", "camkd", "aver",
                                  "ebkd", "fitnet_mkd", "aekd"])
def test_configs_build(name):
    mod = importlib.import_module(f"configs.kd.{name}")
    assert "python -m jaxkd.train" in mod.__doc__
    for arg in ("", "fashion", "fashion_full", "tiny,seed=2"):
        c = mod.get_config(arg)
        assert c.method.name == ("ce" if name == "teacher" else name)
        if name in ("camkd", "aver", "ebkd", "fitnet_mkd", "aekd"):
            assert len(c.teacher.workdirs) == 3
    assert mod.get_config("fashion").dataset == "fashion_mnist"
    full = mod.get_config("fashion_full")
    assert (full.max_train, full.max_test, full.num_epochs) == (0, 0, 6)
    if full.teacher.workdirs:
        assert full.teacher.workdirs[0].startswith("runs/kd_fashion_full/teacher_s")
    assert mod.get_config("tiny,seed=2").seed == 2
    assert mod.get_config("").optim.milestones == (150, 180, 210)
