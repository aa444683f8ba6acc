"""jaxinfra.cli and jaxinfra.workdir: help, one-line user errors, the workdir lock."""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from jaxinfra import workdir as workdir_lib

JOB = str(pathlib.Path(__file__).with_name("cli_job.py"))
CONFIG = '''
import ml_collections
from jaxinfra import config_args


def get_config(arg=None):
    config_args.parse(arg, flags=("tiny",))
    return ml_collections.ConfigDict({"mode": "ok", "seconds": 0.0})
'''


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "job_config.py"
    path.write_text(CONFIG)
    return str(path)


def _run(*args, **kw):
    return subprocess.run([sys.executable, JOB, *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_help_shows_config_and_workdir():
    proc = _run("--help")
    out = proc.stdout + proc.stderr
    assert "--config" in out and "--workdir" in out and "verbose" in out


def test_missing_flags_are_a_clear_error():
    proc = _run()
    assert proc.returncode != 0
    assert "must have a value" in proc.stderr and "Traceback" not in proc.stderr


def test_runs_and_reports(config, tmp_path):
    proc = _run(f"--config={config}", f"--workdir={tmp_path / 'w'}")
    assert proc.returncode == 0, proc.stderr
    assert "done ok" in proc.stdout and not (tmp_path / "w" / ".lock").exists()


@pytest.mark.parametrize("args,match", [
    (("--config.mode=bad",), "error: mode 'bad' is not accepted; valid: ok, sleep, bug"),
    ((":tyni",), "error: unknown config option 'tyni'; accepted: tiny"),
    (("--config.mdoe=bad",), "mdoe"),
    (("--config.mode=nan",), "error: test training stopped at step 3: loss is nan"),
])
def test_user_errors_are_one_line(config, tmp_path, args, match):
    cfg_args = [a for a in args if a.startswith("--")]
    suffix = "".join(a for a in args if a.startswith(":"))
    proc = _run(f"--config={config}{suffix}", f"--workdir={tmp_path / 'w'}", *cfg_args)
    assert proc.returncode != 0 and match in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr


def test_verbose_shows_the_traceback_and_bugs_always_do(config, tmp_path):
    proc = _run(f"--config={config}", f"--workdir={tmp_path}", "--config.mode=bad",
                "--verbose")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = _run(f"--config={config}", f"--workdir={tmp_path}", "--config.mode=bug")
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr
    assert "Traceback" in proc.stderr


def test_second_run_in_the_same_workdir_is_refused(config, tmp_path):
    work = tmp_path / "w"
    first = subprocess.Popen([sys.executable, JOB, f"--config={config}", f"--workdir={work}",
                              "--config.mode=sleep", "--config.seconds=30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (work / ".lock").exists() and time.time() < deadline:
            time.sleep(0.1)
        proc = _run(f"--config={config}", f"--workdir={work}")
        assert proc.returncode == 2
        assert f"is in use by process {first.pid}" in proc.stderr, proc.stderr
    finally:
        first.kill()
        first.wait()


def test_stale_lock_is_replaced_with_a_warning(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".lock").write_text(json.dumps(
        {"pid": dead.pid, "host": os.uname().nodename, "since": "earlier"}))
    with pytest.warns(RuntimeWarning, match=f"stale lock of process {dead.pid}"):
        with workdir_lib.locked(str(tmp_path)):
            assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
            with workdir_lib.locked(str(tmp_path)):          # re-entrant
                pass
            assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()


def test_lock_of_another_host_is_refused(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere",
                                                "since": "t"}))
    with pytest.raises(workdir_lib.WorkdirLockedError, match="host elsewhere.*remove"):
        with workdir_lib.locked(str(tmp_path)):
            pass
