"""Solver benchmark on Fashion-MNIST (28x28), exact denoisers, no training.

Needs the Debian package (`apt-get install dataset-fashion-mnist`) or JAXINFRA_DATA_PATH (folder holding fashion-mnist/).

    python -m jaxdiff.bench --config=configs/bench_fashion_mnist.py --workdir=runs/fashion

Runtime: about 9 minutes on 2 CPU cores (the optimal denoiser scans all 60,000
training images at every call), measured before the stochastic rows and the Frechet
distance were added (its classifier alone: ~40 s; the whole job not re-measured).
``:tiny`` is a smoke mode.
"""
from configs.bench_digits import get_config as _digits
from jaxinfra import config_args


def get_config(arg=None):
    c = _digits(arg)
    c.dataset = "fashion_mnist"
    if "tiny" not in config_args.parse(arg, flags=("tiny",)).flags:
        c.num_samples = 128
        c.reference_steps = 257
        # 60,000 training images: one epoch of batch 128 for the FD classifier (measured on
        # 2 busy cores: 42 s, training accuracy 0.879; two epochs: 114 s, 0.908)
        c.fd_classifier.update({"epochs": 1, "batch_size": 128})
    return c
