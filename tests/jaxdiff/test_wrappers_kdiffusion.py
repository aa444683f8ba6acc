"""``wrappers.vp_eps`` / ``vp_v`` agree with k-diffusion's DiscreteEpsDDPMDenoiser /
DiscreteVDDPMDenoiser in float64.

Runs only where torch and k-diffusion are installed. ``k_diffusion/__init__`` imports its
training stack (scikit-image, clip, ...); when that fails, ``k_diffusion.external`` is
loaded with the package ``__init__`` skipped, as the peer benchmark loads its samplers
(``benchmarks.kdiffusion_vs_jaxdiff.load_kdiffusion_sampling``): the wrapper code that
runs is k-diffusion's, unmodified.
"""
import importlib
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("k_diffusion") is None:       # not imported: see the fixture
    pytest.skip("k_diffusion is not installed", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.tree_util import Partial  # noqa: E402

import jaxdiff  # noqa: E402
from jaxdiff import wrappers  # noqa: E402

T = 1000
ALPHAS = np.cumprod(1 - np.linspace(1e-4, 0.02, T))       # DDPM's linear betas


@pytest.fixture(scope="module")
def external():
    try:
        return importlib.import_module("k_diffusion.external")
    except ImportError:
        pass
    from benchmarks import kdiffusion_vs_jaxdiff as bench
    try:
        bench.load_kdiffusion_sampling()
        return importlib.import_module("k_diffusion.external")
    except ImportError as e:
        pytest.skip(f"k_diffusion.external not importable: {e}")


def _model(seed=0, dim=5):
    """A random linear network (W, b, c): out = x_in W + t b + c, the same on both sides."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(dim, dim)), rng.normal(size=dim) * 1e-3, rng.normal(size=dim)


def _jax_net(params, x_in, t):
    w, b, c = params
    return x_in @ w + t[:, None] * b + c


def _torch_net(params):
    w, b, c = (torch.from_numpy(p) for p in params)
    return lambda x_in, t: x_in @ w + t.to(torch.float64)[:, None] * b + c


def _sigmas():
    """Steps 0, 1, 137, 500, T-1, points between steps, and beyond both ends (clamped)."""
    s = np.sqrt((1 - ALPHAS) / ALPHAS)
    ls = np.log(s)
    between = np.exp([0.5 * (ls[0] + ls[1]), 0.3 * ls[137] + 0.7 * ls[138],
                      0.9 * ls[998] + 0.1 * ls[999], 0.49 * ls[41] + 0.51 * ls[42]])
    inside = [1.0, 3.3]
    beyond = [s[0] / 2, s[-1] * 3]
    return np.concatenate([s[[0, 1, 137, 500, T - 1]], between, inside, beyond])


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("kind", ["eps", "v"])
def test_vp_wrappers_match_kdiffusion(external, kind, quantize):
    params = _model()
    sig = _sigmas()
    x = np.random.default_rng(1).normal(size=(sig.size, 5)) * np.sqrt(1 + sig[:, None] ** 2)
    cls = external.DiscreteEpsDDPMDenoiser if kind == "eps" else external.DiscreteVDDPMDenoiser
    ref_model = cls(_torch_net(params), torch.from_numpy(ALPHAS), quantize=quantize)
    with torch.no_grad():
        ref = ref_model(torch.from_numpy(x), torch.from_numpy(sig)).numpy()
        t_ref = ref_model.sigma_to_t(torch.from_numpy(sig)).to(torch.float64).numpy()
    make = wrappers.vp_eps if kind == "eps" else wrappers.vp_v
    den = make(Partial(_jax_net, tuple(jnp.asarray(p) for p in params)), ALPHAS,
               quantize=quantize)
    # under jit, as in jaxdiff.sample: out-of-range sigmas clamp instead of raising
    out = np.asarray(jax.jit(den)(jnp.asarray(x), jnp.asarray(sig)))
    t = np.asarray(wrappers.vp_sigma_to_t(sig, ALPHAS, quantize=quantize))
    assert out.dtype == ref.dtype == np.float64
    np.testing.assert_allclose(t, t_ref, rtol=1e-12, atol=1e-12)
    assert t[-2] == 0 and t[-1] == T - 1                   # clamped ends
    # relative to each row's scale (rows span sigma 0.005 .. 470); measured: <= 4e-16
    rel = np.max(np.abs(out - ref), axis=1) / np.max(np.abs(ref), axis=1)
    assert np.max(rel) < 1e-9, rel
    # and the t -> sigma map (k-diffusion casts t to float32 first: binary fractions here)
    t_grid = np.array([0.0, 10.25, 499.5, 998.875, T - 1])
    with torch.no_grad():
        s_ref = ref_model.t_to_sigma(torch.from_numpy(t_grid)).numpy()
    np.testing.assert_allclose(wrappers.vp_t_to_sigma(t_grid, ALPHAS), s_ref, rtol=1e-12)


@pytest.fixture(scope="module")
def kds(external):
    from benchmarks import kdiffusion_vs_jaxdiff as bench
    return bench.load_kdiffusion_sampling()[0]


# (k-diffusion sampler, jaxdiff solver, options, wrapper kind): each stochastic sampler once.
WRAPPED_STOCHASTIC = [
    ("sample_euler_ancestral", "euler_ancestral", {"eta": 0.8}, "eps"),
    ("sample_dpmpp_2m_sde", "dpmpp_2m_sde", {}, "v"),
    ("sample_heun", "heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0,
                             "s_noise": 1.003}, "eps"),
]


@pytest.mark.parametrize("sampler,solver,opts,kind", WRAPPED_STOCHASTIC,
                         ids=lambda v: v if isinstance(v, str) else None)
def test_wrapped_model_sampled_stochastically_matches_kdiffusion(external, kds, sampler,
                                                                  solver, opts, kind):
    """The whole pipeline, wrapper and stochastic sampler, given the same draws (slice i at
    step i) in float64: k-diffusion's Discrete*DDPMDenoiser + sample_* against
    wrappers.vp_* + jaxdiff.sample(noise=...), to 1e-9 relative."""
    from benchmarks import kdiffusion_vs_jaxdiff as bench

    w, b, c = _model(seed=3)
    params = (np.eye(5) + 0.1 * w, b, 0.1 * c)    # eps ~ x_in: data near 0, bounded runs
    cls = external.DiscreteEpsDDPMDenoiser if kind == "eps" else external.DiscreteVDDPMDenoiser
    ref_model = cls(_torch_net(params), torch.from_numpy(ALPHAS), quantize=False)
    make = wrappers.vp_eps if kind == "eps" else wrappers.vp_v
    den = make(Partial(_jax_net, tuple(jnp.asarray(p) for p in params)), ALPHAS)
    sigmas = np.asarray(jaxdiff.schedules.get("polynomial", 9, sigma_min=0.05,
                                              sigma_max=80.0), np.float64)
    rng = np.random.default_rng(4)
    x0 = rng.normal(size=(4, 5)) * sigmas[0]
    noise = rng.standard_normal((sigmas.size - 1,) + x0.shape)
    want = bench.run_kdiffusion(kds, sampler, ref_model, x0, sigmas, noise, opts)
    got = np.asarray(jaxdiff.sample(den, jnp.asarray(x0), jnp.asarray(sigmas), solver=solver,
                                    noise=jnp.asarray(noise), **opts))
    assert got.dtype == want.dtype == np.float64 and np.all(np.isfinite(want))
    rel = np.max(np.abs(got - want)) / np.max(np.abs(want))
    assert rel < 1e-9, rel
