"""Early stopping in jaxgraph.kge (eval.select=best_valid): the reported epoch is the one
of the highest validation MRR among the logged candidates, its test metrics are the ones
logged at that epoch, the test set chooses nothing, and the choice survives a resume."""
import json

import pytest

from configs.kge.kge import get_config as kge_config
from jaxgraph.kge import experiment


def _config(epochs=4):
    c = kge_config(f"distmult,tiny,epochs={epochs}")
    c.eval.every, c.eval.select, c.checkpoint_every = 1, "best_valid", 1
    return c


def _logged(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    valid = {r["step"]: r["valid/mrr"] for r in rows if "valid/mrr" in r}
    test = {r["step"]: r["test/mrr"] for r in rows if "test/mrr" in r}
    return valid, test


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    w = tmp_path_factory.mktemp("sel") / "w"
    return w, experiment.train_and_evaluate(_config(), str(w))


def test_selected_epoch_is_the_argmax_of_logged_validation(straight):
    w, res = straight
    valid, test = _logged(w)
    assert sorted(valid) == sorted(test) == [1, 2, 3, 4]     # every epoch a candidate
    best = max(valid.values())
    epoch = min(e for e, v in valid.items() if v == best)    # the earliest on ties
    sel = res["selected"]
    assert sel["epoch"] == epoch
    assert sel["valid"]["mrr"] == valid[epoch] and sel["test"]["mrr"] == test[epoch]
    assert res["test"]["mrr"] == test[4]                     # "test" stays the last epoch


def test_select_breaks_ties_towards_the_earliest_epoch(tmp_path):
    lines = [{"step": e, "valid/mrr": v, "test/mrr": t}
             for e, v, t in [(1, 0.2, 0.9), (2, 0.5, 0.1), (3, 0.5, 0.3), (4, 0.4, 0.8)]]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    sel = experiment.select_best_valid(str(tmp_path))
    assert sel == {"epoch": 2, "valid": {"mrr": 0.5}, "test": {"mrr": 0.1}}


def test_selection_survives_a_resume(straight, tmp_path):
    _, res = straight
    w = tmp_path / "w"
    experiment.train_and_evaluate(_config(), str(w), stop_at_epoch=2)
    resumed = experiment.train_and_evaluate(_config(), str(w))

    def metrics(sel):                                   # evaluation times differ
        return {k: {m: v for m, v in x.items() if m != "seconds"} if isinstance(x, dict)
                else x for k, x in sel.items()}
    assert metrics(resumed["selected"]) == metrics(res["selected"])


def test_every_is_a_setting_only_when_it_selects():
    a, b = _config(), _config()
    b.eval.every = 2
    assert experiment.run_settings(a) != experiment.run_settings(b)
    a.eval.select = b.eval.select = "last"
    assert experiment.run_settings(a) == experiment.run_settings(b)


def test_csd_protocol_configs_and_table():
    from benchmarks import kge_csd_protocol as proto
    c = proto.run_config("rotate", "wn18rr", 32, 1, epochs=40, every=4, lr=0.01, reg=1e-4,
                         csd="mlp", lam=0.1)
    assert (c.model.dim, c.seed, c.train.epochs, c.train.lr) == (32, 1, 40, 0.01)
    assert (c.train.schedule, c.train.decay_fraction, c.train.regularization) == (
        "step", 0.5, 1e-4)
    assert (c.eval.every, c.eval.select, c.eval.valid_max_queries) == (4, "best_valid", 0)
    assert c.csd.enabled and (c.csd.confidence, c.csd.weight) == ("mlp", 0.1)
    experiment.check_config(c)
    base = proto.run_config("rotate", "wn18rr", 32, 0, epochs=40, every=4, lr=0.01, reg=0.0)
    assert not base.csd.enabled and proto.overrides(base)["confidence"] is None

    def result(seed, mrr):
        return {"seed": seed, "protocol": proto.overrides(c), "test": {"mrr": mrr - 0.01},
                "selected": {"epoch": 36, "test": {"mrr": mrr, "hits@10": 2 * mrr}}}
    summary = proto.summarise([{"model": "rotate", "dim": 32,
                                "rows": {"csd_mlp": [result(0, 0.3), result(1, 0.4)]}}])
    (row,) = summary
    assert row["test_mrr"]["mean"] == pytest.approx(0.35)
    assert row["test_mrr"]["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert row["last_epoch_test_mrr"]["values"] == [0.29, 0.39]
    table = proto.render({"summary": summary, "data": "wn18rr", "hardware": "cpu",
                          "wall_minutes": 1.0, "protocol": {"epochs": 40, "every": 4,
                                                            "lrs": "0.01",
                                                            "regs": "0,1e-4",
                                                            "lambdas": "0.1,1",
                                                            "seeds": [0, 1]}})
    assert "| rotate | 32 | CSD, semantic module (λ chosen) | lr 0.01, reg 0.0001, λ 0.1 | " \
           "0.350 ± 0.071 | 0.700 ± 0.141 | 0.340 ± 0.071 | 36, 36 |" in table
