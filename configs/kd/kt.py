"""Knowledge Translation (KT, arXiv 2401.05772): pair generation, MLP-Mixer translator,
evaluation on held-out networks (jaxkd/kt/).

    python -m jaxkd.kt --config=configs/kd/kt.py --workdir=runs/kt_paper        # GPU
    python -m jaxkd.kt --config=configs/kd/kt.py:cpu --workdir=runs/kt_cpu      # 2 CPUs
    python -m jaxkd.kt --config=configs/kd/kt.py:tiny --workdir=/tmp/kt_tiny    # seconds

Default (no option): the paper's setting, on Fashion-MNIST instead of MNIST (use
``--config.dataset=mnist`` where tensorflow_datasets can download it): 300,000 training
pairs (each 10 + 10 epochs of SGD batch 128, i.e. 4,690 + 4,690 steps), 100 held-out
networks, the 24-layer Mixer (4,096,621 parameters; dropout 0.1), Adam lr 1e-3, batch
4096, 1000 epochs of cosine annealing, evaluation every 25 epochs on the 10k test images.
The paper reports ~1 day on one A800 for the translator alone; the pairs took 8 GPUs.

Options (comma-separated after the colon; at most one of cpu, large and tiny):
  cpu:   reduced to fit ~20 minutes on 2 shared CPU cores (see docs/jaxkd_kt.md): 256
         training pairs and 32 held-out networks, each pair trained for only 30 + 30
         SGD steps of batch 16 on a 10k-image training subset (the paper: 4,690 + 4,690
         steps of batch 128 on 60k), a 4-layer Mixer (C = 64), 60 epochs of batch 64,
         evaluation on the first 1,000 test images.
  large: issue 15's larger test, sized to one session: 1,024 training pairs trained twice
         as long as cpu's (60 + 60 SGD steps of batch 16), 64 held-out networks, hidden
         channels sorted (canonical=norm), the same 4-layer Mixer for 100 epochs. Pair
         generation ~2.5 h on 2 loaded CPU cores (resumable chunk by chunk).
  tiny:  a few steps of everything (tests, smoke runs).
Augmentation (paper's limited-data study) via overrides, e.g.
  --config.augment.mask_prob=0.1 --config.augment.mask_target=t   (t, s or both)
  --config.augment.noise_std=0.01 --config.augment.noise_target=both
Hidden-unit order: --config.canonical=norm sorts the hidden channels of both blocks
(same functions) so the translator's targets do not depend on the order SGD left them in;
the saved pairs stay as trained, so one pair set serves both values.
"""
import ml_collections

from jaxinfra import config_args

SIZES = ("cpu", "large", "tiny")


def get_config(arg=None):
    size = config_args.parse(arg, choices={"size": SIZES}).choices["size"]
    c = ml_collections.ConfigDict()
    c.dataset = "fashion_mnist"        # fashion_mnist (offline) | mnist (tfds, network)
    c.max_train_examples = 0           # 0: the whole split
    c.max_test_examples = 0
    c.seed = 0
    c.canonical = "none"               # none | norm: sort both blocks' hidden channels by
                                       # incoming-filter norm before the translator sees them

    c.pairs = ml_collections.ConfigDict()
    c.pairs.num_train = 300_000
    c.pairs.num_val = 100
    c.pairs.batch_size = 128
    c.pairs.steps_large = 4690         # 10 epochs of 60k images at batch 128
    c.pairs.steps_small = 4690
    c.pairs.lr = 0.01
    c.pairs.momentum = 0.9
    c.pairs.flip = True
    c.pairs.chunk_size = 2048          # pairs trained at once (vmap) and saved per file

    c.translator = ml_collections.ConfigDict()
    c.translator.num_layers = 24
    c.translator.c_dim = 128
    c.translator.hidden_s_dim = 256
    c.translator.hidden_c_dim = 512
    c.translator.dropout = 0.1
    c.translator.optimizer = "adam"    # adam | sgd
    c.translator.lr = 1e-3
    c.translator.weight_decay = 0.0
    c.translator.grad_clip = 0.0       # <= 0: none
    c.translator.schedule = "cosine"   # cosine (per epoch) | constant
    c.translator.batch_size = 4096
    c.translator.epochs = 1000

    c.augment = ml_collections.ConfigDict()
    c.augment.mask_prob = 0.0
    c.augment.mask_target = "t"        # t (large params) | s (compressed) | both
    c.augment.noise_std = 0.0
    c.augment.noise_target = "t"

    c.eval_every = 25                  # epochs
    c.eval_batch_size = 1000
    c.checkpoint_every = 25            # epochs
    c.keep_checkpoints = 2
    c.extend = False                   # True: continue a finished run to more translator.epochs
    c.progress = True

    if size in ("cpu", "large"):       # large: cpu's settings with the changes below
        c.max_train_examples = 10_000
        c.max_test_examples = 1_000
        c.pairs.num_train = 256
        c.pairs.num_val = 32
        c.pairs.batch_size = 16
        c.pairs.steps_large = 30
        c.pairs.steps_small = 30
        c.pairs.chunk_size = 32
        c.translator.num_layers = 4
        c.translator.c_dim = 64
        c.translator.hidden_s_dim = 128
        c.translator.hidden_c_dim = 256
        c.translator.batch_size = 64
        c.translator.epochs = 60
        c.eval_every = 10
        c.eval_batch_size = 500
        c.checkpoint_every = 10
    if size == "large":
        c.canonical = "norm"
        c.pairs.num_train = 1024
        c.pairs.num_val = 64
        c.pairs.steps_large = 60
        c.pairs.steps_small = 60
        c.pairs.chunk_size = 128
        c.translator.batch_size = 128
        c.translator.epochs = 100
    if size == "tiny":
        c.max_train_examples = 512
        c.max_test_examples = 256
        c.pairs.num_train = 8
        c.pairs.num_val = 8
        c.pairs.batch_size = 16
        c.pairs.steps_large = 40
        c.pairs.steps_small = 40
        c.pairs.chunk_size = 8
        c.translator.num_layers = 1
        c.translator.c_dim = 16
        c.translator.hidden_s_dim = 16
        c.translator.hidden_c_dim = 32
        c.translator.dropout = 0.0
        c.translator.lr = 1e-2
        c.translator.schedule = "constant"
        c.translator.batch_size = 8
        c.translator.epochs = 2
        c.eval_every = 1
        c.eval_batch_size = 128
        c.checkpoint_every = 1
        c.progress = False
    return c
