"""Guidance and conditioning on 8x8 digits (``jaxdiff.guide``): CFG, classifier guidance
with a noise-aware classifier, inpainting, ODE inversion and SDEdit, with measured figures.

    python -m jaxdiff.guide --config=configs/guide_digits.py --workdir=runs/guide_digits
    python -m jaxdiff.guide --config=configs/guide_digits.py --workdir=runs/guide_digits \\
        --config.task=inpaint                       # one task only
    python -m jaxdiff.guide --config=configs/guide_digits.py --workdir=runs/guide_digits \\
        --config.publish=True    # also copy the JSON and figures into the repository
    python -m jaxdiff.noisy_classifier --config=configs/guide_digits.py \\
        --workdir=runs/guide_digits   # the noise-aware classifier alone, on every device

Needs the class-conditional digits U-Net in ``unet_workdir``; it is trained first when
missing (the same run as
``python -m jaxdiff.train --config=configs/edm_digits.py:cond --workdir=runs/edm_digits_cond``,
2000 steps, 7-10 minutes on 2 idle cores). The noise-aware classifier
(:mod:`jaxdiff.training.noisy_classifier`, ``workdir/noisy_classifier``; or trained
beforehand by ``python -m jaxdiff.noisy_classifier`` on every device of every process)
and the plain scoring
classifier (:mod:`jaxdiff.fid`, ``workdir/classifier``) are trained on the first use
(Orbax checkpoints, reused afterwards). Scoring accuracy is the plain classifier's on the
generated images; it never sees noise and is not the one used for guidance.

Writes ``workdir/guide.json`` (measured figures), ``workdir/metrics.jsonl`` and PNG grids
and plots under ``workdir/figures``; with ``publish=True`` also
benchmarks/results/guide_digits.json and docs/figures/{guidance_accuracy,inversion_error,
guide_*_grid}.png.

Options (comma-separated after the colon):
  tiny:  tiny U-Net / classifiers, a few samples (tests, smoke runs; seconds).
"""
import ml_collections

from configs import edm_digits
from jaxinfra import config_args

TASKS = ("classifier_free", "classifier", "inpaint", "invert", "sdedit")


def get_config(arg=None):
    args = config_args.parse(arg, flags=("tiny",)).flags
    tiny = "tiny" in args

    c = ml_collections.ConfigDict()
    c.task = "all"                     # one of TASKS, a comma-separated list, or "all"
    c.seed = 0
    c.publish = False                  # copy results/figures into benchmarks/ and docs/
    c.results_path = "benchmarks/results/guide_digits.json"
    c.figures_path = "docs/figures"
    c.progress = True

    # The class-conditional U-Net (label 10 = unconditional); trained here when missing.
    c.unet_workdir = "runs/edm_digits_cond"
    c.unet = edm_digits.get_config("tiny,cond" if tiny else "cond")

    # Sampling for every task (EDM polynomial schedule, sigma in data units).
    c.sampling = ml_collections.ConfigDict({
        "solver": "heun", "num_steps": 10, "sigma_min": 0.002, "sigma_max": 80.0,
        "rho": 7.0})

    # Noise-aware classifier p(y | x_sigma, sigma) (jaxdiff.training.noisy_classifier.DEFAULTS).
    c.noisy_classifier = ml_collections.ConfigDict({
        "width": 32, "features": 64, "emb_channels": 32, "sigma_dist": "loguniform",
        "sigma_min": 0.002, "sigma_max": 80.0, "num_steps": 2000, "batch_size": 128,
        "lr": 2e-3, "seed": 0, "log_every": 100, "checkpoint_every": 500})
    c.noisy_eval_sigmas = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 80.0)
    # python -m jaxdiff.noisy_classifier only: its "data" mesh (0: every device of every
    # process; jaxdiff.guide trains the classifier on one device when it is missing).
    c.noisy_classifier_devices = 0

    # Guidance sweeps: class accuracy of guided samples versus the scale.
    c.guidance = ml_collections.ConfigDict({
        "num_samples": 200,            # labels 0..9 repeated
        "cfg_scales": (0.0, 0.5, 1.0, 2.0, 3.0, 5.0),
        "classifier_scales": (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)})

    # Inpainting (held-out digits, unconditional denoiser = the null label).
    c.inpaint = ml_collections.ConfigDict({
        "num_images": 100, "masks": ("bottom_half", "right_half", "center"),
        "resample": (0, 2), "solver": "heun"})

    # Inversion round trip: invert (sigma_min -> sigma_max), sample back, same solver.
    c.invert = ml_collections.ConfigDict({
        "num_images": 100, "solvers": ("euler", "heun", "dpm2"),
        "num_steps": (3, 5, 9, 17, 33)})

    # SDEdit: noise held-out digits to sigma_start and solve back, unconditionally and
    # conditioned on the next class (label (y + 1) % 10).
    c.sdedit = ml_collections.ConfigDict({
        "num_images": 100, "sigma_starts": (0.25, 0.5, 1.0, 2.0, 5.0, 20.0),
        "num_steps": 10, "solver": "heun"})

    if tiny:
        c.unet_workdir = ""             # "": workdir/unet
        c.unet.model.channel_mults = (1,)   # one resolution: half the graph to compile
        c.progress = False
        # Euler everywhere and shared shapes (6 images, 4 timestamps): the tiny run reuses
        # compiled samplers across tasks (tests must stay fast).
        c.sampling.update({"solver": "euler", "num_steps": 4})
        c.noisy_classifier.update({"width": 4, "features": 8, "emb_channels": 8,
                                   "num_steps": 20, "batch_size": 32, "log_every": 10,
                                   "checkpoint_every": 10})
        c.noisy_eval_sigmas = (0.1, 10.0)
        c.guidance.update({"num_samples": 10, "cfg_scales": (0.0, 2.0),
                           "classifier_scales": (0.0, 2.0)})
        c.inpaint.update({"num_images": 6, "masks": ("bottom_half",), "resample": (1,),
                          "solver": "euler"})
        c.invert.update({"num_images": 6, "solvers": ("euler",), "num_steps": (4,)})
        c.sdedit.update({"num_images": 6, "sigma_starts": (0.5, 5.0), "num_steps": 4,
                         "solver": "euler"})
    return c
