"""OAD (online adversarial distillation, graph.md §5) on Cora with the public split.

    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py --workdir=runs/oad_cora
    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py:gat,seeds=10 --workdir=runs/oad_cora_gat
    python -m jaxgraph.oad --config=configs/gnn/oad_cora.py:gcn,code --workdir=runs/oad_cora_code

Defaults (the reference citation script, paper-faithful variant): 4 students, T = 3,
warm-up 100 + OKD 100 epochs, Adam 5e-3 with coupled L2 5e-4, logitkd_trade = gan_trade =
d_trade = 1, discriminators GraphConv(16 -> 1) (GCN) or (D -> 16 -> 1) (GAT / SAGE),
selection on validation accuracy. Runtime on 2 shared CPU cores: about 10-60 s per seed
group (10 seeds vmapped: GCN ~20 s, GAT a few minutes).
Measured results: docs/jaxgraph_gnn.md (benchmarks/results/oad_table.json).

Options (comma-separated after the colon): gcn | gat | sage | mix (students; mix = GCN,
SAGE, GCN, SAGE: the discriminator ring needs equal hidden widths, so GAT, 8 heads x 16 =
128 wide, does not mix),
code (every reference-code quirk: no self-loops, GCN without dropout, GAT ReLU + 8 output
heads, ReLU on the discriminator output, KD divided by N C, test-mask selection),
nolocal / noglobal (ablations), alone (one student, CE only), seeds=<n>, tiny.
"""
from jaxgraph.oad import default_config


def get_config(arg=None):
    return default_config("cora", arg)
