"""Solver benchmark on scikit-learn's digits (8x8), exact denoisers, no training.

    python -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

Runtime: about 70 seconds on 2 idle CPU cores. Writes results.json, results.md,
metrics.jsonl, error_vs_nfe_<regime>.png and samples_<regime>.png to the workdir.
Tiny smoke mode: --config=configs/bench_digits.py:tiny
"""
import ml_collections

from jaxinfra import config_args


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.dataset = "digits"           # digits | fashion_mnist | auto (fashion if installed)
    c.max_examples = 0             # 0: the whole data set
    c.regimes = ("gmm", "optimal")
    c.gmm_components = 20
    c.num_samples = 256
    c.seed = 0
    c.nfes = tuple(range(3, 11))
    c.sigma_min, c.sigma_max = 0.002, 80.0
    c.reference_solver = "heun"
    c.reference_steps = 513        # timestamps; converged-ness is checked against (n+1)//2
    c.solvers = ("euler", "heun", "dpm2", "ipndm", "ipndm_v", "deis", "dpmpp", "unipc")
    c.float64 = False
    if "tiny" in config_args.parse(arg, flags=("tiny",)).flags:
        c.num_samples = 8
        c.nfes = (4, 5)
        c.gmm_components = 4
        c.reference_steps = 65
        c.solvers = ("euler", "heun", "ipndm", "dpmpp", "unipc")
    return c
