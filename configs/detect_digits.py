"""Detection benchmark of diffusion-generated 8x8 digits (``jaxdiff.detect``).

    python -m jaxdiff.detect --config=configs/detect_digits.py --workdir=runs/detect_digits

Every detector (DIRE reconstruction error, frequency/high-pass features, small CNN) is
trained on real digits vs images of the training U-Net (``model_workdir``, as made by
``python -m jaxdiff.train --config=configs/edm_digits.py --workdir=runs/edm_digits``)
sampled with one generator of ``train_generators`` (solver:NFE), then tested on held-out
real digits vs every generator in ``generators``: the training one (fresh samples), other
solvers / NFEs, and a second U-Net trained with another seed and width
(``second_workdir``). Missing U-Nets are trained first (2000 steps each: ~7 minutes on
2 idle cores; the second took 33 minutes on heavily shared cores). Writes
``workdir/detect.json``, ``detect.md``, ``detect_roc.png`` and, with ``publish=True``,
copies to benchmarks/results/detect_digits.json and docs/figures/detect_roc.png.
Runtime with both U-Nets trained: ~9 minutes on heavily shared cores (2 min CPU time).

The second model's training config (the edm_digits config with ``seed`` and
``base_channels`` overridden) can also be trained on its own:

    python -m jaxdiff.train --config=configs/detect_digits.py:second_model \\
        --workdir=runs/edm_digits_b

Options (comma-separated after the colon):
  tiny:          tiny U-Nets, few samples and steps (tests, smoke runs; seconds).
  second_model:  return the second U-Net's *training* config (for jaxdiff.train).
"""
import ml_collections

from configs import edm_digits
from jaxinfra import config_args

SECOND_SEED = 1
SECOND_WIDTH = 24


def second_model_config(tiny: bool = False, seed: int = SECOND_SEED,
                        base_channels: int = SECOND_WIDTH):
    """Training config of the second U-Net: ``configs/edm_digits.py`` with another
    ``seed`` and ``model.base_channels`` (everything else, incl. steps, unchanged)."""
    c = edm_digits.get_config("tiny" if tiny else None)
    c.seed = int(seed)
    c.model.base_channels = int(base_channels)
    return c


def get_config(arg=None):
    args = config_args.parse(arg, flags=("tiny", "second_model")).flags
    tiny = "tiny" in args
    if "second_model" in args:
        return second_model_config(tiny)

    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = "digits"
    # The U-Nets. A missing workdir is trained with these configs before the benchmark.
    c.model_workdir = "runs/edm_digits"
    c.model_config = edm_digits.get_config("tiny" if tiny else None)
    c.second_workdir = "runs/edm_digits_b"
    c.second_config = second_model_config(tiny)

    # Real digits (1797): a fixed permutation gives num_train detector-training and
    # num_test held-out images; each generated set has as many images as its real side.
    c.num_train = 600
    c.num_test = 400
    c.sample_batch = 500
    # Generated images are clipped to [-1, 1] and rounded to the data's 17 grey levels
    # (digits are 0..16), as saving them in the data's format would; 0: clip only.
    c.quantize_levels = 17
    # Generators "model:solver:NFE", model "a" (model_workdir) or "b" (second_workdir);
    # schedules as in jaxdiff.bench. Every detector is fitted once per training generator
    # (on fresh samples: the test sets are drawn separately).
    c.train_generators = ("a:heun:34", "a:euler:5")
    c.generators = ("a:heun:34", "a:ipndm:10", "a:heun:9", "a:euler:5", "a:dpmpp:5",
                    "b:heun:34", "b:ipndm:5")

    c.detectors = ("dire", "dire_cnn", "frequency", "cnn")
    # DIRE: |x - reconstruct(x)| with U-Net a, a single-step solver and num_steps
    # timestamps of the polynomial schedule [sigma_min, sigma_max]; "dire" reduces the
    # error map to features (logistic head), "dire_cnn" feeds log(error) to the CNN.
    c.dire = ml_collections.ConfigDict({
        "solver": "euler", "num_steps": 10, "sigma_min": 0.002, "sigma_max": 80.0,
        "rho": 7.0, "l2": 1e-2})
    c.frequency = ml_collections.ConfigDict({"l2": 1e-2})
    # The CNN (pixels for "cnn", log error maps for "dire_cnn"), AdamW, balanced batches.
    c.cnn = ml_collections.ConfigDict({
        "width": 16, "steps": 600, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4})

    c.publish = True          # copy JSON/figure to benchmarks/results and docs/figures
    c.progress = True
    if tiny:
        c.model_workdir = ""  # "" : workdir/model_a (fresh tiny model)
        c.second_workdir = ""  # "" : workdir/model_b
        c.num_train = 48
        c.num_test = 32
        c.sample_batch = 64
        c.train_generators = ("a:euler:3",)
        c.generators = ("a:euler:3", "a:heun:5", "b:euler:3")
        c.dire.num_steps = 3
        c.cnn.update({"width": 4, "steps": 20, "batch_size": 16})
        c.publish = False
        c.progress = False
    return c
