"""Shared settings of the configs/kd/*.py distillation configs (not a config itself).

Every configs/kd/<method>.py calls :func:`make` with its method name. Options after the
colon (comma-separated, parsed by :func:`jaxinfra.config_args.parse`; fashion,
fashion_full and tiny exclude each other):
  (none)   the reference CIFAR-100 recipe (tfds cifar100, GPU/TPU-sized): batch 64,
           240 epochs, SGD Nesterov 0.9, lr 0.05 x0.1 after epochs 150/180/210, coupled
           weight decay 5e-4; teacher resnet32x4, student resnet8x4.
  fashion  offline Fashion-MNIST (IDX files in <folder>/fashion-mnist for a folder of
           $JAXINFRA_DATA_PATH, default Debian's dataset-fashion-mnist), CPU-sized: the
           first 6000 training and 2000 test images; students 1 epoch at lr 0.05,
           teachers (teacher.py) 3 epochs with lr x0.1 after epoch 2; teacher resnet20,
           student resnet8
           (docs/jaxkd.md's benchmark, sized for 2 heavily shared CPU cores).
  fashion_full  all of offline Fashion-MNIST (60000 training, 10000 test images): teachers
           (teacher.py) resnet20 6 epochs, lr x0.1 after epochs 4 and 5 (>= 90%, issue
           15); students resnet8 for ``num_epochs`` (default 6, same schedule).
  tiny     scikit-learn digits, 256 images, 1 epoch of batch 32, resnet8 teacher and
           student (smoke tests; seconds).
  seed=N   seed N (also picks teacher workdir ..._sN for single-teacher methods).

Resuming a workdir with other settings is refused; ``--config.extend=True`` continues a
finished run to a larger ``--config.num_epochs``.
"""
import os

import ml_collections

from jaxinfra import config_args

OPTIONS = ("fashion", "fashion_full", "tiny")


def parse(arg) -> config_args.ConfigArgs:
    """Parses 'fashion,seed=1' (``.flags`` {'fashion'}, ``.values`` {'seed': 1}); an unknown
    option, a bad seed or 'fashion' with 'tiny' is a ValueError naming the accepted ones."""
    return config_args.parse(arg, flags=OPTIONS, values={"seed": int}, exclusive=[OPTIONS])


def teacher_dirs(flags, k, seed):
    """Default teacher workdirs: runs/kd[_fashion|_fashion_full|_tiny]/teacher_s<seed> (k = 1) or
    teacher_s0..teacher_s<k-1> (k teachers from different seeds, as CA-MKD's
    setting.py uses three trials of one architecture)."""
    root = next((f"runs/kd_{w}" for w in OPTIONS if w in flags), "runs/kd_cifar100")
    if k == 1:
        return (f"{root}/teacher_s{seed}",)
    return tuple(f"{root}/teacher_s{i}" for i in range(k))


def teacher_configs(arg, k):
    """The ``--config`` argument that trains each default teacher (``teacher_dirs``), for
    the hint printed when one is missing: configs/kd/teacher.py with the user's options
    (``configs/kd/teacher.py:tiny`` for ``kd.py:tiny``); with k > 1 teachers, teacher i
    gets ``seed=i``. The path is relative to the working directory when it lies below it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "teacher.py")
    rel = os.path.relpath(path)
    path = path if rel.startswith("..") else rel
    arg = (arg or "").strip()
    if k == 1:
        return (f"{path}:{arg}" if arg else path,)
    args = parse(arg)
    words = [w for w in OPTIONS if w in args.flags]
    return tuple(f"{path}:{','.join(words + [f'seed={i}'])}" for i in range(k))


def make(method: str, arg=None, *, num_teachers: int = 1, defaults=None):
    """The ConfigDict of ``method`` under the options in ``arg`` (see module doc)."""
    from jaxkd import methods
    args = parse(arg)
    flags = args.flags
    m = methods.get(method)
    seed = args.values.get("seed", 0)
    c = ml_collections.ConfigDict()
    c.dataset = "cifar100"
    c.data_source = "auto"          # auto | offline | tfds
    c.data_dir = ""
    c.max_train = 0                 # 0: the whole split
    c.max_test = 0
    c.augment = ml_collections.ConfigDict({"pad": 4, "flip": True})
    c.student = "resnet8x4"
    c.teacher = ml_collections.ConfigDict({
        "model": "resnet32x4",
        "workdirs": teacher_dirs(flags, num_teachers, seed) if m.teachers else (),
        "checkpoint": "best",       # best | last
        # how to train each teacher (the hint when one is missing; not a setting)
        "train_configs": teacher_configs(arg, num_teachers) if m.teachers else (),
    })
    c.method = ml_collections.ConfigDict({"name": method, **m.defaults, **(defaults or {})})
    c.batch_size = 64
    c.drop_last = True
    c.num_epochs = 240
    c.optim = ml_collections.ConfigDict({
        "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
        "milestones": (150, 180, 210), "gamma": 0.1})
    c.eval_batch_size = 500
    c.num_devices = 0               # 0: every local device (data parallel)
    c.teacher_map = "auto"          # vmap | map (lax.map loop) | auto (map on CPU)
    c.seed = seed
    c.log_every = 100
    c.checkpoint_every_epochs = 1
    c.keep_checkpoints = 2
    c.extend = False                # True: continue a finished run to a larger num_epochs
    c.progress = True
    if "fashion" in flags:
        c.dataset = "fashion_mnist"
        c.max_train = 6000          # the first 6000 training images
        c.max_test = 2000           # the first 2000 test images
        c.student = "resnet8"
        c.teacher.model = "resnet20"
        c.num_epochs = 1            # configs/kd/teacher.py:fashion trains 3
        c.optim.milestones = ()
        c.log_every = 20
    if "fashion_full" in flags:
        c.dataset = "fashion_mnist"
        c.student = "resnet8"
        c.teacher.model = "resnet20"
        c.num_epochs = 6
        c.optim.milestones = (4, 5)
        c.log_every = 100
    if "tiny" in flags:
        c.dataset = "digits"
        c.max_train = 256
        c.max_test = 128
        c.student = "resnet8"
        c.teacher.model = "resnet8"
        c.batch_size = 32
        c.eval_batch_size = 128
        c.num_epochs = 1
        c.optim.milestones = ()
        c.augment.flip = False      # digits are not mirror-symmetric
        c.log_every = 4
        c.progress = False
    return c
