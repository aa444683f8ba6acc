"""KGE training: memorising a tiny graph, exact resume, config errors."""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import kg_data, kge, kge_models, ranking

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _get_config(arg):
    spec = importlib.util.spec_from_file_location(
        "kge_cfg", os.path.join(ROOT, "configs", "kge", "kge.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg)


def test_memorises_tiny_graph():
    data = kg_data.synthetic_kg(12, 2, seed=0)
    triples = data.all_triples()                                  # (24, 3)
    c = _get_config("complex,tiny,dim=16,lr=0.1")
    cfg = kge.StepConfig(kge_models.get_backbone("complex", 16), 12, loss="1vsall",
                         regularization=0.0)
    tx = kge.make_optimizer(c, 100)
    state = kge.init_state(cfg, 2, tx, jax.random.PRNGKey(0))
    batches = jnp.broadcast_to(jnp.asarray(triples), (100,) + triples.shape)
    state, metrics = kge.train_epoch(state, batches, jnp.ones(batches.shape[:2]),
                                     jax.random.PRNGKey(1), jnp.float32(0), cfg=cfg, tx=tx)
    assert metrics["loss"][-1] < 0.05 * metrics["loss"][0]
    m = ranking.evaluate(cfg.backbone, state.params["kge"], triples, triples, 2)
    assert m["mrr"] == 1.0 and m["hits@1"] == 1.0 and m["mr"] == 1.0


def test_resume_is_exact_and_results(tmp_path):
    c = _get_config("rotate,tiny,csd,epochs=2")
    c.checkpoint_every = 1
    full = kge.train_and_evaluate(c, str(tmp_path / "full"))
    part = kge.train_and_evaluate(c, str(tmp_path / "part"), stop_at_epoch=1)
    assert part["epochs_done"] == 1 and "test" not in part
    resumed = kge.train_and_evaluate(c, str(tmp_path / "part"))
    _, p_full, meta = kge.load_checkpoint(str(tmp_path / "full"))
    _, p_res, _ = kge.load_checkpoint(str(tmp_path / "part"))
    assert meta["epoch"] == 2
    for k in p_full:
        np.testing.assert_array_equal(p_full[k], p_res[k])
    assert resumed["test"] == {**full["test"], "seconds": resumed["test"]["seconds"]}
    t = full["test"]
    assert 0 < t["mrr"] <= 1 and 1 <= t["mr"] <= 40 and t["hits@1"] <= t["hits@10"]
    lines = open(tmp_path / "full" / "metrics.jsonl").read().splitlines()
    assert len(lines) == 4 and '"test/mrr"' in lines[-1] and '"train/kd_loss"' in lines[0]
    # another model in the same workdir is refused
    with pytest.raises(ValueError, match="different run"):
        kge.train_and_evaluate(_get_config("transe,tiny"), str(tmp_path / "full"))


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config option 'rotatee'.*transe"):
        _get_config("rotatee,wn18rr")
    c = _get_config("tiny")
    c.model.name = "hole"
    with pytest.raises(ValueError, match="unknown KGE model 'hole'; valid: transe"):
        kge.train_and_evaluate(c, "/tmp/never-written")
    c = _get_config("tiny")
    c.train.loss = "margin"
    with pytest.raises(ValueError, match="unknown train.loss 'margin'"):
        kge.step_config(c, 10)
    c = _get_config("tiny")
    c.csd.enabled, c.csd.confidence = True, "entropy"
    with pytest.raises(ValueError, match="unknown csd.confidence 'entropy'"):
        kge.step_config(c, 10)
