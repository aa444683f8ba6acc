"""Exact denoisers against float64 numpy oracles."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import denoisers


def _np_optimal(data, x, sigma):
    """Brute-force float64 softmax posterior mean; x (B, D), sigma (B,)."""
    d2 = ((x[:, None, :] - data[None]) ** 2).sum(-1)  # (B, N)
    logits = -d2 / (2 * sigma[:, None] ** 2)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    return (w / w.sum(-1, keepdims=True)) @ data


def _np_gmm(means, variances, weights, x, sigma):
    """Posterior mean via explicit Gaussian densities (float64)."""
    v = np.broadcast_to(variances if variances.ndim == 2 else variances[:, None],
                        means.shape)
    out = np.zeros_like(x)
    for b in range(x.shape[0]):
        tot = v + sigma[b] ** 2  # (K, D)
        dens = weights * np.prod(np.exp(-(x[b] - means) ** 2 / (2 * tot))
                                 / np.sqrt(2 * np.pi * tot), axis=1)
        post = dens / dens.sum()
        out[b] = post @ (means + v / tot * (x[b] - means))
    return out


def _rand_gmm(rng, k, d, diagonal):
    means = rng.normal(size=(k, d)) * 2
    variances = rng.uniform(0.1, 1.0, size=(k, d) if diagonal else (k,))
    return denoisers.GaussianMixture(means, variances, rng.uniform(0.5, 2.0, size=k))


@pytest.mark.parametrize("chunk", [1, 7, 16, 50, 1000])
def test_optimal_matches_bruteforce_float64(chunk):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 2, 3))
    x = rng.normal(size=(6, 2, 3)) * 1.5
    sigma = rng.uniform(0.2, 2.0, size=6)
    with jax.enable_x64(True):
        fn = denoisers.optimal(jnp.asarray(data), chunk=chunk)
        out = fn(jnp.asarray(x), jnp.asarray(sigma))
        assert out.dtype == jnp.float64 and out.shape == x.shape
        want = _np_optimal(data.reshape(50, -1), x.reshape(6, -1), sigma)
        np.testing.assert_allclose(np.asarray(out).reshape(6, -1), want, rtol=1e-10,
                                   atol=1e-10)


def test_optimal_float32_and_scalar_sigma():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(37, 5)).astype(np.float32)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    out = denoisers.optimal(data, chunk=8)(jnp.asarray(x), 0.7)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, _np_optimal(data.astype(np.float64), x.astype(
        np.float64), np.full(4, 0.7)), rtol=1e-4, atol=1e-4)


def test_optimal_extreme_sigma():
    rng = np.random.default_rng(2)
    data = rng.normal(size=(40, 4)).astype(np.float32)
    x = data[[3, 17]] + 1e-4 * rng.normal(size=(2, 4)).astype(np.float32)
    fn = denoisers.optimal(data, chunk=16)
    small = fn(jnp.asarray(x), jnp.full((2,), 1e-3, jnp.float32))
    large = fn(jnp.asarray(x), jnp.full((2,), 1e3, jnp.float32))
    assert np.all(np.isfinite(small)) and np.all(np.isfinite(large))
    np.testing.assert_allclose(small, data[[3, 17]], atol=1e-5)
    np.testing.assert_allclose(large, np.broadcast_to(data.mean(0), (2, 4)), atol=1e-4)


def test_gmm_matches_bruteforce():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 3)) * 2
    sigma = rng.uniform(0.1, 2.0, size=5)
    with jax.enable_x64(True):
        for diagonal in (False, True):
            gmm = _rand_gmm(rng, 4, 3, diagonal)
            out = denoisers.gaussian_mixture(*gmm)(jnp.asarray(x), jnp.asarray(sigma))
            assert out.dtype == jnp.float64
            w = gmm.weights / gmm.weights.sum()
            want = _np_gmm(gmm.means, gmm.variances, w, x, sigma)
            np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-10)
        out32 = denoisers.gaussian_mixture(*gmm)(jnp.asarray(x, jnp.float32), 0.5)
        assert out32.dtype == jnp.float32
        want = _np_gmm(gmm.means, gmm.variances, w, x, np.full(5, 0.5))
        np.testing.assert_allclose(out32, want, rtol=1e-4, atol=1e-4)


def test_gmm_score_identity():
    rng = np.random.default_rng(4)
    gmm = _rand_gmm(rng, 3, 4, diagonal=True)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(6, 2, 2)))
        sigma = jnp.asarray(rng.uniform(0.3, 1.5, size=6))
        score = jax.grad(lambda z: denoisers.gaussian_mixture_log_density(
            gmm, z, sigma).sum())(x)
        den = denoisers.gaussian_mixture(*gmm)(x, sigma)
        np.testing.assert_allclose(score, (den - x) / sigma[:, None, None] ** 2,
                                   rtol=1e-9, atol=1e-9)


def test_gmm_single_component_is_linear_shrinkage():
    mu, v = np.array([[1.0, -2.0, 0.5]]), np.array([0.6])
    fn = denoisers.gaussian_mixture(mu, v, np.array([3.0]))
    x = np.array([[0.3, 0.1, -1.0], [4.0, 2.0, 1.0]], np.float32)
    sigma = np.array([0.5, 2.0], np.float32)
    want = mu + v / (v + sigma[:, None] ** 2) * (x - mu)
    np.testing.assert_allclose(fn(x, sigma), want, rtol=1e-5, atol=1e-6)


def test_sample_gaussian_mixture_moments():
    gmm = denoisers.GaussianMixture(np.array([[-3.0, 0.0], [3.0, 1.0]]),
                                    np.array([0.25, 1.0]), np.array([1.0, 3.0]))
    s = np.asarray(denoisers.sample_gaussian_mixture(gmm, jax.random.key(0), 20000))
    assert s.shape == (20000, 2)
    np.testing.assert_allclose(s.mean(0), [1.5, 0.75], atol=0.06)
    assert abs((s[:, 0] > 0).mean() - 0.75) < 0.02


def test_fit_gaussian_mixture_digits():
    from jaxinfra.datasets import load_digits

    images, _ = load_digits()
    gmm = denoisers.fit_gaussian_mixture(images, 5, seed=0, max_iter=20)
    assert gmm.means.shape == (5, 64) and gmm.variances.shape == (5, 64)
    assert gmm.weights.shape == (5,) and gmm.means.dtype == np.float32
    np.testing.assert_allclose(gmm.weights.sum(), 1.0, rtol=1e-6)
    out = denoisers.gaussian_mixture(*gmm)(jnp.asarray(images[:3]), 0.5)
    assert out.shape == (3, 8, 8, 1) and np.all(np.isfinite(out))


@pytest.mark.parametrize("kind", ["optimal", "gmm"])
def test_jit_and_vmap(kind):
    rng = np.random.default_rng(5)
    if kind == "optimal":
        fn = denoisers.optimal(rng.normal(size=(30, 2, 2)).astype(np.float32), chunk=8)
    else:
        fn = denoisers.gaussian_mixture(*_rand_gmm(rng, 3, 4, diagonal=False))
    x = jnp.asarray(rng.normal(size=(3, 5, 2, 2)), jnp.float32)
    sigma = jnp.asarray(rng.uniform(0.3, 2.0, size=(3, 5)), jnp.float32)
    loop = np.stack([fn(x[i], sigma[i]) for i in range(3)])
    np.testing.assert_allclose(jax.vmap(fn)(x, sigma), loop, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(fn)(x[0], sigma[0]), loop[0], rtol=1e-5,
                               atol=1e-6)
    # As a pytree argument (keeps data out of the compiled constants).
    out = jax.jit(lambda f, a, s: f(a, s))(fn, x[1], sigma[1])
    np.testing.assert_allclose(out, loop[1], rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda a: fn(a, sigma[0]).sum())(x[0])
    assert grad.shape == x[0].shape and np.all(np.isfinite(grad))


def test_bad_inputs():
    with pytest.raises(ValueError, match="chunk"):
        denoisers.optimal(np.zeros((3, 2)), chunk=0)
    with pytest.raises(ValueError, match=r"N >= 1"):
        denoisers.optimal(np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        denoisers.gaussian_mixture(np.zeros((3, 2)), np.ones((3, 5)), np.ones(3))
    with pytest.raises(ValueError, match="weights"):
        denoisers.gaussian_mixture(np.zeros((3, 2)), np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="weights"):
        denoisers.gaussian_mixture(np.zeros((3, 2)), np.ones(3), np.array([1, 0, 1.0]))
    for k in (0, 11):
        with pytest.raises(ValueError, match="k must be"):
            denoisers.fit_gaussian_mixture(np.zeros((10, 2)), k)
    fn = denoisers.optimal(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="features"):
        fn(jnp.zeros((4, 3)), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        fn(jnp.zeros((4, 2)), jnp.ones(3))


def test_gaussian_mixture_accepts_a_fitted_tuple():
    gmm = denoisers.GaussianMixture(np.zeros((2, 3)), np.ones(2), np.array([0.5, 0.5]))
    x = np.ones((4, 3))
    np.testing.assert_allclose(denoisers.gaussian_mixture(gmm)(x, 1.0),
                               denoisers.gaussian_mixture(*gmm)(x, 1.0))
    with pytest.raises(ValueError, match="needs means, variances and weights"):
        denoisers.gaussian_mixture(np.zeros((2, 3)))


def test_error_by_sigma_closed_form():
    # One data point mu: the optimal denoiser is mu at every sigma, so the identity
    # "denoiser" is off by ||sigma eps||, whose mean is sigma E[chi_64] = 7.9765 sigma.
    mu = np.linspace(-1, 1, 64)[None]
    sigmas = np.array([0.01, 1.0, 30.0])
    err = denoisers.error_by_sigma(lambda x, s: x, denoisers.optimal(mu), mu, sigmas,
                                   key=jax.random.PRNGKey(0), num_samples=4000)
    np.testing.assert_allclose(err / sigmas, 7.9765, rtol=0.02)
    same = denoisers.error_by_sigma(denoisers.optimal(mu), denoisers.optimal(mu), mu, sigmas,
                                    key=jax.random.PRNGKey(0), num_samples=8)
    np.testing.assert_array_equal(same, 0.0)
