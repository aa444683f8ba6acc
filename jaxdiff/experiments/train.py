"""Train an EDM denoiser: ``python -m jaxdiff.train`` (the trainer is
:mod:`jaxdiff.training.edm`).

    python -m jaxdiff.train --config=configs/edm_digits.py --workdir=runs/edm_digits
"""
from __future__ import annotations

import json

import jax

from jaxdiff.training.edm import train_and_evaluate


def _print_result(result, workdir):
    del workdir
    print(json.dumps(result))


def _train(config, workdir):
    print(f"JAX process {jax.process_index()}/{jax.process_count()}, devices: "
          f"{jax.devices()}")
    return train_and_evaluate(config, workdir)


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(_train, _print_result, what="training config file")


if __name__ == "__main__":
    main()
