"""Train the noise-aware classifier of a guidance config on its own, on every device of
every process: ``python -m jaxdiff.noisy_classifier``.

    python -m jaxdiff.noisy_classifier --config=configs/guide_digits.py --workdir=runs/guide_digits

It trains ``config.noisy_classifier`` (:mod:`jaxdiff.training.noisy_classifier`) on the
training split of ``config.unet``'s data set into ``workdir/noisy_classifier``, where
``python -m jaxdiff.guide`` with the same config and workdir finds it finished and loads
it instead of training it on one device. Data parallel over a "data" mesh of
``config.noisy_classifier_devices`` devices (0: every device of every process); start the
same command on each process with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`` or ``--distributed`` (:mod:`jaxinfra.distributed`). Process 0 writes the
metrics and ``noisy_classifier/result.json`` (the training figures and the accuracy on
noised test images at ``config.noisy_eval_sigmas``).
"""
from __future__ import annotations

import json
import os

import jax

from jaxdiff.experiments import fid
from jaxdiff.models import noisy_classifier as nc
from jaxdiff.training import noisy_classifier as nc_training
from jaxinfra import distributed
from jaxinfra import mesh as mesh_lib

__all__ = ["SUBDIR", "classifier_settings", "noised_accuracy", "run", "main"]

#: Where the classifier goes inside the workdir (the folder ``jaxdiff.guide`` reads).
SUBDIR = "noisy_classifier"
#: The PRNG stream (``fold_in(PRNGKey(config.seed), .)``) of the noised test images.
ACCURACY_STREAM = 90


def classifier_settings(config) -> dict:
    """The training settings of a guidance config's classifier (this job's and
    ``jaxdiff.guide``'s: the same settings find the same checkpoint)."""
    return dict(config.noisy_classifier, progress=bool(config.progress))


def noised_accuracy(state, images, labels, config) -> dict:
    """``{str(sigma): accuracy}`` on the test images noised at ``config.noisy_eval_sigmas``
    (the same noise in this job and in ``jaxdiff.guide``)."""
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), ACCURACY_STREAM)
    acc = nc.accuracy_vs_sigma(state, images, labels, config.noisy_eval_sigmas, key=key)
    return dict(zip(map(str, config.noisy_eval_sigmas), map(float, acc)))


def run(config, workdir: str) -> dict:
    """Trains (or resumes, or loads when finished) the classifier; returns its figures."""
    mesh = mesh_lib.mesh_1d("data", int(config.noisy_classifier_devices))
    (x_tr, y_tr), (x_te, y_te) = fid.load_splits(config.unet)
    out = os.path.join(workdir, SUBDIR)
    state, info = nc_training.train(x_tr, y_tr, classifier_settings(config), out, mesh=mesh)
    result = {"steps_trained_now": info["steps_trained"], "step": info["step"],
              "seconds": info["seconds"], "devices": mesh.size,
              "processes": jax.process_count(), "train_loss": info.get("loss"),
              "train_accuracy": info.get("accuracy"),
              "test_accuracy_vs_sigma": noised_accuracy(state, x_te, y_te, config)}
    distributed.write_json(os.path.join(out, "result.json"), result)
    return result


def _report(result, workdir):
    del workdir
    if distributed.is_main_process():
        print(json.dumps(result))


def main():
    """The ``python -m`` entry point (flags: --config, --workdir, the multi-process
    flags)."""
    from jaxinfra.cli import run_job
    run_job(run, _report, what="guidance config file (configs/guide_*.py)",
            multi_process=True)


if __name__ == "__main__":
    main()
