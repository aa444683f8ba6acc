"""The tiniest jaxkd training (tests/jaxinfra/test_distributed.py): plain cross-entropy,
the 4-channel CNN of tests/jaxkd/kd_testnet.py on 64 digits, batch 16, 2 epochs of 4 steps
(checkpoints at steps 4 and 8), test accuracy on 40 digits."""
from configs.kd import common


def get_config():
    c = common.make("ce", "tiny")
    c.student = "tiny4"
    c.max_train = 64
    c.max_test = 40
    c.batch_size = 16
    c.num_epochs = 2
    c.optim.milestones = ()
    c.optim.lr = 0.2
    c.augment.pad = 1                   # 8x8 digits: crops shifted by <= 1 pixel
    c.log_every = 2
    c.eval_batch_size = 40
    c.num_devices = 0                   # every device of every process
    c.progress = False
    return c
