"""Train an EDM denoiser: ``python -m jaxdiff.train`` (the trainer is
:mod:`jaxdiff.training.edm`).

    python -m jaxdiff.train --config=configs/edm_digits.py --workdir=runs/edm_digits

Data parallel over every device of every process: start the same command on each
process with ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` or
``--distributed`` (:mod:`jaxinfra.distributed`).
"""
from __future__ import annotations

import json

import jax

from jaxdiff.training.edm import train_and_evaluate
from jaxinfra import distributed


def _print_result(result, workdir):
    del workdir
    if distributed.is_main_process():
        print(json.dumps(result))


def _train(config, workdir):
    if distributed.is_main_process():
        print(f"JAX processes: {jax.process_count()}, devices: {jax.devices()}")
    return train_and_evaluate(config, workdir)


def main():
    """The ``python -m`` entry point (flags: --config, --workdir, the multi-process
    flags)."""
    from jaxinfra.cli import run_job
    run_job(_train, _print_result, what="training config file", multi_process=True)


if __name__ == "__main__":
    main()
