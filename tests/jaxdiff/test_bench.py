"""The solver benchmark (make demo) end to end in its tiny mode."""
import json

import jax
import numpy as np
import pytest

import jaxdiff
from configs.bench_digits import get_config
from jaxdiff.experiments import bench

ROWS = sorted(bench.SOLVER_SETTINGS) + sorted(bench.STOCHASTIC_SETTINGS)


@pytest.mark.parametrize("name", ROWS)
def test_plan_hits_the_nfe_exactly(name):
    solver, _, _, opts = bench.row_settings(name)
    for nfe in range(3, 11):
        n, afs = bench.plan(name, nfe)
        assert jaxdiff.nfe(solver, n, afs=afs, **opts) == nfe
        assert afs == (solver in ("heun", "dpm2") and nfe % 2 == 1)


def test_stochastic_rows_are_the_three_samplers_and_stochastic():
    assert {n: bench.row_settings(n)[0] for n in bench.STOCHASTIC_SETTINGS} == {
        "euler_ancestral": "euler_ancestral", "dpmpp_2m_sde": "dpmpp_2m_sde",
        "heun_churn": "heun"}
    for solver, _, _, opts in bench.STOCHASTIC_SETTINGS.values():
        assert jaxdiff.solvers.get(solver, **opts).stochastic
    assert set(get_config().stochastic) == set(bench.STOCHASTIC_SETTINGS)


def test_step_noise_is_what_sample_with_the_key_draws():
    """Slice i does not depend on the number of draws, and a row with n timestamps gets
    the draws of jaxdiff.sample(..., key=jax.random.key(seed)) (JAX's partitionable
    threefry: split(key, n)[i] == fold_in(key, i))."""
    noise = bench.step_noise(1, 5, (2, 4))
    assert noise.shape == (5, 2, 4) and noise.dtype == np.float32
    np.testing.assert_array_equal(noise[:3], jaxdiff.draw_noise(jax.random.key(1), 4, (2, 4)))


def test_tiny_benchmark_writes_everything(tmp_path):
    cfg = get_config("tiny")
    res = bench.run(cfg, str(tmp_path))
    for name in ("results.json", "results.md", "metrics.jsonl", "error_vs_nfe_gmm.png",
                 "samples_gmm.png", "error_vs_nfe_optimal.png", "samples_optimal.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = res["regimes"]["gmm"]["rows"]
    assert len(rows) == len(cfg.solvers) * len(cfg.nfes) + len(cfg.stochastic) * len(
        cfg.stochastic_nfes)
    err = {(r["solver"], r["nfe"]): r["error"] for r in rows}
    # more calls help, and a 4th-order multistep beats Euler at equal NFE on the smooth regime
    assert err[("euler", 5)] < err[("euler", 4)]
    assert err[("ipndm", 5)] < err[("euler", 5)]
    stochastic = [r for r in rows if r["stochastic"]]
    assert {r["solver"] for r in stochastic} == set(cfg.stochastic)
    assert all(r["noise_seed"] == cfg.noise_seed for r in stochastic)
    churn = next(r for r in stochastic if r["solver"] == "heun_churn")
    assert churn["jaxdiff_solver"] == "heun" and churn["options"] == bench.EDM_CHURN
    assert churn["afs"]                                        # NFE 5 with a 2-call solver
    for regime in cfg.regimes:
        r = res["regimes"][regime]
        assert r["reference"]["fd"] >= 0 and all(np.isfinite(x["fd"]) for x in r["rows"])
        assert r["fd_table"].count("†") == len(cfg.stochastic)
    md = (tmp_path / "results.md").read_text()
    assert md.count("is NOT an error comparable") == len(cfg.regimes)
    assert "Frechet distance to exact draws of the mixture" in md
    assert "| euler_ancestral † | – | " in md                 # not run at NFE 4
    with open(tmp_path / "metrics.jsonl") as f:
        assert len(f.readlines()) == 2 * len(rows)
    json.loads((tmp_path / "results.json").read_text())


def test_bad_config_fails_before_work(tmp_path):
    cfg = get_config("tiny")
    cfg.solvers = ("euler", "rk45")
    with pytest.raises(ValueError, match=r"unknown solver\(s\) \['rk45'\]"):
        bench.run(cfg, str(tmp_path))
    cfg = get_config("tiny")
    cfg.stochastic = ("euler_ancestral", "heun")
    with pytest.raises(ValueError, match=r"unknown stochastic sampler\(s\) \['heun'\]; valid"):
        bench.run(cfg, str(tmp_path))
    cfg = get_config("tiny")
    cfg.stochastic_nfes = (5, 7)
    with pytest.raises(ValueError, match=r"stochastic_nfes \[7\] are not in nfes \[4, 5\]"):
        bench.run(cfg, str(tmp_path))
    cfg = get_config("tiny")
    cfg.regimes = ("gmm", "trained")
    with pytest.raises(ValueError, match="unknown regime 'trained'"):
        bench.run(cfg, str(tmp_path))
    assert not list(tmp_path.iterdir())
