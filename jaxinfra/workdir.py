"""One run per workdir: a lock file holding the process id and host.

    with workdir.locked(path):
        ...   # a second process asking for the same path gets WorkdirLockedError

A lock left by a process that no longer runs on this host is stale: it is replaced, with a
warning. A lock from another host cannot be checked and is refused; the message says
which file to remove once that run is known to be gone. The lock is re-entrant within a
process (a CLI and the trainer it calls may both take it).
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
    """Holds ``workdir/.lock`` for the duration of the ``with`` block.

    Raises:
      WorkdirLockedError: a live process (or one on another host) holds the workdir.
    """
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
