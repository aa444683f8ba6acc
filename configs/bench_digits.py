"""Solver benchmark on scikit-learn's digits (8x8), exact denoisers, no training.

    python -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

Runtime: about 70 seconds on 2 idle CPU cores. Writes results.json, results.md,
metrics.jsonl, error_vs_nfe_<regime>.png (ODE solvers) and samples_<regime>.png to the
workdir.
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
    c.seed = 0                     # the initial noise x_T = sigma_max * normal(PRNGKey(seed))
    c.nfes = tuple(range(3, 11))
    c.sigma_min, c.sigma_max = 0.002, 80.0
    c.reference_solver = "heun"
    c.reference_steps = 513        # timestamps; converged-ness is checked against (n+1)//2
    c.solvers = ("euler", "heun", "dpm2", "ipndm", "ipndm_v", "deis", "dpmpp", "unipc")
    # Stochastic samplers (their L2 distance to the ODE reference is no error: compare them
    # by the Frechet distance), at even NFE only to keep the job's runtime (each row is a
    # compile). Each row's step noise is that of
    # jaxdiff.sample(..., key=jax.random.key(noise_seed)).
    c.stochastic = ("euler_ancestral", "dpmpp_2m_sde", "heun_churn")
    c.stochastic_nfes = (4, 6, 8, 10)
    c.noise_seed = 1
    # Frechet distance of every row's samples to exact samples of the regime's distribution
    # (the data; draws of the mixture), in the features of a small classifier trained on
    # the data (jaxdiff.frechet; NOT Inception FID; settings as configs/edm_digits.py).
    c.fd = True
    c.fd_classifier = ml_collections.ConfigDict({
        "features": 64, "width": 32, "epochs": 15, "batch_size": 64, "lr": 2e-3, "seed": 0})
    c.float64 = False
    if "tiny" in config_args.parse(arg, flags=("tiny",)).flags:
        c.num_samples = 8
        c.nfes = (4, 5)
        c.gmm_components = 4
        c.reference_steps = 65
        c.solvers = ("euler", "heun", "ipndm")
        c.stochastic = ("euler_ancestral", "heun_churn")
        c.stochastic_nfes = (5,)
        c.fd_classifier.update({"features": 8, "width": 4, "epochs": 1, "batch_size": 256})
    return c
