"""Vanilla KD (gamma 0.1 CE + alpha 0.9 T^2 KL, T = 4) from one teacher.

    python -m jaxkd.train --config=configs/kd/kd.py --workdir=runs/kd_cifar100/kd_s0 \
        "--config.teacher.workdirs=('runs/kd_cifar100/teacher_s0',)"
    python -m jaxkd.train --config=configs/kd/kd.py:fashion --workdir=runs/kd_fashion/kd_s0

Default: resnet32x4 -> resnet8x4 on CIFAR-100 (lineage: 73.33%); the teacher comes from
``teacher.workdirs`` (train it with configs/kd/teacher.py). Options: configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("kd", arg)
