"""The shared ``python -m jaxdiff.<job> --config=... --workdir=...`` entry point."""
from __future__ import annotations

from typing import Callable


def run_job(run: Callable, report: Callable | None = None, *, what: str = "config file"):
    """Parse ``--config`` (an ml_collections file, ``path.py:arg`` allowed) and ``--workdir``,
    call ``run(config, workdir)``, then ``report(result, workdir)`` if given."""
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, what, lock_config=True)
    flags.DEFINE_string("workdir", None, "output directory")
    flags.mark_flags_as_required(["config", "workdir"])

    def main(argv):
        del argv
        result = run(flags.FLAGS.config, flags.FLAGS.workdir)
        if report is not None:
            report(result, flags.FLAGS.workdir)

    app.run(main)
