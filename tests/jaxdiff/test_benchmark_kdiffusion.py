"""The k-diffusion peer benchmark agrees with jaxdiff on a tiny case.

Runs only where the bench extra (torch, k-diffusion's samplers) is installed: ``make
test`` does not install it, ``make bench`` does.
"""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import kdiffusion_vs_jaxdiff as bench  # noqa: E402
from jaxdiff import denoisers  # noqa: E402


@pytest.fixture(scope="module")
def kds():
    try:
        sampling, _ = bench.load_kdiffusion_sampling()
    except ImportError as e:  # same as importorskip: k-diffusion's samplers not installed
        pytest.skip(f"k_diffusion.sampling not importable: {e}")
    return sampling


@pytest.fixture(scope="module")
def gmm():
    return bench.fit_digits_gmm(k=4, seed=0)


@pytest.mark.parametrize("name", list(bench.SOLVERS))
def test_kdiffusion_and_jaxdiff_agree(kds, gmm, name):
    res = bench.compare_solver(kds, name, gmm, batch=4, nfe=6, seed=1)
    assert res["torch_nfe"] == res["nfe"] == 6
    assert res["x_torch"].dtype == res["x_jax"].dtype == np.float32
    assert res["x_jax"].shape == (4, 64)
    assert np.all(np.isfinite(res["x_jax"]))
    assert res["max_abs_diff"] < 1e-3, res["max_abs_diff"]
    assert res["rel_l2_diff"] < 1e-3, res["rel_l2_diff"]
    if not bench.is_stochastic(name):
        assert res["noise"] is None
        return
    # Both sides consumed the same draws: other draws move the sample far more than the
    # float32 disagreement.
    assert res["noise"].shape == (res["num_steps"] - 1, 4, 64)
    _, solver, options, _ = bench.solver_spec(name)
    other = bench.run_jaxdiff(denoisers.gaussian_mixture(*gmm), solver, options, res["x0"],
                              res["sigmas"], np.flip(res["noise"], axis=0))
    assert bench.agreement(other, res["x_torch"])[0] > 100 * res["max_abs_diff"]


def test_stochastic_rows_are_the_three_kdiffusion_samplers():
    stochastic = {n: bench.solver_spec(n)[0] for n in bench.SOLVERS if bench.is_stochastic(n)}
    assert stochastic == {"euler_ancestral": "sample_euler_ancestral",
                          "dpmpp_2m_sde": "sample_dpmpp_2m_sde", "heun_churn": "sample_heun"}


def test_kdiffusion_must_take_one_draw_per_step(kds, gmm):
    """A run that does not take one draw per step is an error, not a silent partial
    comparison (k-diffusion's dpmpp_2m_sde with eta=0 takes none)."""
    x0 = np.zeros((2, 64), np.float32)
    sigmas = bench.make_sigmas(4)
    model = bench.TorchGMMDenoiser(gmm)
    with pytest.raises(RuntimeError, match="took 0 noise draws in 3 steps"):
        bench.run_kdiffusion(kds, "sample_dpmpp_2m_sde", model, x0, sigmas,
                             np.zeros((3, 2, 64), np.float32), {"eta": 0.0})
    with pytest.raises(ValueError, match="noise has 4 slices for 3 steps"):
        bench.run_kdiffusion(kds, "sample_euler_ancestral", model, x0, sigmas,
                             np.zeros((4, 2, 64), np.float32))


def test_torch_denoiser_matches_library_denoiser(gmm):
    import jax.numpy as jnp
    import torch

    from jaxdiff import denoisers

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    sigma = np.array([80.0, 5.0, 1.0, 0.1, 0.002], np.float32)
    with torch.inference_mode():
        d_torch = bench.TorchGMMDenoiser(gmm)(torch.from_numpy(x), torch.from_numpy(sigma))
    d_jax = denoisers.gaussian_mixture(*gmm)(jnp.asarray(x), jnp.asarray(sigma))
    np.testing.assert_allclose(d_torch.numpy(), np.asarray(d_jax), atol=2e-5, rtol=1e-4)


def test_quick_cli_writes_json_and_markdown(kds, tmp_path):
    out = tmp_path / "k.json"
    bench.main([f"--out={out}", "--quick", "--batches=2", "--nfe=4", "--components=3"])
    report = json.loads(out.read_text())
    rows = report["results"]
    assert [r["solver"] for r in rows] == list(bench.SOLVERS)
    assert [r["solver"] for r in rows if r["stochastic"]] == [
        "euler_ancestral", "dpmpp_2m_sde", "heun_churn"]
    for r in rows:
        assert r["batch"] == 2 and r["nfe"] == 4
        assert r["torch_s"] > 0 and r["jax_s"] > 0
        assert r["ratio"] == pytest.approx(r["torch_s"] / r["jax_s"])
        assert r["max_abs_diff"] < 1e-3
    assert set(report["float64_agreement"]) == set(bench.SOLVERS)
    assert all(v["max_abs_diff"] < 1e-9 for v in report["float64_agreement"].values())
    assert report["environment"]["torch"] and report["environment"]["cpu_count"]
    md = out.with_suffix(".md").read_text()
    assert "| solver | NFE | batch |" in md and md.count("\n| ") == 1 + len(bench.SOLVERS)
    assert "| dpmpp_2m_sde | 4 | 2 |" in md and "same standard normal draws" in md
