"""jaxgraph: knowledge-graph embedding with CSD self-distillation, and Jraph GNNs with
Online Adversarial Distillation.

    from jaxgraph import kg_data, kge_models, ranking     # link prediction
    from jaxgraph.kge import step, trainer, evaluation    # KGE training (jaxgraph.kge)
    from jaxgraph.kge import sharded                      # entity tables over devices
    from jaxgraph import planetoid, gnn, oad              # node classification

Entry points: ``python -m jaxgraph.kge``, ``python -m jaxgraph.train`` (one GNN) and
``python -m jaxgraph.oad``, each with ``--config=... --workdir=...`` (configs in
``configs/kge`` and ``configs/gnn``). Run infrastructure (metrics, checkpoints, the
command line) comes from :mod:`jaxinfra`; jaxgraph never imports jaxdiff or jaxkd.
"""
from jaxgraph import csd, gnn, graphs, kg_data, kge_models, planetoid, ranking

__all__ = ["csd", "gnn", "graphs", "kg_data", "kge_models", "planetoid", "ranking"]
__version__ = "0.1.0"
