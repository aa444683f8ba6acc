"""EDM U-Net denoiser on Fashion-MNIST (28x28, 60000 images). The default is GPU-sized.

Needs the Debian package (`apt-get install dataset-fashion-mnist`, or `make fashion-data`)
or JAXINFRA_DATA_PATH (folder holding fashion-mnist/); tfds name "fashion_mnist" on Colab.

    python -m jaxdiff.train --config=configs/edm_fashion_mnist.py --workdir=runs/edm_fashion
    python -m jaxdiff.fid --config=configs/edm_fashion_mnist.py --workdir=runs/edm_fashion

Default (GPU): a ~6.5M-parameter U-Net, resolutions 28 -> 14 -> 7 (channels 64/128/128,
2 blocks each, attention at 7x7; AMED feature 7 * 7 = 49 values), batch 256, 60k steps:
measured 54.7 steps/s on one NVIDIA H200 after a 30 s compile (about 18 minutes for the
60k steps; benchmarks/results/h200/edm_train.log); not meant for a CPU.

Options (comma-separated after the colon):
  cpu:   a CPU-sized run: channels 32/64/64, one block per resolution, no attention
         (~1.0M parameters), 10k training images, 1500 steps of batch 64; about 35-45
         minutes on 2 idle CPU cores; measured 45 min while other jobs shared them
         (final loss 0.264; docs/figures/edm_fashion_samples.png; low-NFE comparison in
         the README).
  cond:  class-conditional (10 classes, label dropout 0.1).
  wide:  a quarter of each batch at log-uniform sigma over [0.002, 80] instead of EDM's
         log-normal (more training at the high sigmas that sampling visits first); the
         same steps and cost. e.g. --config=configs/edm_fashion_mnist.py:cpu,wide
  tiny:  a few steps of a tiny model on one device (tests, smoke runs).
e.g. --config=configs/edm_fashion_mnist.py:cpu
The Frechet distance is computed in the feature space of a small classifier trained on
Fashion-MNIST, NOT Inception.
"""
from configs.edm_digits import get_config as _digits_config
from jaxinfra import config_args


def get_config(arg=None):
    args = config_args.parse(arg, flags=("cpu", "tiny", "cond", "wide")).flags
    c = _digits_config(",".join(sorted(args & {"tiny", "cond", "wide"})))
    c.dataset = "fashion_mnist"
    c.model.image_size = 28
    c.fid.test_fraction = 0.0            # Fashion-MNIST has a test split
    if "tiny" in args:
        c.model.channel_mults = (1, 2)   # 28 -> 14
        return c
    c.max_examples = 0
    c.model.base_channels = 64
    c.model.channel_mults = (1, 2, 2)    # 28 -> 14 -> 7
    c.model.num_res_blocks = 2
    c.model.attention = True
    c.model.num_heads = 4
    c.model.norm_groups = 32
    c.batch_size = 256
    c.num_steps = 60_000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 1000
    c.ema_decay = 0.9995
    c.log_every = 100
    c.checkpoint_every = 5000
    c.sample.every = 5000
    c.fid.num_samples = 10_000
    c.fid.sample_batch = 1000
    c.fid.classifier.update({"features": 128, "width": 32, "epochs": 5, "batch_size": 128,
                             "lr": 1e-3})
    if "cpu" in args:
        c.max_examples = 10_000
        c.model.base_channels = 32
        c.model.num_res_blocks = 1
        c.model.attention = False
        c.model.norm_groups = 8
        c.batch_size = 64
        c.num_steps = 1500
        c.optim.lr = 2e-3
        c.optim.warmup_steps = 200
        c.ema_decay = 0.999
        c.log_every = 50
        c.checkpoint_every = 500
        c.sample.every = 1000
        c.fid.num_samples = 1000
        c.fid.sample_batch = 250
        c.fid.classifier.update({"features": 64, "epochs": 2})
    return c
