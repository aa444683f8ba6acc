"""AEKD: CE + KD weighted by a one-class SVM (C = 0.6) on the teachers' KD gradients, three
teachers (CA-MKD's baseline, ``--distill kd -r 1 -a 1 -b 0``).

    python -m jaxkd.train --config=configs/kd/aekd.py --workdir=runs/kd_cifar100/aekd_s0
    python -m jaxkd.train --config=configs/kd/aekd.py:fashion --workdir=runs/kd_fashion/aekd_s0

Options: configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("aekd", arg, num_teachers=3)
