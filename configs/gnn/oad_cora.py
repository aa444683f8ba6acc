"""OAD (online adversarial distillation, graph.md §5) on Cora with the public split.

    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py --workdir=runs/oad_cora
    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py:gat,seeds=10 --workdir=runs/oad_cora_gat
    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py:gcn,code --workdir=runs/oad_cora_code
    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py:gat,gan=0.1,seeds=10 --workdir=runs/oad_cora_gat_gan01

Defaults and options: configs/gnn/oad_common.py (e.g. ``:gcn,code`` selects every
reference-code quirk, with test-mask selection as the reference Cora script does).
Runtime on 2 shared CPU cores: about 10-60 s per seed group (10 seeds vmapped: GCN ~20 s,
GAT a few minutes). Measured results: docs/jaxgraph_gnn.md
(benchmarks/results/oad_table.json).
"""
from configs.gnn.oad_common import oad_config


def get_config(arg=None):
    return oad_config("cora", arg)
