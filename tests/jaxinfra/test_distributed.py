"""jaxinfra.distributed and the multi-process parts of jaxinfra.mesh, .metrics, .images,
.workdir and .checkpoints; jaxkd.train, jaxdiff.train and python -m jaxgraph.kge on two
local processes.

The end-to-end tests start real ``jax.distributed`` runs: two processes on 127.0.0.1 (a
free port, CPU collectives), each with 2 host CPU devices, run the tiny trainings of
distributed_config.py one after the other (jaxkd, jaxdiff.train, KGE with the entity table
split over all 4 devices) through the shared entry point (distributed_job.py), and are
compared with one process with 4 devices running the same. Cross-process all-reduces
(gloo) sum in another order than the in-process ones, so the two layouts agree to float32
rounding, not bitwise; the same layout is bitwise reproducible, so a two-process run
stopped and resumed equals an uninterrupted one exactly.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxinfra import checkpoints, distributed, images, metrics
from jaxinfra import mesh as mesh_lib
from jaxinfra import workdir as workdir_lib

HERE = pathlib.Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
JOB = str(HERE / "distributed_job.py")
CONFIG = str(HERE / "distributed_config.py")
CLI_JOB = str(HERE / "cli_job.py")


def _process_rows(global_batch, process_index, process_count):
    """The rows of a global batch that a process feeds on a process-major data axis with
    as many devices per process (what the trainers' meshes are)."""
    per = global_batch // process_count
    return slice(process_index * per, (process_index + 1) * per)


# ------------------------------------------------------------------------------ flags

@pytest.mark.parametrize("kw,expected", [
    ({}, None),
    ({"coordinator_address": "127.0.0.1:1234", "num_processes": 1, "process_id": 0}, None),
    ({"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
     distributed.Settings("10.0.0.1:1234", 4, 3)),
    ({"coordinator_address": "node-7.cluster:80", "num_processes": 2, "process_id": 0},
     distributed.Settings("node-7.cluster:80", 2, 0)),
    ({"distributed": True}, distributed.Settings(None, None, None, auto=True)),
])
def test_good_flags(kw, expected):
    assert distributed.parse_settings(**kw) == expected


@pytest.mark.parametrize("kw,message", [
    ({"coordinator_address": "127.0.0.1", "num_processes": 2, "process_id": 0},
     "--coordinator_address='127.0.0.1' is not HOST:PORT; accepted: a host name or IP "
     "address, a colon and a port 1-65535"),
    ({"coordinator_address": "h:70000", "num_processes": 2, "process_id": 0},
     "--coordinator_address='h:70000' is not HOST:PORT"),
    ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2},
     "--process_id=2 is out of range; accepted: 0 to 1 (--num_processes=2)"),
    ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0},
     "--num_processes=0 is not a process count; accepted: an integer >= 1"),
    ({"coordinator_address": "h:1", "num_processes": 2},
     "--coordinator_address=h:1 needs --process_id too"),
    ({"num_processes": 2, "process_id": 0},
     "--num_processes needs --coordinator_address=HOST:PORT"),
    ({"distributed": True, "num_processes": 2},
     "--distributed detects the cluster itself; accepted: either --distributed alone"),
])
def test_bad_flags_are_one_line_errors(kw, message):
    with pytest.raises(ValueError) as err:
        distributed.parse_settings(**kw)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("args,message", [
    (("--coordinator_address=localhost", "--num_processes=2", "--process_id=0"),
     "error: --coordinator_address='localhost' is not HOST:PORT"),
    (("--coordinator_address=localhost:5", "--num_processes=2", "--process_id=-1"),
     "error: --process_id=-1 is out of range; accepted: 0 to 1"),
    (("--coordinator_address=127.0.0.1:1", "--num_processes=2", "--process_id=0"),
     "error: cli_job.py runs on one process only, got --num_processes=2; accepted: "
     "--num_processes=1 or no multi-process flags"),
])
def test_every_job_has_the_flags_and_reports_bad_values_in_one_line(tmp_path, args, message):
    config = tmp_path / "c.py"
    config.write_text("import ml_collections\n\n\ndef get_config():\n"
                      "    return ml_collections.ConfigDict({'mode': 'ok', 'seconds': 0.0})\n")
    proc = subprocess.run([sys.executable, CLI_JOB, f"--config={config}",
                           f"--workdir={tmp_path / 'w'}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "w" / ".lock").exists()


def test_initialize_passes_the_flags_to_jax_and_does_nothing_on_one_process():
    calls = []
    start = lambda **kw: calls.append(kw)
    assert distributed.initialize(None, start=start) is False and calls == []
    assert distributed.initialize(distributed.Settings("h:9", 2, 1), start=start)
    assert distributed.initialize(distributed.parse_settings(distributed=True), start=start)
    assert calls == [{"coordinator_address": "h:9", "num_processes": 2, "process_id": 1}, {}]
    # JAX 0.10 already defaults to gloo: nothing was changed.
    assert jax.config.jax_cpu_collectives_implementation == "gloo"
    # No runtime was started: one process, index 0, the main one.
    assert (distributed.process_count(), distributed.process_index()) == (1, 0)
    assert distributed.is_main_process()


@pytest.mark.parametrize("platforms,current,expected", [
    (None, None, "gloo"), ("", None, "gloo"), ("cuda,cpu", None, "gloo"),
    ("tpu", None, None), ("cpu", "mpi", None), (None, "gloo", None)])
def test_cpu_collectives_choice(platforms, current, expected):
    assert distributed.cpu_collectives_choice(platforms, current) == expected


# -------------------------------------------------------------------- batches, meshes

def test_each_global_batch_is_the_same_for_1_2_and_4_processes():
    """Every process takes its rows of the batch of one permutation per (seed, epoch):
    the global batch, put together from the processes' rows, does not depend on their
    number, and the processes' rows never overlap."""
    n, bsz, spe = 40, 8, 5
    for epoch in range(2):
        perm = np.random.default_rng([3, epoch]).permutation(n)
        seen = []
        for step in range(spe):
            ref = mesh_lib.batch_indices(perm, step, bsz)
            assert ref.shape == (bsz,)
            np.testing.assert_array_equal(ref, perm[step * bsz:(step + 1) * bsz])
            for count in (1, 2, 4):
                parts = [ref[_process_rows(bsz, i, count)]
                         for i in range(count)]
                assert {len(p) for p in parts} == {bsz // count}
                np.testing.assert_array_equal(np.concatenate(parts), ref)
            seen.append(ref)
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    with pytest.raises(ValueError, match="batch 5 of size 8 needs 48 examples; the epoch "
                                         "has 40"):
        mesh_lib.batch_indices(np.arange(n), 5, 8)


def test_step_batches_cut_one_permutation_per_epoch_and_resume_anywhere():
    n, bsz = 10, 3                                       # 3 updates an epoch, 1 left out
    assert mesh_lib.steps_per_epoch(n, bsz) == 3
    got = list(mesh_lib.step_batches(7, n, bsz, 0, 7))
    assert [i for i, _ in got] == list(range(7))
    for i, idx in got:
        perm = mesh_lib.epoch_permutation(7, i // 3, n)
        np.testing.assert_array_equal(idx, perm[(i % 3) * 3:(i % 3) * 3 + 3])
    assert len(set(np.concatenate([idx for _, idx in got[:3]]))) == 9
    assert not np.array_equal(mesh_lib.epoch_permutation(7, 0, n),
                              mesh_lib.epoch_permutation(7, 1, n))
    resumed = list(mesh_lib.step_batches(7, n, bsz, 4, 7))      # from update 4 on
    for (i, a), (j, b) in zip(got[4:], resumed):
        assert i == j
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"batch size 11 does not fit the 10 training "
                                         r"examples \(an epoch would have no batch\); "
                                         r"accepted: 1 to 10"):
        mesh_lib.steps_per_epoch(10, 11)


def test_trainers_check_their_mesh_before_any_work(monkeypatch):
    """jaxdiff.train: a batch that does not split over the devices; python -m
    jaxgraph.kge: the unsharded (one-device) default on several processes."""
    from configs import edm_digits
    from configs.kge.kge import get_config as kge_config
    from jaxdiff.training import edm
    from jaxgraph.kge import experiment

    c = edm_digits.get_config("tiny")
    c.num_devices, c.batch_size = 0, 18
    with pytest.raises(ValueError, match=r"config.batch_size=18 does not split over the 4 "
                                         r"devices of the mesh; accepted: a multiple of 4"):
        edm.make_mesh(c)
    c.batch_size = 16
    assert edm.make_mesh(c).shape == {"data": 4}
    k = kge_config("tiny")
    experiment.check_config(k)                                   # one process: fine
    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    with pytest.raises(ValueError, match=r"config.mesh model=1, data=1 \(one device\) on 2 "
                                         r"processes; accepted: mesh.model \* mesh.data a "
                                         r"multiple of 2, e.g. --config.mesh.model=4"):
        experiment.check_config(k)
    k.mesh.model = 4
    experiment.check_config(k)


def test_global_batch_on_one_process_is_the_indexed_data():
    assert jax.device_count() >= 4, "tests/conftest.py sets 4 host CPU devices"
    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(20, 3, 2)).astype(np.float32), np.arange(20)
    idx = np.array([7, 3, 19, 0, 5, 11, 2, 8])
    for mesh in (mesh_lib.mesh_1d("data"), mesh_lib.mesh_2d(data=2, model=2)):
        sh = mesh_lib.sharded(mesh)
        np.testing.assert_array_equal(mesh_lib.local_rows(sh, 8), np.arange(8))
        x, y = mesh_lib.global_batch(sh, (images, labels), idx)
        np.testing.assert_array_equal(np.asarray(x), images[idx])
        np.testing.assert_array_equal(np.asarray(y), labels[idx])
        assert x.sharding == sh and len(x.sharding.device_set) == 4
        rows = {tuple(np.asarray(s.data)[:, 0, 0]) for s in x.addressable_shards}
        assert len(rows) == mesh.shape["data"]       # replicated over "model"
    assert mesh_lib.mesh_2d(model=4).shape == {"data": 1, "model": 4}
    assert mesh_lib.mesh_1d("data", 2).size == 2
    with pytest.raises(ValueError, match="model=3 does not divide the 4 devices; accepted: "
                                         "a divisor of 4"):
        mesh_lib.mesh_2d(model=3)
    with pytest.raises(ValueError, match="data=4 x model=2 is not the 4 devices; accepted: "
                                         "data=2"):
        mesh_lib.mesh_2d(data=4, model=2)


# ------------------------------------------------------------- writers on process > 0

@pytest.fixture
def other_process(monkeypatch):
    """This process acts as process 1 of 2 (whose peers are simulated)."""
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    monkeypatch.setattr(distributed, "barrier", lambda name: None)


def test_progress_bars_show_on_process_0_only_when_enabled(monkeypatch):
    assert not distributed.progress_bar(range(3), enabled=True).disable
    assert distributed.progress_bar(range(3), enabled=False).disable
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    assert distributed.progress_bar(range(3), enabled=True).disable


def test_processes_other_than_0_write_no_file(tmp_path, other_process, monkeypatch):
    work = tmp_path / "w"
    with metrics.MetricsLog(str(work), start_step=0) as log:
        row = log.write(3, {"loss": np.float32(0.5)})
    assert row == {"step": 3, "train/loss": 0.5}
    grid = images.save_image_grid(np.zeros((4, 2, 2)), str(work / "g.png"))
    assert grid.shape == (7, 7, 1) and grid[1, 1, 0] == 128
    assert distributed.write_json(str(work / "r.json"), {"a": 1}) is False
    # The lock: process 0's outcome decides (here: it got the lock), no file here.
    monkeypatch.setattr(distributed, "broadcast_flag", lambda ok: True)
    with workdir_lib.locked(str(work)):
        pass
    # A checkpoint save: Orbax writes (every process takes part), the integrity record
    # is process 0's.
    mngr = checkpoints.manager(str(work))
    assert checkpoints.save(mngr, 1, meta={"step": 1}, state={"w": np.ones(3)})
    mngr.close()
    assert (work / "checkpoints" / "1").is_dir()
    assert not (work / "checkpoints" / "1" / checkpoints.INTEGRITY_FILE).exists()
    assert not any(p.name in ("metrics.jsonl", "tb", "g.png", "r.json", ".lock")
                   for p in work.rglob("*")), sorted(work.rglob("*"))


def test_a_refused_lock_stops_every_process(tmp_path, other_process, monkeypatch):
    monkeypatch.setattr(distributed, "broadcast_flag", lambda ok: False)   # 0 was refused
    with pytest.raises(workdir_lib.WorkdirLockedError, match="is in use by another run "
                                                             "\\(process 0 of this run"):
        with workdir_lib.locked(str(tmp_path)):
            pytest.fail("entered a workdir process 0 could not lock")
    # Process 0 itself, refused: its error names the holder.
    monkeypatch.setattr(distributed, "process_index", lambda: 0)
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere",
                                                "since": "t"}))
    with pytest.raises(workdir_lib.WorkdirLockedError, match="host elsewhere"):
        with workdir_lib.locked(str(tmp_path)):
            pass
    out = [], []
    monkeypatch.setattr(distributed, "broadcast_flag", lambda ok: out[0].append(ok) or ok)
    (tmp_path / ".lock").unlink()
    with workdir_lib.locked(str(tmp_path)):
        out[1].append((tmp_path / ".lock").exists())
    assert out == ([True], [True]) and not (tmp_path / ".lock").exists()


# -------------------------------------------------------- two processes, end to end

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(num_processes, devices_each, workdir, out, *extra):
    """Starts distributed_job.py on ``num_processes`` local processes (each with
    ``devices_each`` CPU devices); returns (processes, log paths): stdout and stderr go to
    files, since a full pipe would block a process that its peers then wait for."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
    port = _free_port()
    procs, logs = [], [out.with_name(f"{out.name}_p{i}.log") for i in range(num_processes)]
    for i in range(num_processes):
        dist = [f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={num_processes}", f"--process_id={i}"]
        with open(logs[i], "w") as log:
            procs.append(subprocess.Popen(
                [sys.executable, JOB, f"--config={CONFIG}", f"--workdir={workdir}",
                 f"--out={out}", *(dist if num_processes > 1 else []), *extra],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs, logs


def _launch(*args):
    """:func:`_start`, then waits for every process; returns their logs."""
    return _wait(*_start(*args))


def _wait(procs, logs):
    """Waits for the processes of one :func:`_start` (each must exit 0); their logs."""
    try:
        for p, log in zip(procs, logs):
            p.wait(timeout=600)
            assert p.returncode == 0, log.read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [log.read_text() for log in logs]


def _outputs(out, num_processes):
    infos = [json.loads((out / f"p{i}.json").read_text()) for i in range(num_processes)]
    leaves = [dict(np.load(out / f"p{i}.npz")) for i in range(num_processes)]
    return infos, leaves


TIMING = ("steps_per_sec", "wall_seconds", "triples_per_sec", "epoch_seconds",
          "train_seconds", "seconds")


def _untimed(row: dict) -> dict:
    """A result or metrics row without its timings (nested dicts too)."""
    return {k: _untimed(v) if isinstance(v, dict) else v for k, v in row.items()
            if k.split("/")[-1] not in TIMING}


def _rows(workdir):
    """metrics.jsonl without the timing columns."""
    return [_untimed(json.loads(line))
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _run_files(workdir):
    """Files outside the checkpoint folders, and the checkpoint steps."""
    files = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                   if p.is_file() and p.relative_to(workdir).parts[0] not in (
                       "checkpoints", "best"))
    steps = sorted((p.name for p in (workdir / "checkpoints").iterdir()), key=int)
    return [f.split(".out.tfevents")[0] for f in files], steps


def _worst(a: dict, b: dict) -> float:
    """The largest absolute difference between two dicts of same-keyed arrays."""
    assert sorted(a) == sorted(b)
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)


def _assert_rows_close(a, b, rtol, atol):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert np.isclose(rb[k], ra[k], rtol=rtol, atol=atol), (ra["step"], k, ra[k],
                                                                    rb[k])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process x 4 devices and, at the same time, two processes x 2 devices, each
    running the seven tiny trainings in turn; the two processes also stop kd and edm runs
    early (edm's is resumed in the same processes); then two new processes resume the
    stopped kd run."""
    root = tmp_path_factory.mktemp("dist")
    one = _start(1, 4, root / "one", root / "one_out")
    try:
        logs = _launch(2, 2, root / "two", root / "two_out", f"--cut_workdir={root / 'cut'}")
    finally:
        _wait(*one)
    cut_steps = sorted(p.name for p in (root / "cut" / "kd" / "checkpoints").iterdir())
    _launch(2, 2, root / "cut", root / "cut_out", "--jobs=kd")
    return root, logs, cut_steps


def _layouts(runs, job):
    """(1 x 4 info, 1 x 4 leaves, 2 x 2 infos, 2 x 2 leaves) of ``job``; checks the
    layouts and that both processes end with the same results and leaves."""
    root = runs[0]
    (one,), (ref,) = _outputs(root / "one_out" / job, 1)
    infos, leaves = _outputs(root / "two_out" / job, 2)
    assert (one["process_count"], one["device_count"]) == (1, 4)
    for info in infos:
        assert (info["process_count"], info["device_count"],
                info["local_device_count"]) == (2, 4, 2)
    assert _untimed(infos[0]["result"]) == _untimed(infos[1]["result"])
    assert sorted(leaves[0]) == sorted(leaves[1]) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(leaves[0][k], leaves[1][k], err_msg=k)
    return one, ref, infos, leaves


def test_jaxkd_on_two_processes_trains_what_one_process_with_4_devices_trains(runs):
    root = runs[0]
    one, ref, infos, leaves = _layouts(runs, "kd")
    assert len(ref) == 12
    for i, info in enumerate(infos):
        # Each process feeds its half of every batch (the mesh is process-major).
        sl = _process_rows(16, i, 2)
        assert info["rows"] == list(range(sl.start, sl.stop))
        assert info["result"]["step"] == 8 and info["result"]["steps_per_epoch"] == 4
    assert one["rows"] == list(range(16))
    # 2 processes x 2 devices vs 1 x 4: float32 rounding of the cross-process sums only
    # (measured: at most 1.2e-7 after 8 updates, on parameters of size <= 1.02).
    worst = _worst(leaves[0], ref)
    assert worst <= 1e-6, worst
    assert max(float(np.max(np.abs(ref[k]))) for k in ref) > 0.5
    for k in ref:
        np.testing.assert_allclose(leaves[0][k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    a, b = _rows(root / "one" / "kd"), _rows(root / "two" / "kd")
    assert [r["step"] for r in a] == [2, 4, 4, 6, 8, 8]
    _assert_rows_close(a, b, rtol=1e-6, atol=1e-7)
    for k in ("best_acc", "last_acc", "best_epoch"):      # counts of correct test images
        assert infos[0]["result"][k] == one["result"][k]


def test_jaxdiff_train_on_two_processes_trains_what_one_process_with_4_devices_trains(
        runs):
    root = runs[0]
    one, ref, infos, leaves = _layouts(runs, "edm")
    for i, info in enumerate(infos):
        sl = _process_rows(16, i, 2)
        assert info["rows"] == list(range(sl.start, sl.stop))
    assert one["rows"] == list(range(16))
    for res in (one["result"], infos[0]["result"]):
        assert (res["step"], res["steps_per_epoch"], res["num_devices"]) == (4, 2, 4)
    # params, EMA and both Adam moments after 4 updates over 2 epochs of 32 images
    assert {k.split("'")[1] for k in ref} == {"step", "params", "ema_params", "opt_state"}
    # float32 rounding of the cross-process gradient sums, which Adam's first steps
    # (about lr * sign(gradient)) pass on to small parameters (measured: 3.2e-7 on
    # parameters of size <= 1.0; Adam's moments 1.5e-8; loss rows 7e-8 relative)
    worst = _worst(leaves[0], ref)
    assert worst <= 1e-6, worst
    assert max(float(np.max(np.abs(ref[k]))) for k in ref if "params" in k) > 0.5
    a, b = _rows(root / "one" / "edm"), _rows(root / "two" / "edm")
    assert [r["step"] for r in a] == [2, 4]
    _assert_rows_close(a, b, rtol=1e-5, atol=1e-7)
    assert all(r["l2_updates"] > 0 for r in a)


def test_kge_on_two_processes_splits_the_table_over_both_and_ranks_as_one(runs):
    root = runs[0]
    one, ref, infos, leaves = _layouts(runs, "kge")
    # 40 entities, 10 rows per device: process 0 holds rows 0-19, process 1 rows 20-39.
    assert one["entity_rows"] == [[0, 10], [10, 20], [20, 30], [30, 40]]
    assert [info["entity_rows"] for info in infos] == [[[0, 10], [10, 20]],
                                                       [[20, 30], [30, 40]]]
    assert infos[0]["mesh_processes"] == [0, 0, 1, 1]
    for res in (one["result"], infos[0]["result"]):
        assert res["mesh"] == {"model": 4, "data": 1} and res["epochs_done"] == 2
    assert ref["['entity']"].shape == (40, 8)
    # Lookups and scores are exact (one owner per row); only the replicated relation
    # table's gradient is a cross-process sum (measured: 1.2e-7 on embeddings of size
    # <= 1.94 after 2 epochs; the loss rows were bitwise equal).
    worst = _worst(leaves[0], ref)
    assert worst <= 1e-6, worst
    # The filtered ranks are counts summed over the 4 devices of both processes: the
    # metrics equal the one-process run's.
    for split in ("valid", "test"):
        assert _untimed(infos[0]["result"][split]) == _untimed(one["result"][split]), split
    assert 0 < one["result"]["test"]["mrr"] <= 1
    a, b = _rows(root / "one" / "kge"), _rows(root / "two" / "kge")
    assert [r["step"] for r in a] == [1, 2, 2, 2]
    _assert_rows_close(a, b, rtol=1e-5, atol=1e-7)


def test_gnn_and_oad_on_two_processes_train_what_one_process_trains(runs):
    root = runs[0]
    # GCN, full batch: replicated on one device per process, the same program as one
    # process's: bitwise.
    one, ref, infos, leaves = _layouts(runs, "gnn")
    for k in ref:
        np.testing.assert_array_equal(leaves[0][k], ref[k], err_msg=k)
    assert _untimed(infos[0]["result"]) == _untimed(one["result"])
    assert _rows(root / "one" / "gnn") == _rows(root / "two" / "gnn")
    # OAD, 2 seeds: one per process (vmapped over both in one process).
    one, ref, infos, leaves = _layouts(runs, "oad")
    assert one["result"]["seeds"] == infos[0]["result"]["seeds"] == [0, 1]
    worst = _worst(leaves[0], ref)
    assert worst <= 1e-5, worst
    # Accuracies: the same counts of correct nodes (float32 means summed in another order).
    for k, v in one["result"]["per_seed"].items():
        np.testing.assert_allclose(infos[0]["result"]["per_seed"][k], v, atol=1e-6,
                                   err_msg=k)
    _assert_rows_close(_rows(root / "one" / "oad"), _rows(root / "two" / "oad"),
                       rtol=1e-5, atol=1e-6)


def test_kt_on_two_processes_generates_and_translates_what_one_process_does(runs):
    root = runs[0]
    one, ref, infos, leaves = _layouts(runs, "kt")
    # 8 training pairs sharded 2 per device in both layouts; the 2 held-out networks are
    # padded to 4 keys on two processes (one pair per device), unsharded on one process.
    assert ref["['pairs']['train']['loss_large']"].shape == (8,)
    assert ref["['pairs']['val']['loss_large']"].shape == (2,)
    # The same pairs up to float32 rounding of another compilation (measured: 2.4e-7 on
    # losses of 2.3, 6e-8 elsewhere), and an SGD translator trained on them that stays
    # as close (Adam would scale rounding-level gradients of near-zero parameters to
    # lr-sized steps: 1e-3 measured).
    worst = _worst(leaves[0], ref)
    assert worst <= 1e-6, worst
    assert max(float(np.max(np.abs(ref[k]))) for k in ref if "translator" in k) > 0.1
    a, b = one["result"], infos[0]["result"]
    assert (a["epochs_done"], b["epochs_done"]) == (2, 2)
    for name, summary in a["accuracy"].items():       # counts of correct test images
        assert _untimed(b["accuracy"][name]) == _untimed(summary) or name == "ridge", name
    assert a["accuracy"]["ridge"]["mean"] == b["accuracy"]["ridge"]["mean"]
    _assert_rows_close(_rows(root / "one" / "kt"), _rows(root / "two" / "kt"),
                       rtol=1e-5, atol=1e-7)


def test_noisy_classifier_on_two_processes_trains_what_one_process_with_4_devices_does(
        runs):
    root = runs[0]
    one, ref, infos, leaves = _layouts(runs, "nc")
    for res in (one["result"], infos[0]["result"]):
        assert (res["step"], res["devices"]) == (12, 4)
    assert (one["result"]["processes"], infos[0]["result"]["processes"]) == (1, 2)
    # float32 rounding of the cross-process gradient sums (measured: 3.0e-8 on parameters
    # of size <= 0.8 after 12 Adam updates)
    worst = _worst(leaves[0], ref)
    assert worst <= 1e-6, worst
    assert max(float(np.max(np.abs(ref[k]))) for k in ref if "params" in k) > 0.5
    # accuracies on the noised held-out digits: counts of correct images
    assert (infos[0]["result"]["test_accuracy_vs_sigma"]
            == one["result"]["test_accuracy_vs_sigma"])
    _assert_rows_close(_rows(root / "one" / "nc" / "noisy_classifier"),
                       _rows(root / "two" / "nc" / "noisy_classifier"),
                       rtol=1e-5, atol=1e-6)


def test_a_stopped_two_process_run_resumes_to_the_uninterrupted_result(runs):
    root, _, cut_steps = runs
    # jaxkd: stopped after update 5, resumed by two new processes.
    assert cut_steps == ["4", "5"]
    infos, leaves = _outputs(root / "cut_out" / "kd", 2)
    _, full = _outputs(root / "two_out" / "kd", 2)
    assert infos[0]["result"]["step"] == 8
    for k in full[0]:
        np.testing.assert_array_equal(leaves[0][k], full[0][k], err_msg=k)   # bitwise
        np.testing.assert_array_equal(leaves[1][k], full[0][k], err_msg=k)
    full_rows, cut_rows = _rows(root / "two" / "kd"), _rows(root / "cut" / "kd")
    # The stopped run also logged at its stop (step 5), so its step-6 row averages step 6
    # alone; every other row (evaluations included) is the uninterrupted run's.
    assert [r["step"] for r in cut_rows] == [2, 4, 4, 5, 6, 8, 8]
    assert [r for r in cut_rows if r["step"] not in (5, 6)] == [
        r for r in full_rows if r["step"] != 6]
    # jaxdiff.train: stopped after update 3 (checkpoints 2 and 3), resumed from its
    # checkpoint by the same two processes: params, EMA and Adam state bitwise equal.
    infos, leaves = _outputs(root / "two_out" / "edm_resumed", 2)
    _, full = _outputs(root / "two_out" / "edm", 2)
    assert infos[0]["stopped_with"] == ["2", "3"] and infos[0]["result"]["step"] == 4
    for k in full[0]:
        np.testing.assert_array_equal(leaves[0][k], full[0][k], err_msg=k)
    full_rows, cut_rows = _rows(root / "two" / "edm"), _rows(root / "cut" / "edm")
    assert [r["step"] for r in cut_rows] == [2, 3, 4] and cut_rows[0] == full_rows[0]


def test_only_process_0_writes_the_run_files(runs):
    root, logs, _ = runs
    expected = {"kd": (["metrics.jsonl", "tb/events"], ["4", "8"]),
                "edm": (["metrics.jsonl", "tb/events"], ["2", "4"]),
                "kge": (["metrics.jsonl", "results.json", "tb/events"], ["1", "2"]),
                "gnn": (["metrics.jsonl", "result.json", "tb/events"], None),
                "oad": (["metrics.jsonl", "result.json", "tb/events"], None),
                "kt": (["metrics.jsonl", "pairs/settings.json", "pairs/train_00000.npz",
                        "pairs/val_00000.npz", "results.json", "tb/events"], ["1", "2"]),
                "nc/noisy_classifier": (["metrics.jsonl", "result.json", "tb/events"],
                                        ["6", "12"])}
    for job, (files, steps) in expected.items():
        got = _run_files(root / "two" / job)
        assert _run_files(root / "one" / job) == got and got[0] == files, job
        assert steps is None or got[1] == steps, job
        # no row written twice
        assert len(_rows(root / "two" / job)) == len(_rows(root / "one" / job)), job
    assert not (root / "two" / workdir_lib.LOCK_FILE).exists()
    # Orbax wrote each process's part; process 0's integrity record covers them all.
    for job, steps in (("kd", (4, 8)), ("edm", (2, 4)), ("kge", (1, 2))):
        mngr = checkpoints.manager(str(root / "two" / job), read_only=True)
        try:
            for step in steps:
                record = json.loads((root / "two" / job / "checkpoints" / str(step) /
                                     checkpoints.INTEGRITY_FILE).read_text())["sha256"]
                assert any("process_1" in name for name in record), (job, sorted(record))
                assert checkpoints.verify(mngr, step) is None
        finally:
            mngr.close()
    assert all("Traceback" not in log for log in logs)
