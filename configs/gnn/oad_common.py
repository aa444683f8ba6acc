"""The OAD config shared by configs/gnn/oad_cora.py and configs/gnn/oad_citeseer.py.

Defaults (the reference citation script, paper-faithful variant): 4 students, T = 3,
warm-up 100 + OKD 100 epochs, Adam 5e-3 with coupled L2 5e-4, logitkd_trade = gan_trade =
d_trade = 1, discriminators GraphConv(16 -> 1) (GCN) or (D -> 16 -> 1) (GAT / SAGE),
selection on validation accuracy.

Options (comma-separated after the colon): gcn | gat | sage | mix (students; mix = GCN,
SAGE, GCN, SAGE: the discriminator ring needs equal hidden widths, so GAT, 8 heads x 16 =
128 wide, does not mix), code (every reference-code quirk: no self-loops, GCN without
dropout, GAT ReLU + 8 output heads, ReLU on the discriminator output, KD divided by N C,
test-mask selection on Cora), nolocal (gan_trade = 0: no discriminators), noglobal
(logitkd_trade = 0), alone (one student, CE only, same epochs and optimiser), gan=<x>
(gan_trade = x, e.g. gan=0.1 as in the reference PPI script's GAT command; d_trade stays 1:
Adam makes the discriminators' step all but independent of its loss scale), seeds=<n>,
tiny (a few epochs, 2 students, 2 seeds; tests).

Model selection: an OAD run selects among its OKD epochs only (the reference code's
choice); "alone" (no OKD term) selects over all its epochs (jaxgraph.oad.selection_start).
"""
import ml_collections

from jaxinfra import config_args

MODEL_DEFAULTS = {
    "gcn": {"hidden": 16, "dropout": 0.5},
    "gat": {"hidden": 16, "heads": 8, "out_heads": 1, "activation": "elu",
            "feat_drop": 0.6, "attn_drop": 0.6},
    "sage": {"hidden": 16, "dropout": 0.5},
}
MIX = ("gcn", "sage", "gcn", "sage")


def oad_config(dataset: str, arg=None) -> ml_collections.ConfigDict:
    """The OAD config for ``dataset`` ("cora" or "citeseer") and the options ``arg``."""
    args = config_args.parse(
        arg, flags=("code", "nolocal", "noglobal", "alone", "tiny"),
        choices={"students": ("gcn", "gat", "sage", "mix")}, defaults={"students": "gcn"},
        values={"seeds": int, "gan": float})
    opts, arch = args.flags, args.choices["students"]
    c = ml_collections.ConfigDict()
    c.dataset = dataset
    c.data_dir = ""                       # "": the packaged Cora / Citeseer files
    c.self_loops = True                   # reference code: False
    c.sparse_features = True
    c.students = MIX if arch == "mix" else (arch,) * 4
    c.models = ml_collections.ConfigDict({k: dict(v) for k, v in MODEL_DEFAULTS.items()})
    c.disc = ml_collections.ConfigDict({"d_dim": 16, "final_relu": False, "lr": 5e-3})
    c.kd = ml_collections.ConfigDict({"temperature": 3.0, "scale": "paper"})
    c.logitkd_trade = 1.0
    c.gan_trade = 1.0
    c.d_trade = 1.0
    c.warmup_epochs = 100
    c.okd_epochs = 100
    c.optim = ml_collections.ConfigDict({"lr": 5e-3, "weight_decay": 5e-4})
    c.select_on = "val"                   # "test": reference Cora script (leaks test data)
    c.seed = 0
    c.num_seeds = 1
    c.log_every = 10
    c.checkpoint_every = 50
    c.extend = False                      # True: continue a finished run to more okd_epochs
    c.progress = True
    if "code" in opts:
        c.self_loops = False
        c.models.gcn.dropout = 0.0
        c.models.gat.activation = "relu"
        c.models.gat.out_heads = 8
        c.disc.final_relu = True
        c.kd.scale = "code"
        c.select_on = "test" if dataset == "cora" else "val"
    if "nolocal" in opts:
        c.gan_trade = 0.0
    if "noglobal" in opts:
        c.logitkd_trade = 0.0
    if "alone" in opts:
        c.students = c.students[:1]
        c.gan_trade = 0.0
        c.logitkd_trade = 0.0
    if "gan" in args.values:
        gan = args.values["gan"]
        clash = sorted(opts & {"nolocal", "alone"})
        if clash:
            raise ValueError(f"config option gan={gan} contradicts {clash[0]!r} (which sets "
                             "gan_trade = 0); give one of them")
        if not gan >= 0:
            raise ValueError(f"config option gan={gan} must be a number >= 0 (gan_trade)")
        c.gan_trade = gan
    c.num_seeds = args.values.get("seeds", c.num_seeds)
    if "tiny" in opts:
        c.students = c.students[:2]
        c.warmup_epochs = 2
        c.okd_epochs = 3
        c.num_seeds = 2
        c.log_every = 1
        c.checkpoint_every = 2
        c.progress = False
    return c
