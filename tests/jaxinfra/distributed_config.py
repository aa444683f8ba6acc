"""The tiny trainings of tests/jaxinfra/test_distributed.py, one sub-config per job
(distributed_job.py runs them in this order), each on every device of every process:

  kd   jaxkd.train, plain cross-entropy: the 4-channel CNN of tests/jaxkd/kd_testnet.py on
       64 digits, batch 16, 2 epochs of 4 updates (checkpoints at 4 and 8), test accuracy
       on 40 digits;
  edm  jaxdiff.train: configs/edm_digits.py:tiny with one resolution (the smallest
       compile) and GroupNorm groups of 4 channels (groups of 1 would normalise away every
       bias before them: gradients of pure rounding noise, which Adam scales to lr-sized
       steps), on 32 digits, batch 16, 4 updates = 2 epochs (checkpoints at 2 and 4);
  kge  python -m jaxgraph.kge: configs/kge/kge.py:tiny (RotatE, dim 8, 40 generated
       entities, 2 epochs), the entity table split over 4 devices (``mesh.model=4``);
  gnn  jaxgraph.train: configs/gnn/gnn_planetoid.py:cora,gcn,tiny, 3 epochs (full batch,
       replicated on one device per process);
  oad  jaxgraph.oad: configs/gnn/oad_cora.py:tiny, 1 warm-up + 2 OKD epochs (2 seeds,
       split over the processes);
  kt   jaxkd.kt: configs/kd/kt.py:tiny cut down to 8 training pairs (split over the 4
       devices) and 2 held-out networks (padded to 4 on two processes), 3 + 3 SGD steps on
       64 fixture images, 2 translator epochs, evaluation on 32 images;
  nc   jaxdiff.noisy_classifier: configs/guide_digits.py:tiny's noise-aware classifier,
       12 updates of batch 32 on the digits (split over the 4 devices), checkpoints at 6
       and 12, accuracy at 2 noise levels on the held-out digits.

``cut``: the update (kd, edm) after which the stopped runs (``--cut_workdir``) end.
"""
import ml_collections
from kd_testnet import tiny_config

from configs import edm_digits, guide_digits
from configs.gnn import gnn_planetoid, oad_cora
from configs.kd import kt as kt_config
from configs.kge.kge import get_config as kge_config


def get_config():
    c = ml_collections.ConfigDict()
    c.kd = tiny_config("ce", max_train=64, max_test=40, num_devices=0, progress=False)
    c.edm = edm_digits.get_config("tiny")
    c.edm.max_examples = 32
    c.edm.num_devices = 0
    c.edm.model.channel_mults = (1,)
    c.edm.model.norm_groups = 2
    c.kge = kge_config("tiny")
    c.kge.mesh.model = 4
    c.gnn = gnn_planetoid.get_config("cora,gcn,tiny")
    c.gnn.epochs, c.gnn.checkpoint_every = 3, 3         # one save, at the end
    c.oad = oad_cora.get_config("tiny")
    c.oad.warmup_epochs, c.oad.okd_epochs, c.oad.checkpoint_every = 1, 2, 3
    c.kt = kt_config.get_config("tiny")
    c.kt.max_train_examples, c.kt.max_test_examples = 64, 32
    c.kt.pairs.num_val, c.kt.pairs.steps_large, c.kt.pairs.steps_small = 2, 3, 3
    c.kt.translator.optimizer = "sgd"      # Adam would scale rounding-level gradients to lr
    c.nc = guide_digits.get_config("tiny")
    c.nc.noisy_classifier.update({"num_steps": 12, "log_every": 6, "checkpoint_every": 6})
    c.cut = ml_collections.ConfigDict({"kd": 5, "edm": 3})
    return c
