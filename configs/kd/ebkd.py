"""EBKD: CE + entropy-weighted KD over three teachers (CA-MKD's baseline).

    python -m jaxkd.train --config=configs/kd/ebkd.py --workdir=runs/kd_cifar100/ebkd_s0
    python -m jaxkd.train --config=configs/kd/ebkd.py:fashion --workdir=runs/kd_fashion/ebkd_s0

Options: configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("ebkd", arg, num_teachers=3)
