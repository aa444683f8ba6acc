"""The sampling driver: jit/vmap/sharding properties, tracing, NFE, AFS, bad input."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import gmm_denoiser
from denoiser_probes import counting, tracing
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxdiff
from jaxdiff.solvers import SOLVERS

SIGMAS = jaxdiff.schedules.get("polynomial", 6)


@pytest.fixture(scope="module")
def x_T():
    return jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)) * 80.0)


def test_trajectory_shapes_and_endpoints(denoise, x_T):
    out, traj = jaxdiff.sample(denoise, x_T, SIGMAS, solver="heun", return_trajectory=True)
    assert traj.xs.shape == (6, 8, 4) and traj.denoised.shape == (5, 8, 4)
    np.testing.assert_array_equal(traj.xs[0], x_T)
    np.testing.assert_array_equal(traj.xs[-1], out)
    # denoising trajectory: D(x_n; sigma_n) at each step's start
    np.testing.assert_allclose(traj.denoised[2], denoise(traj.xs[2], jnp.full(8, SIGMAS[2])),
                               rtol=1e-12)


@pytest.mark.parametrize("solver", ["euler", "dpmpp", "unipc"])
def test_jit_equals_no_jit(denoise, x_T, solver):
    a = jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver)
    with jax.disable_jit():
        b = jaxdiff.sample(denoise, x_T, SIGMAS, solver=solver)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", ["ipndm", "unipc"])
def test_vmap_over_trajectories_equals_a_loop(denoise, x_T, solver):
    one = lambda x: jaxdiff.sample(denoise, x[None], SIGMAS, solver=solver)[0]
    batched = jax.jit(jax.vmap(one))(x_T)
    looped = jnp.stack([one(x) for x in x_T])
    np.testing.assert_allclose(batched, looped, rtol=1e-12, atol=1e-12)


def test_no_retrace_when_only_sigma_values_change(gmm):
    counted, traces = tracing(gmm_denoiser(*gmm))
    x = jnp.ones((2, 4))
    jaxdiff.sample(counted, x, jaxdiff.schedules.get("polynomial", 7), solver="dpm2", afs=True)
    first = len(traces)
    assert first > 0
    for sigmas in (jaxdiff.schedules.get("logsnr", 7), jaxdiff.schedules.get("time_uniform", 7),
                   jaxdiff.schedules.get("polynomial", 7, sigma_max=10.0)):
        jaxdiff.sample(counted, x, sigmas, solver="dpm2", afs=True)
    assert len(traces) == first


@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("afs", [False, True])
def test_nfe_counts_real_calls(denoise, solver, afs):
    for n in (2, 3, 6):
        counted, calls = counting(denoise)
        with jax.disable_jit():      # eager: every call runs the Python body
            jaxdiff.sample(counted, jnp.ones((1, 4)), jaxdiff.schedules.get("polynomial", n),
                           solver=solver, afs=afs)
        assert len(calls) == jaxdiff.nfe(solver, n, afs=afs), (solver, n, afs)


def test_nfe_reference_accounting():
    assert jaxdiff.nfe("ipndm", 6) == 5 and jaxdiff.nfe("ipndm", 6, afs=True) == 4
    assert jaxdiff.nfe("heun", 6) == 10 and jaxdiff.nfe("dpm2", 6, afs=True) == 9
    assert jaxdiff.nfe("unipc", 6) == 5 and jaxdiff.nfe("euler", 6, denoise_to_zero=True) == 6


def test_afs_first_step_is_analytical(denoise, x_T):
    sig = SIGMAS[:2]
    out = jaxdiff.sample(denoise, x_T, sig, solver="euler", afs=True)
    np.testing.assert_allclose(out, x_T + (sig[1] - sig[0]) * x_T / jnp.sqrt(1 + sig[0] ** 2),
                               rtol=1e-12)


def test_afs_saves_one_call_at_little_cost(denoise, x_T):
    exact = jaxdiff.sample(denoise, x_T, jaxdiff.schedules.get("polynomial", 200), solver="heun")
    err = lambda **kw: float(jnp.linalg.norm(
        jaxdiff.sample(denoise, x_T, jaxdiff.schedules.get("polynomial", 9), **kw) - exact))
    # At sigma_max = 80 the optimal denoiser is ~ the data mean, so d ~ x / sigma.
    assert err(solver="ipndm", afs=True) < 1.5 * err(solver="ipndm")


@pytest.mark.parametrize("solver", ["euler", "ipndm", "dpm2", "unipc"])
def test_afs_mean_zero_is_plain_afs(denoise, x_T, solver):
    sigmas = jaxdiff.schedules.get("polynomial", 7)
    plain = jaxdiff.sample(denoise, x_T, sigmas, solver=solver, afs=True)
    centred = jaxdiff.sample(denoise, x_T, sigmas, solver=solver, afs=True,
                             afs_mean=jnp.zeros(x_T.shape[1:]))
    np.testing.assert_array_equal(plain, centred)


def test_afs_mean_is_the_first_step_for_data_off_centre(x_T):
    # Data centred at m = (3, -2, 1, 0.5): D(x; 80) ~ m, far from plain AFS's guess 0.
    m = jnp.asarray([3.0, -2.0, 1.0, 0.5])
    spread = 0.5 * np.eye(4)[:1]
    den = jaxdiff.denoisers.gaussian_mixture(np.asarray(m) + np.concatenate([spread, -spread]),
                                             np.full((2, 4), 0.2), np.full(2, 0.5))
    sig = SIGMAS[:2]
    out = jaxdiff.sample(den, x_T, sig, solver="euler", afs=True, afs_mean=m)
    np.testing.assert_allclose(out, x_T + (sig[1] - sig[0]) * (x_T - m)
                               / jnp.sqrt(1 + sig[0] ** 2), rtol=1e-12)
    exact = jaxdiff.sample(den, x_T, jaxdiff.schedules.get("polynomial", 200), solver="heun")
    err = lambda **kw: float(jnp.linalg.norm(jaxdiff.sample(
        den, x_T, jaxdiff.schedules.get("polynomial", 6), solver="ipndm", **kw) - exact))
    # Measured (4 calls with AFS, 5 without): plain AFS 2.43, with the mean 0.142, no AFS
    # 0.142: centred, the analytical step is as good as the model call it saves.
    assert err(afs=True, afs_mean=m) < 0.1 * err(afs=True)
    assert err(afs=True, afs_mean=m) < 2 * err(afs=False)


def test_afs_mean_errors(denoise, x_T):
    with pytest.raises(ValueError, match="afs=True"):
        jaxdiff.sample(denoise, x_T, SIGMAS, afs_mean=jnp.zeros(4))
    with pytest.raises(ValueError, match="does not broadcast"):
        jaxdiff.sample(denoise, x_T, SIGMAS, afs=True, afs_mean=jnp.zeros(3))


def test_float32_in_float32_out(denoise):
    x = jnp.ones((2, 4), jnp.float32) * 80
    out = jaxdiff.sample(denoise, x, SIGMAS, solver="unipc")
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))


def test_sharded_batch_samples_without_code_changes(denoise, x_T):
    devices = np.array(jax.devices()[:4])
    assert devices.size == 4, "tests run with 4 host devices (see conftest)"
    mesh = Mesh(devices, ("data",))
    x_sharded = jax.device_put(x_T, NamedSharding(mesh, P("data")))
    out = jaxdiff.sample(denoise, x_sharded, SIGMAS, solver="dpmpp")
    np.testing.assert_allclose(out, jaxdiff.sample(denoise, x_T, SIGMAS, solver="dpmpp"),
                               rtol=1e-12)
    assert len(out.sharding.device_set) == 4


def test_thresholding_is_opt_in(x_T):
    big = lambda x, sigma: 3.0 * jnp.ones_like(x)      # |D| > 1 everywhere
    plain = jaxdiff.sample(big, x_T, SIGMAS, solver="dpmpp")
    clipped = jaxdiff.sample(big, x_T, SIGMAS, solver="dpmpp", thresholding=True)
    np.testing.assert_allclose(plain[:, 0], 3.0 + (x_T[:, 0] - 3.0) * SIGMAS[-1] / SIGMAS[0],
                               rtol=1e-9)
    assert float(jnp.abs(clipped).max()) < 1.01


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("sigmas,match", [
    (jnp.ones((2, 3)), "1-D"),
    (jnp.array([80.0]), "length >= 2"),
    (jnp.array([1.0, 2.0, 0.5]), r"strictly decreasing; sigmas\[0\]"),
    (jnp.array([1.0, 0.5, 0.0]), r"positive; sigmas\[2\] = 0"),
    (jnp.array([1.0, jnp.nan]), "finite"),
])
def test_bad_sigmas(denoise, sigmas, match):
    with pytest.raises(ValueError, match=match):
        jaxdiff.sample(denoise, jnp.ones((1, 4)), sigmas)


def test_bad_solver_options_and_denoiser(denoise):
    x = jnp.ones((1, 4))
    with pytest.raises(ValueError, match=r"unknown solver 'rk4'.*'dpmpp'"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="rk4")
    with pytest.raises(ValueError, match="max_order must be an integer in 1..3, got 4"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="dpmpp", max_order=4)
    with pytest.raises(ValueError, match="max_order must be an integer in 1..4, got 0"):
        jaxdiff.nfe("ipndm", 6, max_order=0)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['rho'\]"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="euler", rho=7)
    with pytest.raises(ValueError, match="variant must be one of"):
        jaxdiff.sample(denoise, x, SIGMAS, solver="unipc", variant="bh3")
    with pytest.raises(ValueError, match=r"input's shape \(1, 4\), got \(1, 3\)"):
        jaxdiff.sample(lambda x, s: x[:, :3], x, SIGMAS)


def test_check_finite_reports_the_step():
    def explodes(x, sigma):
        return jnp.where(sigma[:, None] < 1.0, jnp.nan, 0.0) * jnp.ones_like(x)
    with pytest.raises(FloatingPointError, match=r"step 3 \(sigma 0.9654"):
        jaxdiff.sample(explodes, jnp.ones((1, 4)), SIGMAS, solver="euler", check_finite=True)
    out = jaxdiff.sample(explodes, jnp.ones((1, 4)), SIGMAS, solver="euler")   # off: no raise
    assert bool(jnp.isnan(out).all())


def test_pytree_denoiser_params_are_traced_not_baked_in():
    from jax.tree_util import Partial

    # One (cached) shape check + one trace; a second trace for new values would raise.
    @functools.partial(chex.assert_max_traces, n=2)
    def apply(scale, x, sigma):
        return scale * x

    x = jnp.ones((2, 3))
    outs = [jaxdiff.sample(Partial(apply, jnp.asarray(s)), x, SIGMAS, solver="euler")
            for s in (0.5, 0.25)]
    assert not np.allclose(outs[0], outs[1])


def test_steps_for_nfe():
    assert jaxdiff.steps_for_nfe("ipndm", 5) == (6, False)
    assert jaxdiff.steps_for_nfe("heun", 6) == (4, False)
    assert jaxdiff.steps_for_nfe("dpm2", 5) == (4, True)
    assert jaxdiff.steps_for_nfe("heun", 1) == (2, True)
    with pytest.raises(ValueError, match="cannot make exactly 0"):
        jaxdiff.steps_for_nfe("heun", 0)


# ------------------------------------------------------------------ half precision
@pytest.mark.parametrize("solver", SOLVERS)
def test_bfloat16_state_follows_float32_and_merged_sigmas_are_an_error(solver):
    """Coefficients are computed in float32 (UniPC's solve has no bfloat16 LAPACK) and
    the schedule is validated after the cast that would merge 80, 79.9 and 79.8."""
    den = lambda x, s: x / (1.0 + s[:, None] ** 2)
    x = 80.0 * jnp.ones((2, 3), jnp.bfloat16)
    sigmas = jaxdiff.schedules.get("polynomial", 6)
    out = jaxdiff.sample(den, x, sigmas, solver=solver)
    ref = jaxdiff.sample(den, x.astype(jnp.float32), sigmas, solver=solver)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.1)
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 80.0 <= sigmas\[1\] = 80.0 .after "
                                         r"the cast to bfloat16"):
        jaxdiff.sample(den, x, jnp.array([80.0, 79.9, 79.8, 1.0]), solver=solver)


@pytest.mark.parametrize("solver", ["deis", "ipndm_v"])
def test_float16_coefficient_overflow_is_an_error(solver):
    den = lambda x, s: x / (1.0 + s[:, None] ** 2)
    x = 80.0 * jnp.ones((2, 3), jnp.float16)
    with pytest.raises(ValueError, match=rf"{solver}'s coefficients .* beyond float16's "
                                         r"range"):
        jaxdiff.sample(den, x, jnp.array([80.0, 79.9, 79.8, 1.0]), solver=solver)
