"""The shared ``python -m <package>.<job> --config=... --workdir=...`` entry point."""
from __future__ import annotations

from typing import Callable


def run_job(run: Callable, report: Callable | None = None, *, what: str = "config file",
            define_flags: Callable | None = None):
    """Parse ``--config`` (an ml_collections file, ``path.py:arg`` allowed) and ``--workdir``,
    call ``run(config, workdir)``, then ``report(result, workdir)`` if given.

    Args:
      run: ``run(config, workdir) -> result``.
      report: optional ``report(result, workdir)`` (printing, summaries).
      what: help text of ``--config``.
      define_flags: optional ``define_flags(flags)`` declaring extra absl flags; ``run``
        reads them from ``absl.flags.FLAGS``.

    Orbax's per-save INFO logging is silenced unless ``--verbosity`` is given.
    """
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, what, lock_config=True)
    flags.DEFINE_string("workdir", None, "output directory")
    if define_flags is not None:
        define_flags(flags)
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]}; use --config and "
                                 "--workdir")
        quiet_absl_logging()
        result = run(flags.FLAGS.config, flags.FLAGS.workdir)
        if report is not None:
            report(result, flags.FLAGS.workdir)

    app.run(main)


def quiet_absl_logging():
    """Orbax logs every save at INFO; keep WARNING unless --verbosity was given."""
    from absl import flags
    from absl import logging as absl_logging
    if "verbosity" not in flags.FLAGS or not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
