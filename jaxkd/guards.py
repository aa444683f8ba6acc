"""The resume check shared by jaxkd's two trainers (:mod:`jaxkd.train`, :mod:`jaxkd.kt`):
the saved settings are compared before any data are loaded or anything is compiled, and
checkpoints written before settings were recorded are compared on what they hold.

The checkpoints themselves (SHA-256 records, fallback to the newest good step, refusal of
non-finite states, the settings comparison) are :mod:`jaxinfra.checkpoints`.
"""
from __future__ import annotations

import warnings

from jaxinfra import checkpoints

__all__ = ["check_resumable", "warn"]


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
    checkpoints.check_settings(saved["settings"], settings, step=step, what=what,
                               workdir=workdir, extend_keys=(length_key,), extend=extend)
    return step, saved


def warn(message: str) -> None:
    """A RuntimeWarning (shown by the CLI, catchable by tests)."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)
