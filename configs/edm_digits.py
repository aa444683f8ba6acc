"""EDM U-Net denoiser on scikit-learn's 8x8 digits (1797 images), CPU-sized.

    python -m jaxdiff.train --config=configs/edm_digits.py --workdir=runs/edm_digits
    python -m jaxdiff.fid --config=configs/edm_digits.py --workdir=runs/edm_digits

Runtime (measured on 2 shared CPU cores): training 7.3 minutes (2000 steps of batch
128, ~5-7 steps/s; a 0.63M-parameter U-Net, resolutions 8 -> 4, no attention; slower when
the cores are busy), then ~40 s for the Frechet distance (classifier training plus 2000
samples per solver). Measured: final loss 0.44, recognisable digits in
runs/edm_digits/samples/, classifier test accuracy 0.978, FD 0.35 at heun NFE 34 and 12.4
at ipndm NFE 5 (benchmarks/results/edm_digits.json). The Frechet distance uses the
features of a small classifier trained on digits, NOT Inception.

Options (comma-separated after the colon):
  tiny:  a few steps of a tiny model on one device (tests, smoke runs; seconds; add
         --config.num_devices=0 for every device of every process).
  cond:  class-conditional (10 classes, label dropout 0.1; label 10 = unconditional).
  wide:  a quarter of each batch at log-uniform sigma over [0.002, 80] (EDM's log-normal
         puts ~0.2% of its sigmas above 10, where sampling starts): the same cost, a
         network that is accurate over the whole range sampling visits.
e.g. --config=configs/edm_digits.py:tiny,cond
"""
import ml_collections

from jaxinfra import config_args


def get_config(arg=None):
    args = config_args.parse(arg, flags=("tiny", "cond", "wide")).flags
    c = ml_collections.ConfigDict()
    c.dataset = "digits"
    c.max_examples = 0                 # 0: the whole data set
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.image_size = 8
    c.model.in_channels = 1
    c.model.base_channels = 32
    c.model.channel_mults = (1, 2)     # 8x8 -> 4x4; AMED feature: 16 values
    c.model.num_res_blocks = 1
    c.model.attention = False
    c.model.num_heads = 1
    c.model.norm_groups = 8
    c.model.noise_embedding = "fourier"
    c.model.fourier_scale = 16.0
    c.model.emb_channels = 0           # 0: 4 * base_channels
    c.model.num_classes = 0            # 0: unconditional
    c.model.sigma_data = 0.5
    c.label_dropout = 0.0

    # EDM's log-normal training sigma; uniform_fraction > 0 draws that share of each batch
    # log-uniformly over [sigma_min, sigma_max] instead (":wide": 0.25).
    c.loss = ml_collections.ConfigDict({"p_mean": -1.2, "p_std": 1.2, "uniform_fraction": 0.0,
                                        "sigma_min": 0.002, "sigma_max": 80.0})
    c.batch_size = 128                 # the global batch, split over the devices
    c.num_steps = 2000
    c.num_devices = 0                  # 0: every device of every process (data parallel)
    c.optim = ml_collections.ConfigDict({
        "lr": 2e-3, "warmup_steps": 200, "schedule": "cosine", "b1": 0.9, "b2": 0.999,
        "eps": 1e-8, "grad_clip": 1.0})
    c.ema_decay = 0.999

    c.log_every = 50
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.extend = False                   # True: continue a finished run to a larger num_steps
    c.progress = True
    c.sample = ml_collections.ConfigDict({
        "every": 1000, "num_images": 64, "solver": "heun", "num_steps": 18})

    # python -m jaxdiff.fid: classifier and evaluation settings.
    c.fid = ml_collections.ConfigDict({
        "evals": ("heun:34", "ipndm:5"),   # solver:NFE, schedules as in jaxdiff.bench
        "num_samples": 2000,
        "sample_batch": 500,
        "test_fraction": 0.2,              # digits has no test split: a held-out 20%
        "classifier": ml_collections.ConfigDict({
            "features": 64, "width": 32, "epochs": 15, "batch_size": 64, "lr": 2e-3,
            "seed": 0}),
    })

    if "wide" in args:
        c.loss.uniform_fraction = 0.25
    if "cond" in args:
        c.model.num_classes = 10
        c.label_dropout = 0.1
    if "tiny" in args:
        c.max_examples = 256
        c.model.base_channels = 8
        c.model.num_res_blocks = 1
        c.batch_size = 16
        c.num_steps = 4
        c.num_devices = 1              # the smallest compile
        c.optim.warmup_steps = 1
        c.optim.schedule = "constant"
        c.log_every = 2
        c.checkpoint_every = 2
        c.progress = False
        c.sample.every = 0
        c.sample.num_images = 4
        c.sample.solver = "euler"
        c.sample.num_steps = 3
        c.fid.evals = ("euler:2",)
        c.fid.num_samples = 32
        c.fid.sample_batch = 32
        c.fid.classifier.update({"features": 16, "width": 8, "epochs": 1, "batch_size": 64})
    return c
