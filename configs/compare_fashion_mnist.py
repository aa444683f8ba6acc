"""Low-NFE comparison on Fashion-MNIST (784-d): GITS vs AMED vs hand-made schedules.

    python -m jaxdiff.compare --config=configs/compare_fashion_mnist.py --workdir=runs/compare_fashion
    python -m jaxdiff.compare --config=configs/compare_fashion_mnist.py:edm_only --workdir=runs/compare_fashion_edm

CPU-sized: the optimal denoiser uses 10,000 training images, AMED 2,048 trajectories,
128 evaluation samples (about 15-20 minutes on 2 CPU cores). ``:edm_only`` needs
``python -m jaxdiff.train --config=configs/edm_fashion_mnist.py:cpu --workdir=runs/edm_fashion``.
"""
from configs.compare_digits import OPTIONS
from configs.compare_digits import get_config as _digits
from jaxinfra import config_args


def get_config(arg=None):
    c = _digits(arg)
    c.dataset = "fashion_mnist"
    c.edm_workdir = "runs/edm_fashion"
    c.edm_config = "configs.edm_fashion_mnist"
    c.edm_config_arg = "cpu"
    if not config_args.parse(arg, flags=OPTIONS).flags & {"test", "tiny"}:
        c.max_examples = 10_000
        c.num_eval = 128
        c.reference_steps = 257
        c.amed_trajectories = 2048
    return c
