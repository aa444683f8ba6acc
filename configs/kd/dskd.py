"""DSKD (deep supervision; a RECONSTRUCTION, see jaxkd/methods/dskd.py).

    python -m jaxkd.train --config=configs/kd/dskd.py --workdir=runs/kd_cifar100/dskd_s0
    python -m jaxkd.train --config=configs/kd/dskd.py:fashion --workdir=runs/kd_fashion/dskd_s0
    # the open choices are options, e.g. CA-MKD-style inverse weights:
    python -m jaxkd.train --config=configs/kd/dskd.py:fashion \
        --config.method.weight_rule=inverse_softmax --workdir=runs/kd_fashion/dskd_inv

Default: resnet32x4 -> resnet8x4 on CIFAR-100 with the reference recipe; the paper's
numbers are in its arXiv PDF (2202.07846), not reproduced here. Options:
configs/kd/common.py; method options in jaxkd/methods/dskd.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("dskd", arg)
