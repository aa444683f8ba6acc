"""Low-NFE comparison on digits: hand-made schedules vs GITS vs AMED (exact denoisers).

    python -m jaxdiff.compare --config=configs/compare_digits.py --workdir=runs/compare
    python -m jaxdiff.compare --config=configs/compare_digits.py:edm --workdir=runs/compare_edm

``:edm`` adds (``:edm_only`` runs only) the U-Net trained by
``python -m jaxdiff.train --config=configs/edm_digits.py --workdir=runs/edm_digits``.
Runtime about 10 minutes on 2 CPU cores (AMED training dominates). ``:tiny`` for tests.
"""
import ml_collections

from jaxinfra import config_args

OPTIONS = ("edm", "edm_only", "test", "tiny")


def get_config(arg=None):
    args = config_args.parse(arg, flags=OPTIONS).flags
    c = ml_collections.ConfigDict()
    c.dataset = "digits"
    c.max_examples = 0
    c.gmm_components = 20
    c.regimes = ("gmm", "optimal") + (("edm",) if "edm" in args else ())
    if "edm_only" in args:
        c.regimes = ("edm",)
    c.edm_workdir = "runs/edm_digits"
    c.edm_config = "configs.edm_digits"    # its classifier scores the Frechet distance
    c.edm_config_arg = ""                  # the option string of edm_config (e.g. "cpu")
    c.fd = True
    c.methods = ("ipndm", "ipndm+gits", "ipndm+gits_dev", "ddim+gits", "ipndm+amed", "amed",
                 "dpmpp", "unipc")
    c.nfes = tuple(range(3, 11))
    c.num_eval = 256
    c.reference_steps = 513
    c.gits_grid = 61
    c.gits_warmup = 256
    c.gits_coeff = 1.15
    # GITS search (jaxdiff.gits.search): "select" keeps whichever of the candidates' schedules
    # the student does best with on the warm-up noises; "dev" is the reference's cost alone.
    # The "+gits_dev" methods always use "dev".
    c.gits_metric = "select"               # select | dev | l2 | l1
    c.gits_candidates = ("dev", "l2", "base")
    # A DP schedule replaces the base one only if it gains this many standard errors of the
    # paired per-noise differences on the warm-up noises (0: the plain minimum).
    c.gits_significance = 2.0
    # What AMED's analytical first step (odd NFE) takes D(x; 80) to be: "zero" (the
    # reference; right for centred data), "data" (the mean image) or "denoiser" (D(0; 80)).
    # Digits and Fashion-MNIST are far from centred (||D(x; 80)|| ~ 5): "data" (digits GMM,
    # AMED-Plugin at NFE 5: 2.81 with "zero", 0.795 with "data").
    c.amed_afs_mean = "data"
    # How AMED predictors are trained: "stepwise" (the reference: each step fitted with the
    # steps before it frozen) or "trajectory" (all steps jointly, through the student's run)
    # or "final" (the same run, the last node's loss only).
    c.amed_objective = "stepwise"
    c.amed_trajectories = 10_240
    c.amed_batch = 128
    c.feature_dim = 64
    # edm regime: the U-Net's mean L2 error to the data's exact denoiser at these sigmas.
    c.error_sigmas = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 24.4, 80.0)
    c.seed = 0
    if "test" in args:
        c.regimes, c.gmm_components, c.nfes, c.num_eval, c.reference_steps = \
            ("gmm",), 4, (5,), 8, 33
        c.gits_grid, c.gits_warmup, c.amed_trajectories, c.amed_batch = 11, 8, 16, 16
    if "tiny" in args:
        c.gmm_components, c.nfes, c.num_eval, c.reference_steps = 4, (4, 5), 16, 65
        c.gits_grid, c.gits_warmup, c.amed_trajectories, c.amed_batch = 21, 16, 32, 16
    return c
