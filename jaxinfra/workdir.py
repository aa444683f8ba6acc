"""One run per workdir: a lock file holding the process id and host.

    with workdir.locked(path):
        ...   # a second process asking for the same path gets WorkdirLockedError

A lock left by a process that no longer runs on this host is stale: it is replaced, with a
warning. A lock from another host cannot be checked and is refused; the message says
which file to remove once that run is known to be gone. The lock is re-entrant within a
process (a CLI and the trainer it calls may both take it).

Several processes (:mod:`jaxinfra.distributed`): one run is one lock file, taken by
process 0 only (its pid and host, as above); the others write none. Process 0's outcome
is broadcast, so when the workdir is in use every process of the new run stops with the
same error instead of waiting for a peer that left. Every process must enter and leave
``locked`` together (as SPMD code does).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings

__all__ = ["locked", "WorkdirLockedError", "LOCK_FILE"]

LOCK_FILE = ".lock"


class WorkdirLockedError(RuntimeError):
    """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def locked(workdir: str):
    """Holds ``workdir/.lock`` for the duration of the ``with`` block (taken by process 0
    of a multi-process run; see the module doc).

    Raises:
      WorkdirLockedError: a live process (or one on another host) holds the workdir.
    """
    from jaxinfra import distributed
    if distributed.process_count() == 1:
        with _locked(workdir) as path:
            yield path
        return
    with contextlib.ExitStack() as stack:
        error, path = None, os.path.join(workdir, LOCK_FILE)
        if distributed.is_main_process():
            try:
                path = stack.enter_context(_locked(workdir))
            except WorkdirLockedError as err:
                error = err
        if not distributed.broadcast_flag(error is None):
            raise error or WorkdirLockedError(
                f"workdir {workdir!r} is in use by another run (process 0 of this run could "
                f"not take {path}; its error names the holder)")
        yield path


@contextlib.contextmanager
def _locked(workdir: str):
    """The lock file itself (one process)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read(path)
            if held.get("pid") == me["pid"] and held.get("host") == me["host"]:
                yield path                      # re-entrant: the outer holder releases
                return
            same_host = held.get("host") == me["host"]
            if same_host and isinstance(held.get("pid"), int) and not _alive(held["pid"]):
                warnings.warn(f"removing the stale lock of process {held['pid']} (no longer "
                              f"running) in {workdir}", RuntimeWarning, stacklevel=3)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                continue
            if not held:                        # being written right now, or garbage
                age = time.time() - os.path.getmtime(path)
                if age < 5.0:
                    time.sleep(0.1)
                    continue
            raise WorkdirLockedError(
                f"workdir {workdir!r} is in use by process {held.get('pid', '?')} on host "
                f"{held.get('host', '?')} since {held.get('since', '?')}; wait for that run "
                f"or use another --workdir (if that run is gone, remove {path})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield path
    finally:
        if _read(path).get("pid") == me["pid"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
