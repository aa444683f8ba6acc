"""Guards shared by jaxkd's two trainers (:mod:`jaxkd.train` and :mod:`jaxkd.kt`): config
values checked before any work, the settings check of a resume, and the metrics of a run
rolled back to its resumed checkpoint.

The checkpoints themselves (SHA-256 records, fallback to the newest good step, refusal of
non-finite states, the settings comparison) are :mod:`jaxinfra.checkpoints`; this module
only adds what both jaxkd trainers need around them.
"""
from __future__ import annotations

import json
import os
import warnings

from jaxinfra import checkpoints

__all__ = ["check_int", "check_choice", "check_resumable", "truncate_metrics"]


def _get(config, name):
    node = config
    for part in name.split("."):
        node = node[part]
    return node


def check_int(config, name: str, minimum: int = 1) -> int:
    """``config.<name>`` (dotted) as an int; a ValueError naming the value and the accepted
    ones when it is not an integer >= ``minimum``."""
    value = _get(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config.{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(config, name: str, valid) -> str:
    """``config.<name>``; a ValueError naming the valid values when it is not one."""
    value = _get(config, name)
    if value not in tuple(valid):
        raise ValueError(f"config.{name} must be one of {', '.join(map(repr, valid))}; "
                         f"got {value!r}")
    return value


def check_resumable(mngr, settings: dict, *, length_key: str, extend: bool, what: str,
                    workdir: str, legacy: dict | None = None):
    """Compares the settings of ``mngr``'s newest good checkpoint with ``settings`` before
    anything is loaded or compiled (corrupt newer steps are moved aside with a warning).

    Same rules and messages as :func:`jaxinfra.checkpoints.resume` (which the trainers
    call afterwards to restore the state): every setting must agree; ``length_key`` (the
    run's length, e.g. ``num_epochs``) may differ only with ``extend``.

    A checkpoint written before settings were recorded (no ``settings`` in its meta) is
    compared on the ``legacy`` entries its meta has, with a warning that the rest cannot
    be checked.

    Returns:
      ``(step, saved meta)`` of the checkpoint to resume, or ``(None, None)``.

    Raises:
      SettingsMismatchError: the checkpoint was written with other settings.
    """
    step = checkpoints.latest_good(mngr)
    if step is None:
        return None, None
    saved = checkpoints.read_meta(mngr, step)
    if "settings" not in saved:
        legacy = {k: v for k, v in (legacy or {}).items() if k in saved}
        diffs = checkpoints.differences({k: saved[k] for k in legacy}, legacy)
        if diffs:
            raise checkpoints.SettingsMismatchError(
                f"{workdir!r} holds a {what} checkpoint (step {step}) with other settings: "
                f"{'; '.join(diffs)}. Use a new --workdir, or the saved settings")
        warn(f"{workdir!r}: {what} checkpoint step {step} predates settings records; only "
             f"{', '.join(sorted(legacy)) or 'nothing'} could be compared. Its next "
             "checkpoint records them all")
        return step, saved
    diffs = checkpoints.differences(saved["settings"], settings)
    length = [d for d in diffs if d.split(":")[0] == length_key]
    if length and len(length) == len(diffs) and not extend:
        raise checkpoints.SettingsMismatchError(
            f"{workdir!r} holds a {what} run (checkpoint at step {step}) of another "
            f"length: {'; '.join(length)}. To continue it to the new length add "
            "--config.extend=True; otherwise use a new --workdir")
    if extend:
        diffs = [d for d in diffs if d not in length]
    if diffs:
        raise checkpoints.SettingsMismatchError(
            f"{workdir!r} holds a {what} checkpoint (step {step}) with other settings: "
            f"{'; '.join(diffs)}. Use a new --workdir, or the saved settings")
    return step, saved


def truncate_metrics(workdir: str, step: int) -> int:
    """Drops the rows of ``workdir/metrics.jsonl`` logged after ``step`` (a run resumed
    from an older checkpoint logs those steps again). Returns the number dropped."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row_step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                row_step = None              # a line cut by a crash: dropped
            if row_step is not None and row_step <= int(step):
                keep.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return dropped


def warn(message: str) -> None:
    """A RuntimeWarning (shown by the CLI, catchable by tests)."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)
