"""Teacher (or any model) trained with cross-entropy alone, the reference recipe.

    python -m jaxkd.train --config=configs/kd/teacher.py --workdir=runs/kd_cifar100/teacher_s0
    python -m jaxkd.train --config=configs/kd/teacher.py:fashion,seed=1 \
        --workdir=runs/kd_fashion/teacher_s1

The trained model is ``config.student`` (the architecture being trained; set to the
teacher architecture here). Default: resnet32x4 on CIFAR-100, 240 epochs (the lineage
reports 79.42% for resnet32x4); ``:fashion`` trains resnet20 on a 6000-image Fashion-MNIST
subset for 3 epochs on CPU; ``:fashion_full`` resnet20 on all 60k images for 6 epochs
(issue 15's teachers, >= 90%); ``:tiny`` a resnet8 on digits. Options: see configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    c = common.make("ce", arg)
    c.student = c.teacher.model
    if "fashion" in common.parse(arg).flags:
        c.num_epochs = 3
        c.optim.milestones = (2,)
    return c
