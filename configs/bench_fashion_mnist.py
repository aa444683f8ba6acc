"""Solver benchmark on Fashion-MNIST (28x28), exact denoisers, no training.

Needs the Debian package (`apt-get install dataset-fashion-mnist`) or FASHION_MNIST_DIR.

    python -m jaxdiff.bench --config=configs/bench_fashion_mnist.py --workdir=runs/fashion

Runtime: about 15-25 minutes on 2 CPU cores (the optimal denoiser scans 10,000 images
per call; raise max_examples to 60000 on a GPU).
"""
from configs.bench_digits import get_config as _digits


def get_config(arg=None):
    c = _digits(arg)
    c.dataset = "fashion_mnist"
    if arg != "tiny":
        c.max_examples = 10_000
        c.num_samples = 64
        c.reference_steps = 257
    return c
