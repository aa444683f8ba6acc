"""Stochastic samplers: Euler ancestral, DPM-Solver++(2M) SDE and EDM's churn.

Closed forms on Gaussian data, equality with the deterministic solvers they reduce to,
numpy loops written from the update formulas, explicit randomness (key/noise, sharding,
no retrace), NFE, errors, and k-diffusion given the same draws (when installed).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_solvers as ref
from conftest import gmm_denoiser, make_gmm
from denoiser_probes import counting, tracing
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdiff
from jaxdiff.sampling import draw_noise

SIGMAS = jaxdiff.schedules.get("polynomial", 7)
KEY = jax.random.key(0)
# (solver, options) of every stochastic configuration tested against a reference.
STOCHASTIC = [
    ("euler_ancestral", {}), ("euler_ancestral", {"eta": 0.5, "s_noise": 1.1}),
    ("euler_ancestral", {"eta": 2.0}),          # sigma_up capped at sigma_next
    ("dpmpp_2m_sde", {}), ("dpmpp_2m_sde", {"eta": 0.5, "s_noise": 0.9, "variant": "heun"}),
    ("heun", {"s_churn": 10.0}),
    ("heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003}),
    ("euler", {"s_churn": 2.0, "s_tmin": 1.0, "s_tmax": 20.0}),
]
ids = lambda v: str(v)


@pytest.fixture(scope="module")
def x_T():
    return jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)) * 80.0)


def _noise(n, shape, seed=3):
    return np.random.default_rng(seed).standard_normal((n - 1,) + tuple(shape))


# ------------------------------------------------------------- numpy reference loops


def _np_sampler(solver, net, x, sigmas, noise, eta=1.0, s_noise=1.0, variant="midpoint",
                s_churn=0.0, s_tmin=0.0, s_tmax=np.inf):
    """Step by step from the published update rules, one noise slice per step."""
    steps = len(sigmas) - 1
    prev, h_prev = None, None
    for i in range(steps):
        s, t, z = sigmas[i], sigmas[i + 1], noise[i]
        if solver == "euler_ancestral":
            up = min(t, eta * np.sqrt(t ** 2 * (s ** 2 - t ** 2) / s ** 2))
            down = np.sqrt(t ** 2 - up ** 2)
            x = x + (down - s) * (x - net(x, s)) / s + s_noise * up * z
        elif solver == "dpmpp_2m_sde":
            den, h = net(x, s), np.log(s / t)
            k = 1 - np.exp(-(1 + eta) * h)
            x = t / s * np.exp(-eta * h) * x + k * den
            if prev is not None:
                w = 0.5 * k if variant == "midpoint" else 1 - k / ((1 + eta) * h)
                x = x + w * h / h_prev * (den - prev)
            x = x + s_noise * t * np.sqrt(1 - np.exp(-2 * eta * h)) * z
            prev, h_prev = den, h
        else:
            gamma = min(s_churn / steps, np.sqrt(2) - 1) if s_tmin <= s <= s_tmax else 0.0
            s_hat = s * (1 + gamma)
            x = x + s_noise * np.sqrt(s_hat ** 2 - s ** 2) * z
            d = (x - net(x, s_hat)) / s_hat
            x_euler = x + (t - s_hat) * d
            if solver == "heun":
                x = x + (t - s_hat) * 0.5 * (d + (x_euler - net(x_euler, t)) / t)
            else:
                x = x_euler
    return x


@pytest.mark.parametrize("solver,opts", STOCHASTIC, ids=ids)
def test_matches_numpy_loop_given_the_same_noise(solver, opts):
    gmm = make_gmm(seed=1, k=3, dim=5, var_range=(0.05, 0.5))
    x0 = np.random.default_rng(2).normal(size=(3, 5)) * 80
    sigmas = np.asarray(jaxdiff.schedules.get("polynomial", 8))
    noise = _noise(8, x0.shape)
    got = np.asarray(jaxdiff.sample(gmm_denoiser(*gmm), x0, sigmas, solver=solver,
                                    noise=noise, **opts))
    want = _np_sampler(solver, ref.gmm_denoiser(*gmm), x0, sigmas, noise, **opts)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.abs(want).max())
    # The noise matters: other draws give a visibly different sample.
    other = _np_sampler(solver, ref.gmm_denoiser(*gmm), x0, sigmas, _noise(8, x0.shape, seed=4),
                        **opts)
    assert np.abs(other - want).max() > 1e-2


# ------------------------------------------------------- reductions to ODE solvers


@pytest.mark.parametrize("afs", [False, True])
def test_euler_ancestral_with_eta_0_is_euler(denoise, x_T, afs):
    a = jaxdiff.sample(denoise, x_T, SIGMAS, solver="euler_ancestral", eta=0.0, afs=afs)
    np.testing.assert_array_equal(a, jaxdiff.sample(denoise, x_T, SIGMAS, solver="euler",
                                                    afs=afs))


def test_dpmpp_2m_sde_with_eta_0_is_dpm_solver_pp_2m(denoise, x_T):
    mid = jaxdiff.sample(denoise, x_T, SIGMAS, solver="dpmpp_2m_sde", eta=0.0)
    ode = jaxdiff.sample(denoise, x_T, SIGMAS, solver="dpmpp", max_order=2,
                         lower_order_final=False)
    np.testing.assert_allclose(mid, ode, rtol=1e-12, atol=1e-12)
    # "heun" is a different second-order correction (phi_2 instead of phi_1 / 2), not
    # DPM-Solver++(2M): compare with the numpy loop and check that it differs.
    heun = jaxdiff.sample(denoise, x_T, SIGMAS, solver="dpmpp_2m_sde", eta=0.0,
                          variant="heun")
    gmm = make_gmm()
    want = _np_sampler("dpmpp_2m_sde", ref.gmm_denoiser(*gmm), np.asarray(x_T), np.asarray(SIGMAS),
                       np.zeros((6,) + x_T.shape), eta=0.0, variant="heun")
    np.testing.assert_allclose(heun, want, rtol=1e-10, atol=1e-10)
    assert float(jnp.abs(heun - mid).max()) > 1e-3


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_churn_off_is_the_deterministic_solver(denoise, x_T, solver):
    plain = jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver)
    np.testing.assert_array_equal(
        jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver, s_churn=0.0, s_noise=1.003), plain)
    # Churn on, but no sigma in [s_tmin, s_tmax]: gamma = 0 everywhere, the draws are
    # multiplied by exactly 0 and sigma_hat = sigma.
    np.testing.assert_array_equal(
        jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver, s_churn=10.0, s_tmin=100.0,
                       s_tmax=200.0, key=KEY), plain)


# ------------------------------------------------------- Gaussian data: closed forms

S2 = 0.25                  # data N(0, S2 I): D(x; sigma) = S2 / (S2 + sigma^2) x
SMIN, SMAX = 0.05, 10.0
gaussian = lambda x, sigma: S2 / (S2 + sigma[:, None] ** 2) * x


def _chain_variance(solver, opts, n):
    """Exact variance of one coordinate of the final sample from x_T ~ N(0, S2 + SMAX^2).

    With a linear denoiser every sampler is linear in (x_T, z_0..z_{n-2}): the final
    value is A x_T + sum_i B_i z_i. One run on a batch of n one-hot inputs returns A
    (row 0: x_T = 1, no noise) and B_i (row i + 1: x_T = 0, z_i = 1).
    """
    sigmas = jaxdiff.schedules.get("logsnr", n, SMIN, SMAX)
    x = jnp.zeros((n, 1)).at[0, 0].set(1.0)
    noise = jnp.eye(n)[1:, :, None]                 # noise[i, b] = [b == i + 1]
    out = jaxdiff.sample(gaussian, x, sigmas, solver=solver, noise=noise, **opts)[:, 0]
    return float(out[0] ** 2 * (S2 + SMAX ** 2) + jnp.sum(out[1:] ** 2))


# (solver, options, order of the variance error in the step count): on this linear
# problem the measured slopes over 16..64 steps are 0.89, 1.89, 2.02, 0.87, 2.03; at 64
# steps the relative errors are -7.8%, 0.21%, 0.28%, -7.4%, 0.44%.
CONVERGENCE = [
    ("euler_ancestral", {}, 1), ("dpmpp_2m_sde", {}, 2),
    ("dpmpp_2m_sde", {"variant": "heun", "eta": 0.5}, 2),
    ("euler", {"s_churn": 5.0}, 1), ("heun", {"s_churn": 5.0}, 2),
]


@pytest.mark.parametrize("solver,opts,order", CONVERGENCE, ids=ids)
def test_sample_variance_converges_to_data_plus_sigma_min(solver, opts, order):
    steps = np.array([16, 32, 64])
    errs = np.array([_chain_variance(solver, opts, n + 1) - (S2 + SMIN ** 2) for n in steps])
    slope = np.polyfit(np.log2(steps), np.log2(np.abs(errs)), 1)[0]
    assert abs(-slope - order) < 0.35, (errs, slope)
    # 64 steps: within 10% (first order) or 1% (second order) of S2 + SMIN^2.
    assert abs(errs[-1]) < (0.1 if order == 1 else 0.01) * (S2 + SMIN ** 2), errs


def test_keyed_draws_have_the_chain_variance():
    """Monte Carlo with key=: the sample variance is the exact chain variance (16384
    values: standard error 1.1%)."""
    n = 33
    sigmas = jaxdiff.schedules.get("logsnr", n, SMIN, SMAX)
    x_T = jnp.sqrt(S2 + SMAX ** 2) * jax.random.normal(jax.random.key(7), (4096, 4))
    for solver in ("euler_ancestral", "dpmpp_2m_sde"):
        out = jaxdiff.sample(gaussian, x_T, sigmas, solver=solver, key=KEY)
        exact = _chain_variance(solver, {}, n)
        assert abs(float(jnp.var(out)) / exact - 1) < 0.04, (solver, float(jnp.var(out)), exact)
        assert abs(float(jnp.mean(out))) < 0.02


def test_afs_first_step_of_euler_ancestral(x_T):
    noise = _noise(2, x_T.shape)
    s, t = SIGMAS[0], SIGMAS[1]
    out = jaxdiff.sample(gaussian, x_T, SIGMAS[:2], solver="euler_ancestral", afs=True,
                         noise=noise)
    up = t * jnp.sqrt(1 - t ** 2 / s ** 2)
    down = jnp.sqrt(t ** 2 - up ** 2)
    np.testing.assert_allclose(out, x_T + (down - s) * x_T / jnp.sqrt(1 + s ** 2)
                               + up * noise[0], rtol=1e-12)


# ------------------------------------------------------------------ randomness


@pytest.mark.parametrize("solver,opts", [("euler_ancestral", {}), ("dpmpp_2m_sde", {}),
                                         ("heun", {"s_churn": 10.0})], ids=ids)
def test_same_key_same_samples_other_key_other_samples(denoise, x_T, solver, opts):
    run = lambda **kw: jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver, **opts, **kw)
    a = run(key=KEY)
    np.testing.assert_array_equal(a, run(key=jax.random.key(0)))
    assert float(jnp.abs(a - run(key=jax.random.key(1))).min()) > 0
    # key= is noise= with draw_noise's draws (up to the fusion of the arithmetic).
    np.testing.assert_allclose(a, run(noise=draw_noise(KEY, 7, x_T.shape, x_T.dtype)),
                               rtol=1e-13, atol=1e-13)
    legacy = jax.random.PRNGKey(0)
    np.testing.assert_allclose(run(key=legacy),
                               run(noise=draw_noise(legacy, 7, x_T.shape, x_T.dtype)),
                               rtol=1e-13, atol=1e-13)


def test_draw_noise_is_standard_normal_one_slice_per_step():
    z = np.asarray(draw_noise(KEY, 5, (1000, 8)))
    assert z.shape == (4, 1000, 8) and z.dtype == np.float32
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert np.abs(np.corrcoef(z.reshape(4, -1))[np.triu_indices(4, 1)]).max() < 0.03


@pytest.mark.parametrize("solver", ["euler_ancestral", "dpmpp_2m_sde"])
def test_same_key_same_samples_on_1_and_4_devices(denoise, x_T, solver):
    devices = np.array(jax.devices()[:4])
    assert devices.size == 4, "tests run with 4 host devices (see conftest)"
    x_sharded = jax.device_put(x_T, NamedSharding(Mesh(devices, ("data",)), P("data")))
    out = jaxdiff.sample(denoise, x_sharded, SIGMAS, solver=solver, key=KEY)
    assert len(out.sharding.device_set) == 4
    np.testing.assert_allclose(out, jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver,
                                                   key=KEY), rtol=1e-12, atol=1e-12)


def test_new_key_or_noise_values_do_not_retrace(gmm):
    counted, traces = tracing(gmm_denoiser(*gmm))
    x = jnp.ones((2, 4))
    run = lambda **kw: jaxdiff.sample(counted, x, SIGMAS, solver="dpmpp_2m_sde", **kw)
    run(key=KEY)
    run(noise=np.zeros((6, 2, 4)))
    first = len(traces)
    for seed in (1, 2):
        run(key=jax.random.key(seed))
        run(noise=_noise(7, x.shape, seed))
    assert len(traces) == first


def test_traced_key_inside_jit_and_vmap(denoise, x_T):
    f = jax.jit(lambda k: jaxdiff.sample(denoise, x_T, SIGMAS, solver="euler_ancestral",
                                         key=k))
    np.testing.assert_allclose(f(KEY), jaxdiff.sample(denoise, x_T, SIGMAS,
                                                      solver="euler_ancestral", key=KEY),
                               rtol=1e-12)
    keys = jax.random.split(KEY, 3)
    many = jax.vmap(lambda k: jaxdiff.sample(denoise, x_T[:2], SIGMAS, solver="dpmpp_2m_sde",
                                             key=k))(keys)
    one = jaxdiff.sample(denoise, x_T[:2], SIGMAS, solver="dpmpp_2m_sde", key=keys[2])
    np.testing.assert_allclose(many[2], one, rtol=1e-12)


def test_bfloat16_state_and_draws():
    x = 80.0 * jnp.ones((2, 4), jnp.bfloat16)
    out = jaxdiff.sample(gaussian, x, SIGMAS, solver="euler_ancestral", key=KEY)
    ref = jaxdiff.sample(gaussian, x.astype(jnp.float32), SIGMAS, solver="euler_ancestral",
                         noise=draw_noise(KEY, 7, x.shape, jnp.bfloat16).astype(jnp.float32))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.1)


# --------------------------------------------------------------------------- NFE


@pytest.mark.parametrize("solver,opts,per_step", [
    ("euler_ancestral", {}, 1), ("dpmpp_2m_sde", {}, 1), ("euler", {"s_churn": 1.0}, 1),
    ("heun", {"s_churn": 1.0}, 2)], ids=ids)
@pytest.mark.parametrize("afs", [False, True])
def test_nfe_counts_real_calls(denoise, solver, opts, per_step, afs):
    for n in (2, 5):
        counted, calls = counting(denoise)
        with jax.disable_jit():
            jaxdiff.sample(counted, jnp.ones((1, 4)), jaxdiff.schedules.get("polynomial", n),
                           solver=solver, afs=afs, key=KEY, **opts)
        assert len(calls) == jaxdiff.nfe(solver, n, afs=afs, **opts) == per_step * (n - 1) - afs


def test_steps_for_nfe():
    """One call per step (no AFS needed); churned Heun plans as Heun (AFS at odd NFE)."""
    for solver in ("euler_ancestral", "dpmpp_2m_sde"):
        assert [jaxdiff.steps_for_nfe(solver, k) for k in (1, 5, 10)] == [
            (2, False), (6, False), (11, False)]
    churn = {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0}
    for k in (1, 5, 6, 10):
        assert jaxdiff.steps_for_nfe("heun", k, **churn) == jaxdiff.steps_for_nfe("heun", k)
    assert jaxdiff.steps_for_nfe("heun", 5, **churn) == (4, True)
    assert jaxdiff.steps_for_nfe("euler", 5, s_churn=1.0) == (6, False)


# ------------------------------------------------------------------------ errors


def test_randomness_errors(denoise):
    x = jnp.ones((2, 4))
    with pytest.raises(ValueError, match=r"'euler_ancestral' is stochastic: pass exactly one "
                                         r"of key= .* shape \(6, 2, 4\)\); got neither"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="euler_ancestral")
    with pytest.raises(ValueError, match="got both"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="dpmpp_2m_sde", key=KEY,
                       noise=jnp.zeros((6, 2, 4)))
    with pytest.raises(ValueError, match=r"'heun' with \{'s_churn': 1.0\} is stochastic"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="heun", s_churn=1.0)
    for kw in ({"key": KEY}, {"noise": jnp.zeros((6, 2, 4))}):
        with pytest.raises(ValueError, match="'ipndm' is deterministic: it takes no key"):
            jaxdiff.sample(denoise, x, SIGMAS, **kw)
        with pytest.raises(ValueError, match=r"'euler_ancestral' with \{'eta': 0.0\} is "
                                             "deterministic"):
            jaxdiff.sample(denoise, x, SIGMAS, solver="euler_ancestral", eta=0.0, **kw)
    with pytest.raises(ValueError, match=r"noise must be a floating array of shape "
                                         r".* = \(6, 2, 4\), got float64 \(7, 2, 4\)"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="euler_ancestral", noise=jnp.zeros((7, 2, 4)))
    with pytest.raises(ValueError, match=r"key must be one PRNG key .* got int\d+ \(\)"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="euler_ancestral", key=0)
    with pytest.raises(ValueError, match=r"key must be one PRNG key .* \(2,\)"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="euler_ancestral",
                       key=jax.random.split(KEY, 2))


@pytest.mark.parametrize("solver,opts,match", [
    ("euler_ancestral", {"eta": -0.5}, "euler_ancestral: eta must be a finite number >= 0, "
                                       "got -0.5"),
    ("dpmpp_2m_sde", {"s_noise": float("nan")}, "s_noise must be a finite number >= 0"),
    ("dpmpp_2m_sde", {"variant": "euler"}, r"variant must be one of \['midpoint', 'heun'\], "
                                           "got 'euler'"),
    ("heun", {"s_churn": -1.0}, "heun: s_churn must be a finite number >= 0, got -1.0"),
    ("euler", {"s_churn": 1.0, "s_tmin": 2.0, "s_tmax": 1.0},
     "euler: s_tmax must be a number >= s_tmin = 2.0, got 1.0"),
    ("euler_ancestral", {"s_churn": 1.0}, r"does not take option\(s\) \['s_churn'\]"),
], ids=ids)
def test_bad_options(denoise, solver, opts, match):
    with pytest.raises(ValueError, match=match):
        jaxdiff.sample(denoise, jnp.ones((1, 4)), SIGMAS, solver=solver, key=KEY, **opts)
    with pytest.raises(ValueError, match=match):
        jaxdiff.nfe(solver, 6, **opts)


def test_callers_without_a_key_reject_stochastic_solvers(denoise, x_T):
    from jaxdiff import conditioning
    from jaxdiff.solvers import base, get

    with pytest.raises(ValueError, match="integrate runs deterministic ODE solvers; "
                                         "'euler_ancestral'"):
        jaxdiff.sampling.integrate(denoise, x_T, SIGMAS, solver="euler_ancestral")
    with pytest.raises(ValueError, match="integrate runs deterministic ODE solvers; 'heun'"):
        conditioning.invert(denoise, x_T, SIGMAS[::-1], solver="heun", s_churn=1.0)
    with pytest.raises(ValueError, match="amed runs deterministic solvers"):
        jaxdiff.sample(denoise, x_T, SIGMAS, solver="amed", key=KEY)
    # A caller that runs steps itself (inpainting) gets a clear error at trace time.
    slv = get("euler", s_churn=1.0)
    model = lambda x, s: denoise(x, jnp.full((x.shape[0],), s))
    with pytest.raises(ValueError, match="euler with s_churn > 0 is stochastic: its step "
                                         "needs noise="):
        slv.step(base.model_evaluator(model), model, x_T, None, SIGMAS[0], SIGMAS[1],
                 jax.tree.map(lambda c: c[0], slv.prepare(SIGMAS)), is_last=False,
                 num_steps=7)


def test_sdedit_gives_a_stochastic_sampler_its_own_key_and_gits_refuses_one(denoise, x_T):
    from jaxdiff import conditioning, gits

    data = x_T / 80.0
    a = conditioning.sdedit(denoise, data, 2.0, KEY, 6, solver="euler_ancestral")
    b = conditioning.sdedit(denoise, data, 2.0, KEY, 6, solver="euler_ancestral")
    c = conditioning.sdedit(denoise, data, 2.0, jax.random.key(1), 6, solver="euler_ancestral")
    ode = conditioning.sdedit(denoise, data, 2.0, KEY, 6, solver="euler")
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a - c))) > 1e-2          # another key, other draws
    assert float(jnp.max(jnp.abs(a - ode))) > 1e-2        # the sampler's own noise is added
    with pytest.raises(ValueError, match="GITS searches schedules for ODE solvers; the student "
                                         "'euler_ancestral'"):
        gits.search(denoise, x_T, 4, grid_size=11, student="euler_ancestral")


# ------------------------------------------------------ k-diffusion, same draws


@pytest.fixture(scope="module")
def kds():
    pytest.importorskip("torch")
    from benchmarks import kdiffusion_vs_jaxdiff as bench
    try:
        sampling, _ = bench.load_kdiffusion_sampling()
    except ImportError as e:
        pytest.skip(f"k_diffusion.sampling not importable: {e}")
    return sampling


KDIFFUSION = [
    ("sample_euler_ancestral", "euler_ancestral", {}),
    ("sample_euler_ancestral", "euler_ancestral", {"eta": 0.7, "s_noise": 1.05}),
    ("sample_dpmpp_2m_sde", "dpmpp_2m_sde", {}),
    ("sample_dpmpp_2m_sde", "dpmpp_2m_sde", {"eta": 0.5, "s_noise": 0.95}),
    ("sample_dpmpp_2m_sde", "dpmpp_2m_sde", {"variant": "heun"}),
    ("sample_euler", "euler", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 10.0}),
    ("sample_heun", "heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0,
                             "s_noise": 1.003}),
]


@pytest.mark.parametrize("sampler,solver,opts", KDIFFUSION, ids=ids)
def test_matches_kdiffusion_given_the_same_noise_in_float64(kds, sampler, solver, opts):
    import torch

    from benchmarks import kdiffusion_vs_jaxdiff as bench
    from jaxdiff import denoisers

    gmm = denoisers.GaussianMixture(*make_gmm(seed=1, k=3, dim=5, var_range=(0.05, 0.5)))
    sigmas = np.asarray(jaxdiff.schedules.get("polynomial", 9), np.float64)
    x0 = np.random.default_rng(2).normal(size=(6, 5)) * 80
    noise = _noise(9, x0.shape)
    kd_opts = dict(opts)
    if "variant" in kd_opts:
        kd_opts["solver_type"] = kd_opts.pop("variant")
    with jax.enable_x64(True):
        want = bench.run_kdiffusion(kds, sampler, bench.TorchGMMDenoiser(gmm, torch.float64),
                                    x0, sigmas, noise, kd_opts)
        got = np.asarray(jaxdiff.sample(denoisers.gaussian_mixture(*gmm), x0, sigmas,
                                        solver=solver, noise=noise, **opts))
    assert got.dtype == want.dtype == np.float64
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel < 1e-9, rel
