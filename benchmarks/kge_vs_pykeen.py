"""jaxgraph.kge against PyKEEN on the same data, model, dimension, negatives and batch.

    nice -n 5 python -m benchmarks.kge_vs_pykeen --models=distmult,transe --dim=32 \
        --train_steps=40

For each model, on WN18RR (PyKEEN reads the same train/valid/test text files, extracted
from the bundled tarball into a temporary folder, with jaxgraph's id maps; nothing is
downloaded):

1. Training throughput (triples/s): batch 512, 64 negatives per positive corrupting the
   head or the tail uniformly (PyKEEN ``BasicNegativeSampler``, corruption_scheme
   head/tail), the self-adversarial loss (PyKEEN ``NSSALoss``, jaxgraph's
   ``self_adversarial`` with subsampling off), Adam lr 3e-3, ``--train_steps`` batches
   each (jaxgraph: one jitted ``lax.scan``, compile time excluded by a warm-up call;
   PyKEEN: ``SLCWATrainingLoop`` on a ``--train_steps * 512`` triple subset, one epoch,
   after a warm-up epoch on 2 batches).
2. Filtered evaluation of the test split (both sides, filter train + valid + test,
   realistic ranks) of THE SAME embeddings (trained by jaxgraph for ``--epochs`` epochs,
   copied into the PyKEEN model): seconds and metric agreement.

Writes benchmarks/results/kge_vs_pykeen.json and .md. Timings share the loaded 2 cores
with other jobs: read the ratios, not the absolute times.
"""
from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(model, dim, epochs):
    from benchmarks.kge_table import _base_config
    c = _base_config()(f"{model},wn18rr,dim={dim}")
    c.train.epochs = epochs
    c.train.subsampling = False
    c.train.regularization = 0.0
    c.train.shared_negatives = False
    c.progress = False
    c.eval.test = False
    return c


def _pykeen_model(name, tf, dim):
    import pykeen.models as pm
    from pykeen.losses import NSSALoss
    loss = NSSALoss(margin=6.0 if name == "transe" else 0.0, adversarial_temperature=0.5)
    if name == "transe":
        return pm.TransE(triples_factory=tf, embedding_dim=dim, scoring_fct_norm=1,
                         entity_constrainer=None, loss=loss)
    if name == "distmult":
        return pm.DistMult(triples_factory=tf, embedding_dim=dim, loss=loss)
    raise ValueError(f"model {name!r} not in this benchmark; valid: transe, distmult")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="distmult,transe")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--train_steps", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import torch
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.training import SLCWATrainingLoop
    from pykeen.triples import TriplesFactory

    from jaxgraph import kg_data, ranking
    from jaxgraph.kge import evaluation, experiment
    from jaxgraph.kge import step as kge_step
    torch.set_num_threads(args.threads)
    data = kg_data.load_kg("wn18rr")
    tmp = tempfile.mkdtemp()
    with tarfile.open(os.path.join(kg_data.package_data_dir(), "WN18RR.tar.gz")) as a:
        for s in kg_data.SPLITS:
            a.extract(f"{s}.txt", tmp, filter="data")
    e2i = {e: i for i, e in enumerate(data.entities)}
    r2i = {r: i for i, r in enumerate(data.relations)}
    tfs = {s: TriplesFactory.from_path(os.path.join(tmp, f"{s}.txt"), entity_to_id=e2i,
                                       relation_to_id=r2i) for s in kg_data.SPLITS}
    for s in kg_data.SPLITS:     # PyKEEN's ids == jaxgraph's ids (same sorted vocabulary)
        a = tfs[s].mapped_triples.numpy()
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, data.split(s).tolist()))

    rows = []
    for name in args.models.split(","):
        c = _config(name, args.dim, args.epochs)
        bs, steps = int(c.train.batch_size), args.train_steps
        # --- jaxgraph training throughput
        cfg = experiment.step_config(c, data.num_entities)
        tx = experiment.make_optimizer(c, steps)
        state = kge_step.init_state(cfg, data.num_relations, tx, jax.random.PRNGKey(0))
        rng = np.random.default_rng(0)
        batches = jnp.asarray(data.train[rng.permutation(len(data.train))[:steps * bs]]
                              .reshape(steps, bs, 3))
        w = jnp.ones((steps, bs), jnp.float32)
        state, _ = kge_step.train_epoch(state, batches, w, jax.random.PRNGKey(1),
                                        jnp.float32(0), cfg=cfg, tx=tx)
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        state, _ = kge_step.train_epoch(state, batches, w, jax.random.PRNGKey(2),
                                        jnp.float32(0), cfg=cfg, tx=tx)
        jax.block_until_ready(state)
        jx_train = steps * bs / (time.perf_counter() - t0)
        # --- PyKEEN training throughput
        torch.manual_seed(0)
        sub = tfs["train"].mapped_triples[torch.randperm(len(data.train))[:steps * bs]]
        tf_sub = TriplesFactory(sub, entity_to_id=e2i, relation_to_id=r2i)
        model = _pykeen_model(name, tf_sub, args.dim)
        loop = SLCWATrainingLoop(
            model=model, triples_factory=tf_sub,
            optimizer=torch.optim.Adam(model.get_grad_params(), lr=float(c.train.lr)),
            negative_sampler="basic",
            negative_sampler_kwargs=dict(num_negs_per_pos=int(c.train.num_negatives),
                                         corruption_scheme=("head", "tail")))
        warm = TriplesFactory(sub[:2 * bs], entity_to_id=e2i, relation_to_id=r2i)
        loop.train(triples_factory=warm, num_epochs=1, batch_size=bs, use_tqdm=False)
        t0 = time.perf_counter()
        loop.train(triples_factory=tf_sub, num_epochs=1, batch_size=bs, use_tqdm=False,
                   drop_last=True)
        pk_train = steps * bs / (time.perf_counter() - t0)
        # --- same embeddings, filtered test evaluation in both
        with tempfile.TemporaryDirectory() as wd:
            experiment.train_and_evaluate(c, wd)
            b, params, _ = evaluation.load_checkpoint(wd)
        filt = data.all_triples()
        ranking.evaluate(b, params, data.test[:256], filt, data.num_relations)   # compile
        jx = ranking.evaluate(b, params, data.test, filt, data.num_relations)
        model = _pykeen_model(name, tfs["train"], args.dim)
        with torch.no_grad():
            model.entity_representations[0]._embeddings.weight.copy_(
                torch.as_tensor(np.asarray(params["entity"])))
            model.relation_representations[0]._embeddings.weight.copy_(
                torch.as_tensor(np.asarray(params["relation"])))
        model.eval()
        ev = RankBasedEvaluator()
        t0 = time.perf_counter()
        res = ev.evaluate(model, tfs["test"].mapped_triples, batch_size=256, use_tqdm=False,
                          additional_filter_triples=[tfs["train"].mapped_triples,
                                                     tfs["valid"].mapped_triples])
        pk_eval_s = time.perf_counter() - t0
        pk = {"mrr": res.get_metric("both.realistic.inverse_harmonic_mean_rank"),
              "mr": res.get_metric("both.realistic.arithmetic_mean_rank"),
              **{f"hits@{k}": res.get_metric(f"both.realistic.hits_at_{k}")
                 for k in (1, 3, 10)}}
        row = {"model": name, "dim": args.dim, "batch_size": bs,
               "num_negatives": int(c.train.num_negatives), "train_steps": steps,
               "jaxgraph_train_triples_per_s": jx_train, "pykeen_train_triples_per_s": pk_train,
               "train_speedup": jx_train / pk_train,
               "jaxgraph_eval_s": jx["seconds"], "pykeen_eval_s": pk_eval_s,
               "eval_speedup": pk_eval_s / jx["seconds"],
               "jaxgraph_metrics": {k: jx[k] for k in pk}, "pykeen_metrics": pk,
               "max_abs_metric_diff": max(abs(jx[k] - pk[k]) / (jx[k] if k == "mr" else 1)
                                          for k in pk)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_results(rows, args.threads)


def write_results(rows, threads):
    """benchmarks/results/kge_vs_pykeen.{json,md} from the per-model rows."""
    from importlib.metadata import version
    out = os.path.join(ROOT, "benchmarks", "results", "kge_vs_pykeen")
    meta = {"rows": rows, "torch_threads": threads, "pykeen_version": version("pykeen"),
            "jax_version": version("jax"), "torch_version": version("torch")}
    with open(out + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    with open(out + ".md", "w") as f:
        f.write("| model | dim | train triples/s jaxgraph | PyKEEN | ratio | test eval s "
                "jaxgraph | PyKEEN | ratio | MRR jaxgraph | MRR PyKEEN | H@10 jaxgraph | "
                "H@10 PyKEEN | max diff |\n|" + "---|" * 13 + "\n")
        for r in rows:
            j, p = r["jaxgraph_metrics"], r["pykeen_metrics"]
            f.write(f"| {r['model']} | {r['dim']} | {r['jaxgraph_train_triples_per_s']:.0f} | "
                    f"{r['pykeen_train_triples_per_s']:.0f} | {r['train_speedup']:.2f} | "
                    f"{r['jaxgraph_eval_s']:.1f} | {r['pykeen_eval_s']:.1f} | "
                    f"{r['eval_speedup']:.2f} | {j['mrr']:.5f} | {p['mrr']:.5f} | "
                    f"{j['hits@10']:.5f} | {p['hits@10']:.5f} | "
                    f"{r['max_abs_metric_diff']:.1e} |\n")


if __name__ == "__main__":
    main()
