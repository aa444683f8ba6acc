"""One GNN (GCN / GAT / GraphSAGE) on a Planetoid graph, original-paper recipes.

    python -m jaxgraph.train --config=configs/gnn/gnn_planetoid.py:cora,gcn --workdir=runs/gcn_cora
    python -m jaxgraph.train --config=configs/gnn/gnn_planetoid.py:citeseer,gat --workdir=runs/gat_citeseer

Recipes: GCN = Kipf & Welling (self-loops, 16 hidden, dropout 0.5, Adam 0.01, L2 5e-4 on
the first layer only, 200 epochs); GAT = Velickovic et al. (8 heads x 8, ELU, dropout 0.6,
Adam 0.005, L2 5e-4, 1 output head); SAGE = mean aggregator, 16 hidden, dropout 0.5, the
GAT optimiser. No early stopping: the test accuracy reported is the one at the epoch of
best validation accuracy. Runtime: a few seconds on 2 CPU cores (sparse input features).
Expected test accuracy (published): GCN 81.5 Cora / 70.3 Citeseer; GAT 83.0 / 72.5.

Options (comma-separated after the colon): cora | citeseer | pubmed (dataset; pubmed needs
--config.data_dir), gcn | gat | sage (model), tiny (5 epochs, for tests).
"""
import ml_collections

from jaxinfra import config_args

_DATASETS = ("cora", "citeseer", "pubmed")
_ARCHS = ("gcn", "gat", "sage")


def get_config(arg=None):
    args = config_args.parse(arg, flags=("tiny",),
                             choices={"dataset": _DATASETS, "model": _ARCHS},
                             defaults={"dataset": "cora", "model": "gcn"})
    arch = args.choices["model"]
    c = ml_collections.ConfigDict()
    c.dataset = args.choices["dataset"]
    c.data_dir = ""                   # "": the packaged Cora / Citeseer files
    c.self_loops = True
    c.sparse_features = True
    c.seed = 0
    c.epochs = 200
    if arch == "gcn":
        c.model = ml_collections.ConfigDict({"arch": "gcn", "hidden": 16, "dropout": 0.5})
        c.optim = ml_collections.ConfigDict({"lr": 0.01, "weight_decay": 5e-4,
                                             "decay_first_layer_only": True})
    elif arch == "gat":
        c.model = ml_collections.ConfigDict({
            "arch": "gat", "hidden": 8, "heads": 8, "out_heads": 1, "activation": "elu",
            "feat_drop": 0.6, "attn_drop": 0.6})
        c.optim = ml_collections.ConfigDict({"lr": 0.005, "weight_decay": 5e-4,
                                             "decay_first_layer_only": False})
    else:
        c.model = ml_collections.ConfigDict({"arch": "sage", "hidden": 16, "dropout": 0.5})
        c.optim = ml_collections.ConfigDict({"lr": 0.005, "weight_decay": 5e-4,
                                             "decay_first_layer_only": False})
    c.log_every = 10
    c.checkpoint_every = 50
    c.extend = False                  # True: continue a finished run to more epochs
    c.progress = True
    if "tiny" in args.flags:
        c.epochs = 5
        c.log_every = 1
        c.checkpoint_every = 2
        c.progress = False
    return c
