"""AVER: CE + mean over three teachers of KD (CA-MKD's baseline, ``-r 1 -a 1 -b 0``).

    python -m jaxkd.train --config=configs/kd/aver.py --workdir=runs/kd_cifar100/aver_s0
    python -m jaxkd.train --config=configs/kd/aver.py:fashion --workdir=runs/kd_fashion/aver_s0

Options: configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("aver", arg, num_teachers=3)
