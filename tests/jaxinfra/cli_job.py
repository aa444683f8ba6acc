"""A minimal job for the CLI tests: ``python cli_job.py --config=<file> --workdir=<dir>``."""
import time

from jaxinfra.cli import run_job


def run(config, workdir):
    if config.mode == "bad":
        raise ValueError("mode 'bad' is not accepted; valid: ok, sleep, bug")
    if config.mode == "nan":
        from jaxinfra import finite
        finite.check(3, {"loss": float("nan")}, what="test training")
    if config.mode == "bug":
        raise ZeroDivisionError("a bug")
    if config.mode == "sleep":
        time.sleep(config.seconds)
    return {"mode": config.mode}


def report(result, workdir):
    print("done", result["mode"])


if __name__ == "__main__":
    run_job(run, report, what="test config")
