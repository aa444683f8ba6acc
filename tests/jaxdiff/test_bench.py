"""The solver benchmark (make demo) end to end in its tiny mode."""
import json

import pytest

import jaxdiff
from configs.bench_digits import get_config
from jaxdiff.experiments import bench


@pytest.mark.parametrize("solver", sorted(bench.SOLVER_SETTINGS))
def test_plan_hits_the_nfe_exactly(solver):
    opts = bench.SOLVER_SETTINGS[solver][2]
    for nfe in range(3, 11):
        n, afs = bench.plan(solver, nfe)
        assert jaxdiff.nfe(solver, n, afs=afs, **opts) == nfe
        assert afs == (solver in ("heun", "dpm2") and nfe % 2 == 1)


def test_tiny_benchmark_writes_everything(tmp_path):
    cfg = get_config("tiny")
    res = bench.run(cfg, str(tmp_path))
    for name in ("results.json", "results.md", "metrics.jsonl", "error_vs_nfe_gmm.png",
                 "samples_gmm.png", "error_vs_nfe_optimal.png", "samples_optimal.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = res["regimes"]["gmm"]["rows"]
    assert len(rows) == len(cfg.solvers) * len(cfg.nfes)
    err = {(r["solver"], r["nfe"]): r["error"] for r in rows}
    # more calls help, and a 4th-order multistep beats Euler at equal NFE on the smooth regime
    assert err[("euler", 5)] < err[("euler", 4)]
    assert err[("ipndm", 5)] < err[("euler", 5)]
    with open(tmp_path / "metrics.jsonl") as f:
        assert len(f.readlines()) == 2 * len(rows)
    json.loads((tmp_path / "results.json").read_text())


def test_bad_config_fails_before_work(tmp_path):
    cfg = get_config("tiny")
    cfg.solvers = ("euler", "rk45")
    with pytest.raises(ValueError, match=r"unknown solver\(s\) \['rk45'\]"):
        bench.run(cfg, str(tmp_path))
    cfg = get_config("tiny")
    cfg.regimes = ("gmm", "trained")
    with pytest.raises(ValueError, match="unknown regime 'trained'"):
        bench.run(cfg, str(tmp_path))
