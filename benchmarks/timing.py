"""Timing helpers shared by the peer benchmarks (no domain package imported here).

- :func:`time_interleaved`: several callables timed in alternation (median, min, count),
  so a slowdown of a shared machine hits every side alike.
- :func:`cpu_ticks`, :func:`cpu_busy_fraction`, :func:`others_busy_fraction`: how busy
  the CPUs were before and during the timings (Linux ``/proc``; None elsewhere), for the
  reports to say whether the numbers mean anything.
- :func:`package_version`: an installed distribution's version, or None.

Used by benchmarks/kdiffusion_vs_jaxdiff.py and benchmarks/kd_step_torch.py.
"""
from __future__ import annotations

import importlib.metadata
import statistics
import time

__all__ = ["cpu_busy_fraction", "cpu_ticks", "others_busy_fraction", "package_version",
           "time_interleaved"]


def cpu_ticks():
    """(busy, total) clock ticks of all CPUs and this process's own (user + system)
    ticks, from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:9]]
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = int(fields[11]) + int(fields[12])          # utime + stime
    except (OSError, ValueError, IndexError):
        return None
    total = sum(v)
    return total - v[3] - v[4], total, own


def cpu_busy_fraction(interval_s: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over ``interval_s`` (Linux), else None.

    Taken before the run starts: other processes competing for the CPUs make both
    sides' timings (torch's most: its threads wait on each other) meaningless.
    """
    a = cpu_ticks()
    time.sleep(interval_s)
    b = cpu_ticks()
    if a is None or b is None:
        return None
    return (b[0] - a[0]) / max(b[1] - a[1], 1)


def others_busy_fraction(start, end) -> float | None:
    """Fraction of all CPUs that processes other than this one kept busy between two
    ``cpu_ticks()`` readings (ideally ~0 for the timings to mean anything)."""
    if start is None or end is None:
        return None
    busy, total, own = (e - s for s, e in zip(start, end))
    return max(busy - own, 0) / max(total, 1)


def time_interleaved(fns: dict, *, min_repeats: int, max_repeats: int,
                     min_total_s: float) -> dict:
    """Times several callables in alternation; returns {name: (median_s, min_s, repeats)}.

    Each round calls every function once (the order rotates between rounds), so a
    slowdown of the machine during the measurement hits all sides alike. Rounds go on
    until ``min_repeats`` are done and either all calls together took ``min_total_s``
    or ``max_repeats`` rounds ran.
    """
    names = list(fns)
    times = {n: [] for n in names}
    rounds, total = 0, 0.0
    while rounds < min_repeats or (total < min_total_s and rounds < max_repeats):
        k = rounds % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            fns[n]()
            dt = time.perf_counter() - t0
            times[n].append(dt)
            total += dt
        rounds += 1
    return {n: (statistics.median(t), min(t), len(t)) for n, t in times.items()}


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
