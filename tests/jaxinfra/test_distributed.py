"""jaxinfra.distributed and the multi-process parts of jaxinfra.mesh, .metrics, .images,
.workdir and .checkpoints; jaxkd.train on two local processes.

The end-to-end tests start real ``jax.distributed`` runs: two processes on 127.0.0.1 (a
free port, CPU collectives), each with 2 host CPU devices, run the tiny jaxkd training of
distributed_kd_config.py through the shared entry point (distributed_kd_job.py), and are
compared with one process with 4 devices. Cross-process all-reduces (gloo) sum in another
order than the in-process ones, so the two layouts agree to float32 rounding, not
bitwise; the same layout is bitwise reproducible, so a two-process run stopped and resumed
equals an uninterrupted one exactly.
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
JOB = str(HERE / "distributed_kd_job.py")
CONFIG = str(HERE / "distributed_kd_config.py")
CLI_JOB = str(HERE / "cli_job.py")


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
                parts = [ref[mesh_lib.process_batch_slice(bsz, i, count)]
                         for i in range(count)]
                assert {len(p) for p in parts} == {bsz // count}
                np.testing.assert_array_equal(np.concatenate(parts), ref)
            seen.append(ref)
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(n))
    assert mesh_lib.process_batch_slice(12, 2, 3) == slice(8, 12)
    with pytest.raises(ValueError, match="batch size 6 does not split over 4 processes; "
                                         "accepted: a multiple of 4"):
        mesh_lib.process_batch_slice(6, 0, 4)
    with pytest.raises(ValueError, match="process_index=2 is out of range; accepted: 0 to 1"):
        mesh_lib.process_batch_slice(8, 2, 2)
    with pytest.raises(ValueError, match="batch 5 of size 8 needs 48 examples; the epoch "
                                         "has 40"):
        mesh_lib.batch_indices(np.arange(n), 5, 8)


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


def _launch(num_processes, devices_each, workdir, out, *extra):
    """Runs distributed_kd_job.py on ``num_processes`` local processes (each with
    ``devices_each`` CPU devices); returns their stderr texts."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each}")
    port = _free_port()
    procs = []
    for i in range(num_processes):
        dist = [f"--coordinator_address=127.0.0.1:{port}",
                f"--num_processes={num_processes}", f"--process_id={i}"]
        procs.append(subprocess.Popen(
            [sys.executable, JOB, f"--config={CONFIG}", f"--workdir={workdir}",
             f"--out={out}", *(dist if num_processes > 1 else []), *extra],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    errs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=240)
            errs.append(err)
            assert p.returncode == 0, err[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return errs


def _outputs(out, num_processes):
    infos = [json.loads((out / f"p{i}.json").read_text()) for i in range(num_processes)]
    leaves = [dict(np.load(out / f"p{i}.npz")) for i in range(num_processes)]
    return infos, leaves


def _rows(workdir):
    """metrics.jsonl without the timing column."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("train/steps_per_sec", None)
    return rows


def _run_files(workdir):
    """Files outside the checkpoint folders, and the checkpoint steps."""
    files = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                   if p.is_file() and p.relative_to(workdir).parts[0] not in (
                       "checkpoints", "best"))
    steps = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    return [f.split(".out.tfevents")[0] for f in files], steps


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process x 4 devices; two processes x 2 devices (an uninterrupted run, and a
    run stopped after update 5, both in the same processes); then two new processes
    resume the stopped run."""
    root = tmp_path_factory.mktemp("dist")
    _launch(1, 4, root / "one", root / "one_out")
    errs = _launch(2, 2, root / "two", root / "two_out", f"--cut_workdir={root / 'cut'}",
                   "--cut_at=5")
    cut_steps = sorted(p.name for p in (root / "cut" / "checkpoints").iterdir())
    _launch(2, 2, root / "cut", root / "cut_out")
    return root, errs, cut_steps


def test_two_processes_train_what_one_process_with_4_devices_trains(runs):
    root, _, _ = runs
    (one,), (ref,) = _outputs(root / "one_out", 1)
    infos, leaves = _outputs(root / "two_out", 2)
    assert (one["process_count"], one["device_count"]) == (1, 4)
    for i, info in enumerate(infos):
        assert (info["process_count"], info["device_count"],
                info["local_device_count"]) == (2, 4, 2)
        # Each process feeds its half of every batch (the mesh is process-major).
        sl = mesh_lib.process_batch_slice(16, i, 2)
        assert info["rows"] == list(range(sl.start, sl.stop))
        assert info["result"]["step"] == 8 and info["result"]["steps_per_epoch"] == 4
    # Every process holds the same numbers, and restores the same student.
    assert {k: v for k, v in infos[0]["result"].items() if k != "wall_seconds"} == {
        k: v for k, v in infos[1]["result"].items() if k != "wall_seconds"}
    assert sorted(leaves[0]) == sorted(leaves[1]) == sorted(ref) and len(ref) == 12
    for k in ref:
        np.testing.assert_array_equal(leaves[0][k], leaves[1][k])
    # 2 processes x 2 devices vs 1 x 4: float32 rounding of the cross-process sums only
    # (measured: at most 1.2e-7 after 8 updates, on parameters of size <= 1.02).
    worst = max(float(np.max(np.abs(leaves[0][k] - ref[k]))) for k in ref)
    assert worst <= 1e-6, worst
    assert max(float(np.max(np.abs(ref[k]))) for k in ref) > 0.5
    for k in ref:
        np.testing.assert_allclose(leaves[0][k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    a, b = _rows(root / "one"), _rows(root / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4, 4, 6, 8, 8]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            assert np.isclose(rb[k], ra[k], rtol=1e-6, atol=1e-7), (k, ra[k], rb[k])
    for k in ("best_acc", "last_acc", "best_epoch"):      # counts of correct test images
        assert infos[0]["result"][k] == one["result"][k]


def test_a_stopped_two_process_run_resumes_to_the_uninterrupted_result(runs):
    root, _, cut_steps = runs
    assert cut_steps == ["4", "5"]
    infos, leaves = _outputs(root / "cut_out", 2)
    _, full = _outputs(root / "two_out", 2)
    assert infos[0]["result"]["step"] == 8
    for k in full[0]:
        np.testing.assert_array_equal(leaves[0][k], full[0][k], err_msg=k)   # bitwise
        np.testing.assert_array_equal(leaves[1][k], full[0][k], err_msg=k)
    full_rows, cut_rows = _rows(root / "two"), _rows(root / "cut")
    # The stopped run also logged at its stop (step 5), so its step-6 row averages step 6
    # alone; every other row (evaluations included) is the uninterrupted run's.
    assert [r["step"] for r in cut_rows] == [2, 4, 4, 5, 6, 8, 8]
    assert [r for r in cut_rows if r["step"] not in (5, 6)] == [
        r for r in full_rows if r["step"] != 6]


def test_only_process_0_writes_the_run_files(runs):
    root, errs, _ = runs
    one, two = _run_files(root / "one"), _run_files(root / "two")
    assert one == two == (["metrics.jsonl", "tb/events"], ["4", "8"])
    assert len(_rows(root / "two")) == len(_rows(root / "one")) == 6   # no row twice
    assert not (root / "two" / workdir_lib.LOCK_FILE).exists()
    # Orbax wrote each process's part; process 0's integrity record covers them all.
    mngr = checkpoints.manager(str(root / "two"), read_only=True)
    try:
        for step in (4, 8):
            record = json.loads((root / "two" / "checkpoints" / str(step) /
                                 checkpoints.INTEGRITY_FILE).read_text())["sha256"]
            assert any("process_1" in name for name in record), sorted(record)
            assert checkpoints.verify(mngr, step) is None
    finally:
        mngr.close()
    assert all("Traceback" not in e for e in errs)
