"""Epoch time of the same GCN and GAT in jaxgraph and in PyTorch Geometric (CPU).

    nice -n 5 python benchmarks/gnn_vs_pyg.py          # -> benchmarks/results/gnn_vs_pyg.{json,md}
    python benchmarks/gnn_vs_pyg.py --epochs=5 --datasets=cora   # quick

Both read the same packaged Planetoid files (``jaxgraph.planetoid``), use row-normalised
features, self-loops, the same architectures (GCN 16 hidden, dropout 0.5; GAT 8 heads x 8,
ELU, dropout 0.6, 1 output head) and Adam with coupled L2 5e-4. One "epoch" is one
full-batch training step (forward, backward, optimiser update) on the whole graph; the
figure is the median over ``--epochs`` timed steps after 3 warm-up steps (compilation
excluded for JAX). jaxgraph runs with dense features (the same computation as PyG's dense
``x``) and with its sparse first layer (its default). Ratio = PyG time / jaxgraph time
(> 1: jaxgraph faster). Results depend on machine load; the load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_steps(fn, epochs, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def jax_step_fn(dataset, arch, sparse):
    import jax

    from jaxgraph import gnn
    from jaxgraph.train import init_state, load_task, make_optimizer, masked_cross_entropy
    task = load_task(dataset, self_loops=True, sparse=sparse)
    kw = ({"hidden": 16, "dropout": 0.5} if arch == "gcn" else
          {"hidden": 8, "heads": 8, "out_heads": 1, "activation": "elu"})
    model = gnn.make_model(arch, task.num_classes, **kw)
    tx = make_optimizer(0.01 if arch == "gcn" else 0.005, 5e-4)
    state = init_state(model, tx, task, jax.random.PRNGKey(0))

    @jax.jit
    def step(params, opt_state, key):
        def loss_fn(p):
            logits, _ = model.apply({"params": p}, task.graph, task.graph.nodes, False,
                                    rngs={"dropout": key})
            return masked_cross_entropy(logits, task.labels, task.train_mask)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(lambda a, b: a + b, params, updates), opt_state, loss

    carry = {"p": state.params, "o": state.opt_state, "k": jax.random.PRNGKey(1)}

    def run():
        carry["k"], sub = jax.random.split(carry["k"])
        carry["p"], carry["o"], loss = step(carry["p"], carry["o"], sub)
        loss.block_until_ready()
    return run


def pyg_step_fn(dataset, arch):
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import GATConv, GCNConv

    from jaxgraph.planetoid import load_planetoid
    d = load_planetoid(dataset)
    x = torch.tensor(np.asarray(d.row_normalized_features().todense()), dtype=torch.float32)
    edge_index = torch.tensor(np.stack([d.senders, d.receivers]), dtype=torch.long)
    y = torch.tensor(d.labels, dtype=torch.long)
    train = torch.tensor(d.train_idx, dtype=torch.long)
    c = d.num_classes

    class GCN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = GCNConv(x.shape[1], 16), GCNConv(16, c)

        def forward(self, x, ei):
            x = F.dropout(x, 0.5, self.training)
            x = F.dropout(F.relu(self.c1(x, ei)), 0.5, self.training)
            return self.c2(x, ei)

    class GAT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = GATConv(x.shape[1], 8, heads=8, dropout=0.6)
            self.c2 = GATConv(64, c, heads=1, concat=False, dropout=0.6)

        def forward(self, x, ei):
            x = F.dropout(x, 0.6, self.training)
            x = F.dropout(F.elu(self.c1(x, ei)), 0.6, self.training)
            return self.c2(x, ei)

    torch.manual_seed(0)
    model = GCN() if arch == "gcn" else GAT()
    opt = torch.optim.Adam(model.parameters(), lr=0.01 if arch == "gcn" else 0.005,
                           weight_decay=5e-4)
    model.train()

    def run():
        opt.zero_grad()
        loss = F.cross_entropy(model(x, edge_index)[train], y[train])
        loss.backward()
        opt.step()
    return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--datasets", default="cora,citeseer")
    p.add_argument("--archs", default="gcn,gat")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch
    import torch_geometric
    torch.set_num_threads(args.threads)
    import jax
    rows = []
    for dataset in args.datasets.split(","):
        for arch in args.archs.split(","):
            t_pyg = time_steps(pyg_step_fn(dataset, arch), args.epochs)
            t_dense = time_steps(jax_step_fn(dataset, arch, False), args.epochs)
            t_sparse = time_steps(jax_step_fn(dataset, arch, True), args.epochs)
            row = {"dataset": dataset, "model": arch, "pyg_ms": 1e3 * t_pyg,
                   "jax_dense_ms": 1e3 * t_dense, "jax_sparse_ms": 1e3 * t_sparse,
                   "ratio_dense": t_pyg / t_dense, "ratio_sparse": t_pyg / t_sparse,
                   "load_average": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"command": "python benchmarks/gnn_vs_pyg.py " + " ".join(sys.argv[1:]),
            "epochs_timed": args.epochs, "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "jax": jax.__version__,
            "torch_threads": args.threads, "cpu_count": os.cpu_count(), "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "gnn_vs_pyg.json"), "w") as f:
        json.dump(meta, f, indent=1)
    lines = ["| data | model | PyG ms/epoch | jaxgraph dense ms | jaxgraph sparse ms | "
             "ratio PyG/jax dense | ratio PyG/jax sparse | load avg |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['model']} | {r['pyg_ms']:.1f} | "
                     f"{r['jax_dense_ms']:.1f} | {r['jax_sparse_ms']:.1f} | "
                     f"{r['ratio_dense']:.2f} | {r['ratio_sparse']:.2f} | "
                     f"{r['load_average']:.1f} |")
    with open(os.path.join(RESULTS, "gnn_vs_pyg.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
