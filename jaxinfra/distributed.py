"""JAX's multi-process runtime for every ``python -m`` job: flags, start-up, who writes.

Every job started through :func:`jaxinfra.cli.run_job` accepts

    --coordinator_address=HOST:PORT --num_processes=N --process_id=I
        start ``jax.distributed`` explicitly (process I of N; process 0 listens on PORT);
    --distributed
        ``jax.distributed.initialize()`` with JAX's automatic cluster detection (Cloud TPU
        pod slices, SLURM, Open MPI).

Without them (or with ``--num_processes=1``) nothing is started and a job runs as before.
Only jobs written for several processes (``run_job(..., multi_process=True)``: jaxkd.train,
jaxkd.kt, jaxdiff.train, jaxdiff.noisy_classifier, jaxgraph.kge, jaxgraph.train,
jaxgraph.oad) accept more than one; the others
refuse with a one-line error rather than run N independent copies into one workdir.
The runtime is started before any JAX backend is created. On CPU, cross-process
collectives need an implementation: JAX 0.10 accepts ``gloo``, ``mpi`` and ``megascale``
for ``jax_cpu_collectives_implementation`` and defaults to ``gloo``; when it is unset
(older versions), :func:`initialize` sets ``gloo`` unless the platforms exclude the CPU.

Who writes (one copy of every file in a shared workdir): process 0 writes the metrics,
TensorBoard events, figures, JSON summaries, the checkpoints' integrity records and the
workdir lock; every process takes part in Orbax's checkpoint saves and restores (Orbax
writes each array shard once). :func:`is_main_process` is what writers ask.

The helpers never start a backend on their own: without an initialized runtime they
report a single process (index 0 of 1), so importing or calling them leaves a
single-process job exactly as it was.
"""
from __future__ import annotations

import re
import sys
from typing import NamedTuple

__all__ = ["Settings", "parse_settings", "define_flags", "settings_from_flags", "initialize",
           "refuse_several_processes",
           "cpu_collectives_choice", "process_index", "process_count", "is_main_process",
           "broadcast_flag", "all_true", "barrier", "write_json"]

FLAG_NAMES = ("coordinator_address", "num_processes", "process_id", "distributed")
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d+)$")


class Settings(NamedTuple):
    """How to start ``jax.distributed`` (all None with ``auto``: JAX detects them).

    Attributes:
      coordinator_address: "HOST:PORT" of process 0's coordinator, or None.
      num_processes: N >= 2, or None.
      process_id: 0 <= I < N, or None.
      auto: ``--distributed``: ``jax.distributed.initialize()`` without arguments.
    """
    coordinator_address: str | None
    num_processes: int | None
    process_id: int | None
    auto: bool = False


def parse_settings(coordinator_address: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None, distributed: bool = False
                   ) -> Settings | None:
    """Checks the four flags' values.

    Returns:
      None for a single process (no flag, or ``--num_processes=1`` with process 0), else
      the :class:`Settings` to start with.

    Raises:
      ValueError: one line naming the bad value and the accepted ones.
    """
    address = (coordinator_address or "").strip() or None
    if distributed:
        if address is not None or num_processes is not None or process_id is not None:
            raise ValueError("--distributed detects the cluster itself; accepted: either "
                             "--distributed alone, or --coordinator_address=HOST:PORT "
                             "--num_processes=N --process_id=I")
        return Settings(None, None, None, auto=True)
    if address is None:
        if num_processes is not None or process_id is not None:
            given = "--num_processes" if num_processes is not None else "--process_id"
            raise ValueError(f"{given} needs --coordinator_address=HOST:PORT (process 0's "
                             "host and a free port), or use --distributed for automatic "
                             "cluster detection")
        return None
    match = _ADDRESS.match(address)
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"--coordinator_address={address!r} is not HOST:PORT; accepted: a "
                         "host name or IP address, a colon and a port 1-65535 (e.g. "
                         "10.0.0.1:1234)")
    if num_processes is None or process_id is None:
        missing = "--num_processes" if num_processes is None else "--process_id"
        raise ValueError(f"--coordinator_address={address} needs {missing} too; accepted: "
                         "--coordinator_address=HOST:PORT --num_processes=N --process_id=I")
    if int(num_processes) < 1:
        raise ValueError(f"--num_processes={num_processes} is not a process count; "
                         "accepted: an integer >= 1")
    if not 0 <= int(process_id) < int(num_processes):
        raise ValueError(f"--process_id={process_id} is out of range; accepted: 0 to "
                         f"{int(num_processes) - 1} (--num_processes={num_processes})")
    if int(num_processes) == 1:
        return None
    return Settings(address, int(num_processes), int(process_id))


def define_flags(flags) -> None:
    """Declares the four flags on ``absl.flags`` (done by :func:`jaxinfra.cli.run_job`)."""
    flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0's coordinator "
                        "(several processes; with --num_processes and --process_id)")
    flags.DEFINE_integer("num_processes", None, "number of processes of the job")
    flags.DEFINE_integer("process_id", None, "this process's index, 0 to num_processes - 1")
    flags.DEFINE_boolean("distributed", False, "start jax.distributed with automatic "
                         "cluster detection (Cloud TPU pod slices, SLURM, Open MPI)")


def settings_from_flags(values) -> Settings | None:
    """:func:`parse_settings` of parsed absl flags (``absl.flags.FLAGS``)."""
    return parse_settings(values.coordinator_address, values.num_processes,
                          values.process_id, values.distributed)


def refuse_several_processes(settings: Settings | None, job: str) -> None:
    """For a job written for one process: a ValueError when ``settings`` ask for several
    (an explicit ``--num_processes`` > 1, or a detected cluster of several)."""
    if settings is None or settings.auto or (settings.num_processes or 1) <= 1:
        return
    raise ValueError(f"{job or 'this job'} runs on one process only, got --num_processes="
                     f"{settings.num_processes}; accepted: --num_processes=1 or no "
                     "multi-process flags (jobs ready for several processes pass "
                     "multi_process=True to jaxinfra.cli.run_job, e.g. jaxkd.train)")


def cpu_collectives_choice(platforms: str | None, current: str | None) -> str | None:
    """The CPU collectives implementation to set before starting, or None to leave it.

    Args:
      platforms: ``jax_platforms`` ("" or None: JAX picks; else a comma-separated list).
      current: ``jax_cpu_collectives_implementation`` now (None: none).

    Returns:
      "gloo" when the CPU may run the job and no implementation is set; else None.
    """
    names = [p.strip() for p in (platforms or "").split(",") if p.strip()]
    if current or (names and "cpu" not in names):
        return None
    return "gloo"


def initialize(settings: Settings | None, *, start=None) -> bool:
    """Starts ``jax.distributed`` per ``settings`` (None: nothing to do).

    Must come before anything creates a JAX backend (``jax.devices()``, a computation,
    ``jax.device_put``).

    Args:
      settings: from :func:`parse_settings`.
      start: the starter (default ``jax.distributed.initialize``; tests pass a fake).

    Returns:
      Whether a runtime was started.

    Raises:
      RuntimeError: a backend already exists (a bug: something used JAX too early).
      ValueError: ``--distributed`` found no cluster to join.
    """
    if settings is None:
        return False
    import jax
    start = start or jax.distributed.initialize
    choice = cpu_collectives_choice(jax.config.jax_platforms,
                                    jax.config.jax_cpu_collectives_implementation)
    if choice is not None:
        jax.config.update("jax_cpu_collectives_implementation", choice)
    if settings.auto:
        start()
    else:
        start(coordinator_address=settings.coordinator_address,
              num_processes=settings.num_processes, process_id=settings.process_id)
    return True


def _runtime_started() -> bool:
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def process_index() -> int:
    """This process's index (0 without a started runtime; never starts a backend)."""
    if not _runtime_started():
        return 0
    import jax
    return int(jax.process_index())


def process_count() -> int:
    """The number of processes (1 without a started runtime; never starts a backend)."""
    if not _runtime_started():
        return 1
    import jax
    return int(jax.process_count())


def is_main_process() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return process_index() == 0


def progress_bar(iterable=None, *, enabled: bool = True, **tqdm_kwargs):
    """A tqdm bar shown by process 0 only, and only when ``enabled`` (config.progress)."""
    from tqdm import tqdm
    return tqdm(iterable, disable=not enabled or not is_main_process(), **tqdm_kwargs)


def broadcast_flag(value: bool) -> bool:
    """Process 0's ``value`` on every process (every process must call it)."""
    if process_count() == 1:
        return bool(value)
    import numpy as np
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(value))))


def all_true(value: bool) -> bool:
    """Whether ``value`` holds on every process (every process must call it)."""
    if process_count() == 1:
        return bool(value)
    import numpy as np
    from jax.experimental import multihost_utils
    return bool(np.all(multihost_utils.process_allgather(np.int32(bool(value)))))


def barrier(name: str) -> None:
    """Waits until every process reached ``barrier(name)`` (no-op on a single process)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def write_json(path: str, obj, *, indent: int = 1) -> bool:
    """Writes ``obj`` as JSON to ``path`` on process 0 (atomically: a temporary file
    renamed); other processes write nothing. Returns whether this process wrote."""
    if not is_main_process():
        return False
    import json
    import os
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)
    return True
