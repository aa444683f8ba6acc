"""The k-diffusion peer benchmark agrees with jaxdiff on a tiny case.

Runs only where the bench extra (torch, k-diffusion's samplers) is installed: ``make
test`` does not install it, ``make bench`` does.
"""
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from benchmarks import kdiffusion_vs_jaxdiff as bench  # noqa: E402


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
    for r in rows:
        assert r["batch"] == 2 and r["nfe"] == 4
        assert r["torch_s"] > 0 and r["jax_s"] > 0
        assert r["ratio"] == pytest.approx(r["torch_s"] / r["jax_s"])
        assert r["max_abs_diff"] < 1e-3
    assert set(report["float64_agreement"]) == set(bench.SOLVERS)
    assert all(v["max_abs_diff"] < 1e-9 for v in report["float64_agreement"].values())
    assert report["environment"]["torch"] and report["environment"]["cpu_count"]
    md = out.with_suffix(".md").read_text()
    assert "| solver | NFE | batch |" in md and md.count("\n| ") >= 5
