"""Model wrappers: closed forms on Gaussian data, sigma <-> t, sampling, pytrees, errors."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

import jaxdiff
from jaxdiff import schedules, wrappers

# x0 ~ N(MU, diag(S2)): the exact denoiser is MU + S2 / (S2 + sigma^2) (x - MU).
MU = np.array([0.5, -1.0, 2.0])
S2 = np.array([0.25, 1.0, 4.0])


def ddpm_alphas(beta_end=0.02, steps=1000):
    """DDPM's linear betas 1e-4..beta_end: sigma range 0.0100005 .. 157.407 for 0.02."""
    return np.cumprod(1 - np.linspace(1e-4, beta_end, steps))


def sd_alphas():
    """Stable Diffusion's scaled-linear betas (sqrt-linear 0.00085..0.012, 1000 steps)."""
    return np.cumprod(1 - np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2)


AC = ddpm_alphas()


def gauss_d(x, sigma):
    return MU + S2 / (S2 + sigma[:, None] ** 2) * (x - MU)


def gauss_eps(x, sigma):
    """E[z | x0 + sigma z = x] for the Gaussian data, written directly (not via D)."""
    return sigma[:, None] / (S2 + sigma[:, None] ** 2) * (x - MU)


def exact_vp_eps(ac, x_in, t):
    """The exact eps network of the Gaussian data in VP units at float timestep t."""
    sigma = wrappers.vp_t_to_sigma(t, ac)
    return gauss_eps(x_in * jnp.sqrt(1 + sigma ** 2)[:, None], sigma)


def exact_vp_v(ac, x_in, t):
    """v = alpha eps - sigma_vp x0 with alpha = 1 / sqrt(1 + sigma^2), sigma_vp = sigma alpha."""
    sigma = wrappers.vp_t_to_sigma(t, ac)
    x = x_in * jnp.sqrt(1 + sigma ** 2)[:, None]
    alpha = (1 / jnp.sqrt(1 + sigma ** 2))[:, None]
    return alpha * gauss_eps(x, sigma) - sigma[:, None] * alpha * gauss_d(x, sigma)


def exact_velocity(x_t, t):
    """E[z - x0 | (1 - t) x0 + t z = x_t], from the joint Gaussian in flow coordinates."""
    t = t[:, None]
    var = (1 - t) ** 2 * S2 + t ** 2
    resid = x_t - (1 - t) * MU
    return t / var * resid - (MU + (1 - t) * S2 / var * resid)


def record_t(x_in, t):
    """An 'eps network' that returns its timestep: t = (x - D) / sigma."""
    return jnp.broadcast_to(t[:, None], x_in.shape)


@pytest.fixture(scope="module")
def points():
    """x (6, 3) and sigmas at steps 0, 250, 999, between 250 and 251, and inside."""
    ls = np.log(np.asarray(wrappers.vp_sigmas(AC)))
    sig = np.exp([ls[0], ls[250], ls[-1], 0.3 * ls[250] + 0.7 * ls[251], 0.0, np.log(40.0)])
    return np.random.default_rng(0).normal(size=(6, 3)) * 3, sig


# ------------------------------------------------------------------- sigma <-> t


def test_vp_sigmas_and_the_t_mapping_round_trip():
    s = np.asarray(wrappers.vp_sigmas(AC))
    np.testing.assert_allclose([s[0], s[-1]], [0.010000500037502575, 157.40728081040757],
                               rtol=1e-12)
    np.testing.assert_allclose(wrappers.vp_t_to_sigma(np.arange(1000.0), AC), s, rtol=1e-13)
    t = np.random.default_rng(1).uniform(0, 999, size=50)
    np.testing.assert_allclose(wrappers.vp_sigma_to_t(wrappers.vp_t_to_sigma(t, AC), AC), t,
                               atol=1e-9)
    # log-linear between steps: the geometric mean of steps 10 and 11 is t = 10.5
    mid = np.sqrt(s[10] * s[11])
    assert abs(float(wrappers.vp_sigma_to_t(mid, AC)) - 10.5) < 1e-9
    # quantize: nearest step in log sigma; ends clamp in both modes
    near = [s[10] ** 0.6 * s[11] ** 0.4, s[10] ** 0.4 * s[11] ** 0.6, 1e-3, 1e3]
    np.testing.assert_array_equal(wrappers.vp_sigma_to_t(near, AC, quantize=True),
                                  [10, 11, 0, 999])
    np.testing.assert_allclose(wrappers.vp_sigma_to_t(near[2:], AC), [0, 999], atol=0)


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("make,exact", [(wrappers.vp_eps, exact_vp_eps),
                                        (wrappers.vp_v, exact_vp_v)])
def test_vp_wrappers_of_the_exact_network_give_the_exact_denoiser(points, make, exact):
    x, sig = points
    den = make(Partial(exact, AC), AC)
    np.testing.assert_allclose(den(x, sig), gauss_d(x, sig), rtol=1e-11, atol=1e-12)


def test_vp_scalings_by_hand():
    x = np.array([[2.0, -4.0, 1.0]])
    ones = lambda x_in, t: jnp.ones_like(x_in)
    ident = lambda x_in, t: x_in
    # eps: D = x - sigma * eps(x / sqrt(sigma^2 + 1)); at sigma = 1 the input is x / sqrt 2
    np.testing.assert_allclose(wrappers.vp_eps(ones, AC)(x, 1.0), x - 1.0, rtol=1e-15)
    np.testing.assert_allclose(wrappers.vp_eps(ident, AC)(x, 1.0), x * (1 - 2 ** -0.5),
                               rtol=1e-15)
    # v: D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v(...); sigma = 1: x / 2 - v / sqrt 2
    np.testing.assert_allclose(wrappers.vp_v(ones, AC)(x, 1.0), x / 2 - 2 ** -0.5, rtol=1e-15)
    np.testing.assert_allclose(wrappers.vp_v(ident, AC)(x, 1.0), np.zeros_like(x), atol=1e-15)


def test_quantize_calls_the_nearest_step_interpolation_the_exact_t(points):
    x, sig = points
    t_of = lambda q: (x - wrappers.vp_eps(record_t, AC, quantize=q)(x, sig)) / sig[:, None]
    t_interp, t_quant = np.asarray(t_of(False))[:, 0], np.asarray(t_of(True))[:, 0]
    np.testing.assert_allclose(t_interp, wrappers.vp_sigma_to_t(sig, AC), rtol=1e-12)
    np.testing.assert_allclose(t_interp[:4], [0, 250, 999, 250.7], rtol=1e-9)
    np.testing.assert_allclose(t_quant[:4], [0, 250, 999, 251], atol=1e-9)
    np.testing.assert_allclose(t_quant, np.round(t_quant), atol=1e-9)
    assert np.all(np.asarray(wrappers.vp_sigma_to_t(sig, AC, quantize=True)) == t_quant.round())
    # On the grid both agree with the exact denoiser; off it, quantize evaluates the exact
    # eps at the step's own sigma_q while scaling by the true sigma.
    quant = wrappers.vp_eps(Partial(exact_vp_eps, AC), AC, quantize=True)(x, sig)
    np.testing.assert_allclose(quant[:3], gauss_d(x, sig)[:3], rtol=1e-11, atol=1e-12)
    sig_q = np.asarray(wrappers.vp_t_to_sigma(t_quant, AC))
    x_in = x / np.sqrt(sig ** 2 + 1)[:, None]
    expected = x - sig[:, None] * gauss_eps(x_in * np.sqrt(1 + sig_q ** 2)[:, None], sig_q)
    np.testing.assert_allclose(quant, expected, rtol=1e-11, atol=1e-12)
    assert np.max(np.abs(quant[3] - gauss_d(x, sig)[3])) > 1e-4


def test_ve_eps_edm_and_flow_closed_forms(points):
    x, sig = points
    np.testing.assert_allclose(wrappers.ve_eps(gauss_eps)(x, sig), gauss_d(x, sig), rtol=1e-12)
    np.testing.assert_allclose(wrappers.flow(exact_velocity)(x, sig), gauss_d(x, sig),
                               rtol=1e-11, atol=1e-12)
    # EDM: a zero raw net is the exact denoiser of N(0, sigma_data^2)
    zero = lambda y, c: jnp.zeros_like(y)
    np.testing.assert_allclose(wrappers.edm(zero, sigma_data=2.0)(x, sig),
                               4.0 / (4.0 + sig[:, None] ** 2) * x, rtol=1e-14)
    # F(y, c) = y + c at sigma = sigma_data = 0.5: c_skip = 1/2, c_in = sqrt 2,
    # c_out = 0.25 / sqrt(0.5), c_noise = log(0.5) / 4: D = x + c_out c_noise
    shift = lambda y, c: y + c[:, None]
    np.testing.assert_allclose(wrappers.edm(shift)(x, 0.5), x - 0.061266133966784195,
                               rtol=1e-13)
    # flow with v = t: D = x / (1 + sigma) - t^2; at sigma = 1, t = 1/2
    np.testing.assert_allclose(wrappers.flow(record_t)(x, 1.0), x / 2 - 0.25, rtol=1e-15)


def test_output_dtype_follows_x():
    x = jnp.ones((2, 3), jnp.float32)
    for den in (wrappers.vp_eps(Partial(exact_vp_eps, AC), AC), wrappers.flow(exact_velocity),
                wrappers.edm(lambda y, c: y), wrappers.ve_eps(gauss_eps)):
        out = den(x, jnp.full((2,), 1.0, jnp.float32))
        assert out.dtype == jnp.float32 and out.shape == (2, 3)


# ------------------------------------------------------------------- sampling


def test_sampling_a_gaussian_through_vp_eps_converges_to_the_exact_flow():
    s = np.asarray(wrappers.vp_sigmas(AC))
    z = np.random.default_rng(2).normal(size=(2000, 3))
    x_T = MU + np.sqrt(S2 + s[-1] ** 2) * z
    # The probability-flow ODE of Gaussian data is linear: each sample moves exactly to
    # MU + sqrt((S2 + sigma_min^2) / (S2 + sigma_max^2)) (x_T - MU).
    target = MU + np.sqrt((S2 + s[0] ** 2) / (S2 + s[-1] ** 2)) * (x_T - MU)
    den = wrappers.vp_eps(Partial(exact_vp_eps, AC), AC)
    errs = []
    for n in (12, 24, 48):
        sigmas = schedules.get("polynomial", n, float(s[0]), float(s[-1]))
        den.check_sigmas(sigmas)
        out = np.asarray(jaxdiff.sample(den, jnp.asarray(x_T), sigmas, solver="heun"))
        errs.append(np.sqrt(np.mean((out - target) ** 2)))
    # Heun is second order: the error falls ~4x per doubling (measured 4.8x, 4.4x)
    assert errs[0] / errs[1] > 3.5 and errs[1] / errs[2] > 3.5 and errs[2] < 0.01, errs
    np.testing.assert_allclose(out.var(axis=0) / x_T.var(axis=0),
                               (S2 + s[0] ** 2) / (S2 + s[-1] ** 2), rtol=0.03)
    np.testing.assert_allclose(out.var(axis=0), S2, rtol=0.1)   # 2000 draws: ~3 % error


# ------------------------------------------------------------ pytrees, tracing


def test_leaves_are_the_parameters_plus_the_schedule():
    w, ac = jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray(AC)
    net = Partial(lambda w, x, t: x * w, w)
    assert [a is b for a, b in zip(jax.tree.leaves(wrappers.vp_eps(net, ac)), [w, ac])] \
        == [True, True]
    assert len(jax.tree.leaves(wrappers.vp_v(net, ac, quantize=True))) == 2
    for make in (wrappers.ve_eps, wrappers.flow, wrappers.edm):
        assert jax.tree.leaves(make(net))[0] is w and len(jax.tree.leaves(make(net))) == 1
    plain = lambda x, t: x
    assert jax.tree.leaves(wrappers.vp_eps(plain, ac))[0] is ac
    assert len(jax.tree.leaves(wrappers.vp_eps(plain, ac))) == 1
    # a wrapper of a plain function without arrays is static and hashable; equal
    # wrappers of the same function reuse the compiled program; arrays count by identity
    assert wrappers.edm(plain) == wrappers.edm(plain)
    assert hash(wrappers.flow(plain)) == hash(wrappers.flow(plain))
    assert wrappers.edm(plain) != wrappers.edm(plain, sigma_data=1.0)
    assert wrappers.vp_eps(plain, ac) == wrappers.vp_eps(plain, ac)
    assert wrappers.vp_eps(plain, ac) != wrappers.vp_eps(plain, jnp.array(AC))
    assert wrappers.vp_eps(plain, ac) != wrappers.vp_v(plain, ac)


def test_new_parameters_and_schedules_do_not_retrace():
    # One (cached) shape check + one trace; a retrace for new values would raise.
    @functools.partial(chex.assert_max_traces, n=2)
    def eps_apply(w, x_in, t):
        return x_in * w + 1e-3 * t[:, None]

    x = jnp.ones((2, 3))
    sigmas = schedules.get("polynomial", 5, 0.02, 100.0)
    outs = [jaxdiff.sample(wrappers.vp_eps(Partial(eps_apply, jnp.full(3, w)), ac), x, sigmas,
                           solver="euler")
            for w, ac in ((0.5, ddpm_alphas()), (0.25, ddpm_alphas(0.021)))]
    assert not np.allclose(outs[0], outs[1])

    @functools.partial(chex.assert_max_traces, n=2)
    def plain_eps(x_in, t):
        return 0.1 * x_in + 1e-3 * t[:, None]

    outs = [jaxdiff.sample(wrappers.vp_v(plain_eps, ac), x, sigmas, solver="euler")
            for ac in (ddpm_alphas(), ddpm_alphas(0.021))]
    assert not np.allclose(outs[0], outs[1])

    @functools.partial(chex.assert_max_traces, n=2)
    def raw(y, c_noise):
        return 0.1 * y

    # no arrays: the wrapper is static, and a rebuilt one is equal (same program)
    outs = [jaxdiff.sample(wrappers.edm(raw), x, sigmas, solver="euler") for _ in range(2)]
    np.testing.assert_array_equal(outs[0], outs[1])


# ------------------------------------------------------------------ the range


def test_sigma_range_is_checked_eagerly_and_clamped_under_jit():
    den = wrappers.vp_eps(record_t, AC)
    x = jnp.ones((1, 3))
    with pytest.raises(ValueError, match=r"sigma = 200 lies outside this model's range "
                                         r"\[0.0100005, 157.407\]"):
        den(x, 200.0)
    with pytest.raises(ValueError, match="sigma = 0.002 lies outside"):
        den.check_sigmas(schedules.get("polynomial", 6))
    den(x, 157.407 * 1.005)                       # within the 1 % slack: no error
    # Under jit values are unknown: k-diffusion's clamping, t = T - 1 at sigma = 200
    out = jax.jit(den)(x, jnp.full((1,), 200.0))
    np.testing.assert_allclose((x - out) / 200.0, 999.0, rtol=1e-12)
    assert (den.sigma_min, den.sigma_max) == pytest.approx((0.0100005, 157.40728), rel=1e-6)


def test_align_your_steps_fits_stable_diffusion_within_the_slack():
    sd = wrappers.vp_eps(record_t, sd_alphas())
    assert (sd.sigma_min, sd.sigma_max) == pytest.approx((0.02916716, 14.614641), rel=1e-6)
    ays = schedules.get("ays_sd15", 11)
    sd.check_sigmas(ays)                          # 0.029 and 14.615 round the range
    with pytest.raises(ValueError, match="sigma = 14.615 lies outside"):
        sd.check_sigmas(ays, rtol=0.0)


# ---------------------------------------------------------------------- errors


def test_bad_schedules_and_options():
    f = lambda x, t: x
    with pytest.raises(ValueError, match=r"1-D floating array of length >= 2, got float64 "
                                         r"\(2, 3\)"):
        wrappers.vp_eps(f, np.full((2, 3), 0.5))
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\).*alphas_cumprod\[0\] = 1.0"):
        wrappers.vp_eps(f, np.array([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"alphas_cumprod\[1\] = 0.0"):
        wrappers.vp_v(f, np.array([0.5, 0.0]))
    with pytest.raises(ValueError, match=r"strictly decreasing; alphas_cumprod\[1\] = 0.5 <= "
                                         r"alphas_cumprod\[2\] = 0.5"):
        wrappers.vp_eps(f, np.array([0.9, 0.5, 0.5]))
    with pytest.raises(ValueError, match="quantize must be True or False, got 'yes'"):
        wrappers.vp_eps(f, AC, quantize="yes")
    with pytest.raises(ValueError, match="eps_fn must be callable, got ndarray"):
        wrappers.vp_eps(AC, AC)
    with pytest.raises(ValueError, match="velocity_fn must be callable"):
        wrappers.flow(None)
    for bad in (0, -1.0, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="sigma_data must be a finite number > 0"):
            wrappers.edm(f, sigma_data=bad)


def test_bad_shapes_eagerly_and_in_sample():
    x = jnp.ones((4, 3))
    crop = lambda x_in, t: x_in[:, :2]
    with pytest.raises(ValueError, match=r"eps_fn returned shape \(4, 2\), expected x's "
                                         r"shape \(4, 3\)"):
        wrappers.vp_eps(crop, AC)(x, 1.0)
    with pytest.raises(ValueError, match=r"velocity_fn returned shape \(4, 2\)"):
        jaxdiff.sample(wrappers.flow(crop), x, schedules.get("polynomial", 4), solver="euler")
    with pytest.raises(ValueError, match=r"sigma must be a scalar or of shape \(4,\), got "
                                         r"\(3,\)"):
        wrappers.ve_eps(lambda x, s: x)(x, jnp.ones(3))
