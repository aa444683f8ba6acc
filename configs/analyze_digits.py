"""Trajectory-geometry analysis on scikit-learn's digits (8x8, D = 64), no training.

    python -m jaxdiff.analyze --config=configs/analyze_digits.py --workdir=runs/analyze

Runtime: about 10-20 seconds on 2 CPU cores (128 trajectories of 100 timestamps, Euler
and Heun, GMM and optimal denoisers; float32). Writes deviation.png, distance_to_end.png,
boomerang.png, score_deviation.png, magnitudes.png, samples_nearest.png and
summary.json to the workdir.
Tiny smoke mode: --config=configs/analyze_digits.py:tiny
Fashion-MNIST: add --config.dataset=fashion_mnist --config.max_examples=10000 (needs the
IDX files, see jaxdiff.data; slower: the optimal denoiser scans every image per call).
Exact float64: JAX_ENABLE_X64=1 ... --config.float64=True.
"""
import ml_collections

from jaxinfra import config_args


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.dataset = "digits"           # digits | fashion_mnist
    c.max_examples = 0             # 0: the whole data set
    c.gmm_components = 20          # the smooth "model": a fitted diagonal mixture
    c.num_samples = 128            # trajectories, all from the same noise for every run
    c.num_steps = 100              # timestamps of the polynomial schedule
    c.rho = 7.0
    c.sigma_min, c.sigma_max = 0.002, 80.0
    c.solvers = ("euler", "heun")  # the first is used for figures 2, 3 and 5
    c.score_solver = "euler"       # solver of the gmm-vs-optimal score deviation runs
    c.num_plot_trajectories = 4    # trajectories drawn in the 3-D boomerang figure
    c.seed = 0
    c.float64 = False              # needs JAX_ENABLE_X64=1
    c.dpi = 110                    # PNG resolution
    if "tiny" in config_args.parse(arg, flags=("tiny",)).flags:
        c.max_examples = 200
        c.gmm_components = 3
        c.num_samples = 6
        c.num_steps = 12
        c.num_plot_trajectories = 2
        c.dpi = 60
    return c
