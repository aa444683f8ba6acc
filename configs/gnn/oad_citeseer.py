"""OAD (online adversarial distillation, graph.md §5) on Citeseer with the public split.

    python -m jaxgraph.oad --config=configs/gnn/oad_citeseer.py --workdir=runs/oad_citeseer
    python -m jaxgraph.oad --config=configs/gnn/oad_citeseer.py:gat,seeds=10 --workdir=runs/oad_citeseer_gat
    python -m jaxgraph.oad --config=configs/gnn/oad_citeseer.py:gcn,code --workdir=runs/oad_citeseer_code

Defaults and options: configs/gnn/oad_common.py, as for Cora, except that ``code`` keeps
validation selection here: the reference Citeseer script does not select on the test mask. Measured results:
docs/jaxgraph_gnn.md (benchmarks/results/oad_table.json).
"""
from configs.gnn.oad_common import oad_config


def get_config(arg=None):
    return oad_config("citeseer", arg)
