"""The shared ``python -m <package>.<job> --config=... --workdir=...`` entry point.

What a user sees:

- ``--help`` lists ``--config``, ``--workdir``, ``--verbose`` and the job's own flags.
- A user error (a bad option value, a missing file or checkpoint, a checkpoint of other
  settings, a workdir in use, a training that produced NaN) is one line on stderr,
  ``error: <what was wrong, what is accepted, what to do>``, and exit status 2. Python
  tracebacks are for bugs, or with ``--verbose``.
- The workdir is locked for the run (:mod:`jaxinfra.workdir`): a second run in the same
  folder is refused.
- ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` or ``--distributed``
  start JAX's multi-process runtime before anything else uses JAX
  (:mod:`jaxinfra.distributed`); without them a job runs on one process as before.
"""
from __future__ import annotations

import sys
from typing import Callable

#: Exceptions that report a user error (one line, exit 2) rather than a bug.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError, FloatingPointError, KeyError)
EXIT_USER_ERROR = 2


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(text.split()) or type(err).__name__


def run_job(run: Callable, report: Callable | None = None, *, what: str = "config file",
            define_flags: Callable | None = None, argv: list | None = None,
            multi_process: bool = False):
    """Parse ``--config`` (an ml_collections file, ``path.py:arg`` allowed) and ``--workdir``,
    call ``run(config, workdir)`` with the workdir locked, then ``report(result, workdir)``.

    Args:
      run: ``run(config, workdir) -> result``.
      report: optional ``report(result, workdir)`` (printing, summaries).
      what: help text of ``--config``.
      define_flags: optional ``define_flags(flags)`` declaring extra absl flags; ``run``
        reads them from ``absl.flags.FLAGS``.
      argv: the command line (default ``sys.argv``).
      multi_process: ``run`` is written for several processes (every process calls it;
        batches made with :func:`jaxinfra.mesh.global_batch`, writers process-0 aware).
        Other jobs refuse ``--num_processes`` > 1 (or a ``--distributed`` cluster of
        several processes) with a one-line error instead of running independent copies.

    Orbax's per-save INFO logging is silenced unless ``--verbosity`` is given. The
    multi-process flags (:mod:`jaxinfra.distributed`) are declared here, so every job has
    them; ``report`` runs on every process (print on :func:`distributed.is_main_process`
    only, where that matters).
    """
    from absl import app, flags
    from ml_collections import config_flags

    from jaxinfra import distributed
    from jaxinfra import workdir as workdir_lib

    argv = list(sys.argv if argv is None else argv)
    config_flags.DEFINE_config_file("config", None, f"{what}; `path.py:options` passes "
                                    "options to its get_config; override fields with "
                                    "--config.<field>=<value>", lock_config=True)
    flags.DEFINE_string("workdir", None, "output directory (created; resumes what it holds)")
    flags.DEFINE_boolean("verbose", False, "show Python tracebacks of user errors")
    distributed.define_flags(flags)
    if define_flags is not None:
        define_flags(flags)
    # --help shows the key flags of the main module (sys.argv[0]): make ours key flags.
    for name in ("config", "workdir", "verbose") + distributed.FLAG_NAMES:
        flags.FLAGS.register_key_flag_for_module(argv[0], flags.FLAGS[name])
    flags.mark_flags_as_required(["config", "workdir"])

    def main(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments {args[1:]}; use --config and "
                                 "--workdir")
        quiet_absl_logging()
        fl = flags.FLAGS
        try:
            # Before anything creates a JAX backend (the lock below may use one).
            settings = distributed.settings_from_flags(fl)
            if not multi_process:
                distributed.refuse_several_processes(settings, _job_name(argv[0]))
            distributed.initialize(settings)
            if not multi_process and distributed.process_count() > 1:
                distributed.refuse_several_processes(
                    distributed.Settings(None, distributed.process_count(), None),
                    _job_name(argv[0]))
            with workdir_lib.locked(fl.workdir):
                result = run(fl.config, fl.workdir)
                if report is not None:
                    report(result, fl.workdir)
        except USER_ERRORS + (workdir_lib.WorkdirLockedError,) as err:
            if fl.verbose:
                raise
            print(f"error: {_one_line(err)} (--verbose shows the traceback)",
                  file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    def parse_flags(args):
        # A bad flag (a misspelt --config.field, get_config rejecting `:tyni`) is one line
        # instead of absl's message with a traceback inside.
        try:
            return flags.FLAGS(args)
        except flags.Error as err:
            if "--verbose" in args:
                raise
            message = _flag_error_line(err)
        except (AttributeError, KeyError) as err:     # a --config.<field> that does not exist
            if "--verbose" in args:
                raise
            text = str(err.args[0]) if err.args else str(err)
            text = text.replace("\\n", "\n").replace("\\'", "'").strip("'\" ")
            message = "no such config field " + "; ".join(
                ln.strip().strip("'") for ln in text.splitlines() if ln.strip())
        print(f"error: {message} (--helpshort lists the flags)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

    app.run(main, argv=argv, flags_parser=parse_flags)


def _job_name(argv0: str) -> str:
    """``python -m <module>`` when run as a module, else the script's file name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return "python -m " + spec.name.removesuffix(".__main__")
    return argv0.rsplit("/", 1)[-1] or "this job"


def _flag_error_line(err: Exception) -> str:
    """The last line of a flag error: the nested exception's own message."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    last = lines[-1] if lines else type(err).__name__
    for prefix in ("ValueError: ", "KeyError: ", "AttributeError: ", "TypeError: ",
                   "FileNotFoundError: ", "ImportError: "):
        if last.startswith(prefix):
            last = last[len(prefix):]
    return last.strip("'\"")


def quiet_absl_logging():
    """Orbax logs every save at INFO; keep WARNING unless --verbosity was given."""
    from absl import flags
    from absl import logging as absl_logging
    if "verbosity" not in flags.FLAGS or not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
