"""KGE training: memorising a tiny graph, exact resume, config errors, the CLI."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.kge.kge import get_config as kge_config
from jaxgraph import kg_data, kge_models, ranking
from jaxgraph.kge import evaluation, experiment
from jaxgraph.kge import step as kge_step

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_memorises_tiny_graph():
    data = kg_data.synthetic_kg(12, 2, seed=0)
    triples = data.all_triples()                                  # (24, 3)
    c = kge_config("complex,tiny,dim=16,lr=0.1")
    cfg = kge_step.StepConfig(kge_models.get_backbone("complex", 16), 12, loss="1vsall",
                              regularization=0.0)
    tx = experiment.make_optimizer(c, 100)
    state = kge_step.init_state(cfg, 2, tx, jax.random.PRNGKey(0))
    batches = jnp.broadcast_to(jnp.asarray(triples), (100,) + triples.shape)
    state, metrics = kge_step.train_epoch(state, batches, jnp.ones(batches.shape[:2]),
                                          jax.random.PRNGKey(1), jnp.float32(0), cfg=cfg,
                                          tx=tx)
    assert metrics["loss"][-1] < 0.05 * metrics["loss"][0]
    m = ranking.evaluate(cfg.backbone, state.params["kge"], triples, triples, 2)
    assert m["mrr"] == 1.0 and m["hits@1"] == 1.0 and m["mr"] == 1.0


def test_resume_is_exact_and_results(tmp_path):
    c = kge_config("rotate,tiny,csd,epochs=2")
    c.checkpoint_every = 1
    full = experiment.train_and_evaluate(c, str(tmp_path / "full"))
    part = experiment.train_and_evaluate(c, str(tmp_path / "part"), stop_at_epoch=1)
    assert part["epochs_done"] == 1 and "test" not in part
    resumed = experiment.train_and_evaluate(c, str(tmp_path / "part"))
    _, p_full, meta = evaluation.load_checkpoint(str(tmp_path / "full"))
    b, p_res, _ = evaluation.load_checkpoint(str(tmp_path / "part"))
    assert b is kge_models.get_backbone("rotate", 8)
    assert meta["epoch"] == 2
    for k in p_full:
        np.testing.assert_array_equal(p_full[k], p_res[k])
    assert resumed["test"] == {**full["test"], "seconds": resumed["test"]["seconds"]}
    t = full["test"]
    assert 0 < t["mrr"] <= 1 and 1 <= t["mr"] <= 40 and t["hits@1"] <= t["hits@10"]
    lines = open(tmp_path / "full" / "metrics.jsonl").read().splitlines()
    assert len(lines) == 4 and '"test/mrr"' in lines[-1] and '"train/kd_loss"' in lines[0]
    # another model in the same workdir is refused
    with pytest.raises(ValueError, match=r"holds a KGE checkpoint .*other settings: "
                       r"csd\.enabled: True -> False; model\.name: 'rotate' -> 'transe'\. "
                       r"Use a new --workdir"):
        experiment.train_and_evaluate(kge_config("transe,tiny"), str(tmp_path / "full"))
    with pytest.raises(FileNotFoundError, match="no KGE checkpoints in .*train first"):
        evaluation.load_checkpoint(str(tmp_path / "nothing"))


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config option 'rotatee'.*transe"):
        kge_config("rotatee,wn18rr")
    c = kge_config("tiny")
    c.model.name = "hole"
    with pytest.raises(ValueError, match="unknown KGE model 'hole'; valid: transe"):
        experiment.train_and_evaluate(c, "/tmp/never-written")
    c = kge_config("tiny")
    c.train.loss = "margin"
    with pytest.raises(ValueError, match="unknown train.loss 'margin'"):
        experiment.step_config(c, 10)
    c = kge_config("tiny")
    c.csd.enabled, c.csd.confidence = True, "entropy"
    with pytest.raises(ValueError, match="unknown csd.confidence 'entropy'"):
        experiment.step_config(c, 10)
    with pytest.raises(ValueError, match="unknown config option 'tyni'; accepted: .*tiny"):
        kge_config("tyni")
    with pytest.raises(ValueError, match="'rotate' and 'transe' exclude each other"):
        kge_config("rotate,transe")
    with pytest.raises(ValueError, match="config option dim='x' is not a valid int"):
        kge_config("dim=x")
    c = kge_config("FB237, tucker, dim=16, lr=0.1, csd")
    assert (c.dataset, c.model.name, c.model.dim, c.train.lr, c.csd.enabled) == (
        "fb15k-237", "tucker", 16, 0.1, True)
    assert (c.model.gamma, c.train.regularization) == (9.0, 1e-5)


def test_thin_config_files_append_options():
    from configs.kge.rotate_wn18rr_csd import get_config
    c = get_config("dim=64,seed=1")
    assert (c.model.name, c.dataset, c.csd.enabled, c.model.dim, c.seed) == (
        "rotate", "wn18rr", True, 64, 1)
    with pytest.raises(ValueError, match="exclude each other"):
        get_config("transe")


def test_cli_tiny(tmp_path):
    """``python -m jaxgraph.kge`` (the package's __main__) on the tiny config."""
    out = subprocess.run(
        [sys.executable, "-m", "jaxgraph.kge", "--config=configs/kge/kge.py:tiny",
         f"--workdir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = json.loads(out.stdout.strip().splitlines()[-1])
    assert printed["model"] == "rotate" and printed["epochs_done"] == 2
    assert 0 < printed["test"]["mrr"] <= 1
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]
