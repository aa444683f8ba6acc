"""FitNet-MKD: AVER + beta 100 mean_k MSE(ConvReg_k(f_s[2]), f_t_k[2]) over three teachers
(CA-MKD's baseline, ``--distill hint -r 1 -a 1 -b 100``).

    python -m jaxkd.train --config=configs/kd/fitnet_mkd.py \
        --workdir=runs/kd_cifar100/fitnet_mkd_s0
    python -m jaxkd.train --config=configs/kd/fitnet_mkd.py:fashion \
        --workdir=runs/kd_fashion/fitnet_mkd_s0

Options: configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("fitnet_mkd", arg, num_teachers=3)
