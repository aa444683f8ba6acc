"""CA-MKD with three teachers of one architecture (different seeds), reference recipe.

    python -m jaxkd.train --config=configs/kd/camkd.py --workdir=runs/kd_cifar100/camkd_s0
    python -m jaxkd.train --config=configs/kd/camkd.py:fashion \
        --workdir=runs/kd_fashion/camkd_s0

The reference command is ``train_student.py --model_s vgg8 --teacher_num 3 --distill inter
--ensemble_method CAMKD --nesterov -r 1 -a 1 -b 50`` with three resnet32x4 teachers; the
default here keeps the resnet8x4 student of the other configs (set
``--config.student=vgg8`` for the paper's pair). Teachers: ``teacher.workdirs`` (default
teacher_s0..teacher_s2). Quirks as options (jaxkd/methods/camkd.py): scale_by_k,
detach_inter_weights, inter_from_epoch. Options: configs/kd/common.py.
"""
from configs.kd import common


def get_config(arg=None):
    return common.make("camkd", arg, num_teachers=3)
