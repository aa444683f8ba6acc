"""Student trained alone with cross-entropy (the "Student" baseline row).

    python -m jaxkd.train --config=configs/kd/ce.py --workdir=runs/kd_cifar100/ce_s0
    python -m jaxkd.train --config=configs/kd/ce.py:fashion --workdir=runs/kd_fashion/ce_s0

Default: resnet8x4 on CIFAR-100, reference recipe (lineage: 72.50%). Options: see
configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("ce", arg)
