"""FitNet: CE + beta 100 MSE(ConvReg(f_s[2]), f_t[2]) (RepDistiller ``-a 0 -b 100``).

    python -m jaxkd.train --config=configs/kd/fitnet.py --workdir=runs/kd_cifar100/fitnet_s0
    python -m jaxkd.train --config=configs/kd/fitnet.py:fashion \
        --workdir=runs/kd_fashion/fitnet_s0

Default: resnet32x4 -> resnet8x4 on CIFAR-100 (lineage: 73.50%). Options:
configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("fitnet", arg)
