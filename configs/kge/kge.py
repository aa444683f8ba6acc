"""KGE link prediction (jaxgraph.kge): one base config, options after the colon.

    python -m jaxgraph.kge --config=configs/kge/kge.py:rotate,wn18rr,dim=32 --workdir=runs/kge/rotate_wn18rr_32
    python -m jaxgraph.kge --config=configs/kge/kge.py:rotate,wn18rr,csd,dim=32 --workdir=runs/kge/rotate_wn18rr_32_csd
    python -m jaxgraph.kge --config=configs/kge/rotate_wn18rr_csd.py --workdir=W   # same, thin file

Options (comma-separated):
  model      transe | distmult | complex | rotate | simple | tucker   (default rotate)
  data       wn18rr | fb15k-237 | synthetic                           (default wn18rr)
  csd        CSD-like self-distillation on (graph.md §2.1 reconstruction; default off)
  dim=N      real parameters per entity (default 32)
  epochs=N   training epochs;  seed=N;  negatives=N;  lr=X
  tiny       a few steps on the generated graph (tests; seconds)
Any field can also be overridden with --config.train.lr=... etc.

Re-running with the same --workdir resumes it (same settings only; every difference is
listed). --config.extend=True continues a finished run to a larger train.epochs.

CPU budget (the README table): batch 512, 64 uniform negatives, self-adversarial
alpha = 0.5 (WN18RR) / 1.0 (FB15k-237), Adam lr 3e-3 constant, 10 epochs on WN18RR
(1690 steps). This is a SHORT schedule: the RotatE paper's anchor (d = 500/1000 complex,
80k-100k steps, 256-1024 negatives) is far beyond 2 CPU cores. Measured runtimes and
metrics are in docs/jaxgraph_kge.md.
"""
import ml_collections

from jaxgraph.kge_models import BACKBONES
from jaxinfra import config_args

MODELS = tuple(BACKBONES)
DATA = ("wn18rr", "fb15k-237", "synthetic")


def get_config(arg=None):
    args = config_args.parse(
        arg, flags=("csd", "tiny"), choices={"model": MODELS, "data": DATA},
        defaults={"model": "rotate", "data": "wn18rr"},
        aliases={"fb15k237": "fb15k-237", "fb237": "fb15k-237"},
        values={"dim": int, "epochs": int, "seed": int, "negatives": int, "lr": float})
    model, data, flags, kv = args.choices["model"], args.choices["data"], args.flags, args.values
    fb = data == "fb15k-237"
    c = ml_collections.ConfigDict()
    c.dataset = data
    c.data_dir = ""                  # "": the copies bundled in jaxgraph/data_files/kg
    c.vocabulary = "all"             # ids over all splits, or "train" (train names only)
    c.unseen = "keep"                # valid/test triples unseen in train: keep | filter | error
    c.synthetic = ml_collections.ConfigDict({"num_entities": 40, "num_relations": 4, "seed": 0})
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = model
    c.model.dim = 32
    c.model.gamma = 9.0 if fb else 6.0          # TransE / RotatE margin (RotatE's configs)
    c.model.init_range = 0.0                    # 0: RotatE's emb_range (TransE, RotatE), 0.1 else

    c.train = ml_collections.ConfigDict()
    c.train.loss = "self_adversarial"           # or 1vsall
    c.train.num_negatives = 64
    c.train.shared_negatives = False            # True: one negative set per batch (faster)
    c.train.adv_temperature = 1.0 if fb else 0.5
    c.train.subsampling = True
    c.train.batch_size = 512
    c.train.epochs = 3 if fb else 10
    c.train.optimizer = "adam"                  # or adagrad
    c.train.lr = 3e-3
    c.train.schedule = "constant"               # or step (lr / 10 after decay_fraction)
    c.train.decay_fraction = 0.5
    bilinear = model not in ("transe", "rotate")
    c.train.regularization = 1e-5 if bilinear else 0.0
    c.train.reg_type = "n3"

    c.csd = ml_collections.ConfigDict()
    c.csd.enabled = "csd" in flags
    c.csd.weight = 1.0                          # lambda
    c.csd.delta = 1.0                           # Huber delta
    c.csd.tau = 1.0
    c.csd.confidence = "margin"                 # margin | softmax | mlp | none
    c.csd.target = "scores"                     # scores | embeddings
    c.csd.refresh_epochs = 1                    # teacher = copy of the model every N epochs
    c.csd.ema = 0.0                             # > 0: EMA teacher instead
    c.csd.warmup_epochs = 1
    c.csd.hidden = 32

    c.eval = ml_collections.ConfigDict()
    c.eval.every = 0                            # validation every N epochs (0: only at the end)
    c.eval.select = "last"                      # or best_valid: test at the best-valid epoch
    c.eval.valid_max_queries = 0                # 0: the whole validation split
    c.eval.batch_size = 256
    c.eval.chunk = 2048
    c.eval.test = True

    # Past one device (jaxgraph.kge.sharded): the entity table, its Adam moments and the
    # ranking split over `model` devices by entity rows; batches over `data` devices.
    # (1, 1): unsharded. E.g. --config.mesh.model=4 on 4 devices.
    c.mesh = ml_collections.ConfigDict({"model": 1, "data": 1})

    c.checkpoint_every = 1
    c.keep_checkpoints = 2
    c.extend = False                 # True: continue a finished run to more epochs
    c.progress = True

    if "tiny" in flags:
        c.dataset = "synthetic"
        c.model.dim = 8
        c.train.batch_size = 16
        c.train.num_negatives = 8
        c.train.epochs = 2
        c.train.lr = 1e-2
        c.eval.batch_size = 16
        c.eval.chunk = 16
        c.progress = False
    c.model.dim = kv.get("dim", c.model.dim)
    c.train.epochs = kv.get("epochs", c.train.epochs)
    c.seed = kv.get("seed", c.seed)
    c.train.num_negatives = kv.get("negatives", c.train.num_negatives)
    c.train.lr = kv.get("lr", c.train.lr)
    return c
