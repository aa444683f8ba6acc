"""jaxdiff.guidance: CFG limits, blending, energy and classifier guidance on the GMM."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

import jaxdiff
from jaxdiff import guidance, schedules
from jaxdiff.models import unet

B, DIM = 5, 4


def _conditional_gmm(gmm):
    """model_fn(x, sigma, labels): label k < K is component k alone, label K the mixture."""
    means, variances, weights = map(np.asarray, gmm)
    k_null = len(weights)

    def model_fn(x, sigma, labels):
        tot = variances + (sigma ** 2)[:, None, None]                      # (B, K, D)
        diff = x[:, None, :] - means
        comp = means + variances / tot * diff                              # (B, K, D)
        logits = -0.5 * jnp.sum(diff ** 2 / tot + jnp.log(tot), axis=-1) + jnp.log(weights)
        mix = jnp.sum(jax.nn.softmax(logits, axis=1)[..., None] * comp, axis=1)
        one = jnp.take_along_axis(comp, jnp.minimum(labels, k_null - 1)[:, None, None],
                                  axis=1)[:, 0]
        return jnp.where((labels == k_null)[:, None], mix, one)

    return model_fn, k_null


@pytest.fixture(scope="module")
def x_and_sigma():
    rng = np.random.default_rng(1)
    return rng.normal(size=(B, DIM)) * 2.0, rng.uniform(0.2, 3.0, size=(B,))


def test_cfg_limits_match_unconditional_and_conditional_samplers(gmm):
    model_fn, null = _conditional_gmm(gmm)
    labels = jnp.array([0, 1, 2, 0, 1])
    sigmas = schedules.polynomial(8, sigma_max=20.0)
    x_T = sigmas[0] * jax.random.normal(jax.random.PRNGKey(0), (B, DIM), jnp.float64)
    run = functools.partial(jaxdiff.sample, x=x_T, sigmas=sigmas, solver="heun")

    uncond_fn = Partial(lambda x, s: model_fn(x, s, jnp.full((x.shape[0],), null)))
    cond_fn = Partial(lambda x, s: model_fn(x, s, labels))
    # The denoisers agree bit for bit (eager: the same per-row operations) ...
    s = jnp.linspace(0.1, 5.0, B)
    for w, ref in ((0.0, uncond_fn), (1.0, cond_fn)):
        cfg = guidance.classifier_free(model_fn, labels, null, w)
        np.testing.assert_array_equal(cfg(x_T, s), ref(x_T, s))
    # ... and the samplers up to roundoff: XLA fuses a batch of 2B differently from B
    # (measured max difference 1.3e-15 after 7 Heun steps).
    uncond, cond = run(uncond_fn), run(cond_fn)
    np.testing.assert_allclose(run(guidance.classifier_free(model_fn, labels, null, 0.0)),
                               uncond, rtol=0, atol=1e-13)
    np.testing.assert_allclose(run(guidance.classifier_free(model_fn, labels, null, 1.0)),
                               cond, rtol=0, atol=1e-13)
    # Guidance sharpens the class: the Bayes posterior log p(y | x) of the GMM grows with w.
    def log_post(x):
        means, variances, weights = map(np.asarray, gmm)
        x = np.asarray(x)[:, None, :]
        logits = (-0.5 * np.sum((x - means) ** 2 / variances + np.log(variances), axis=-1)
                  + np.log(weights))
        logits -= logits.max(axis=1, keepdims=True)
        lp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return lp[np.arange(B), np.asarray(labels)].mean()

    scores = [log_post(run(guidance.classifier_free(model_fn, labels, null, w)))
              for w in (0.0, 1.0, 3.0)]
    # measured: -1.82, -0.30, -0.07
    assert scores[0] < scores[1] < scores[2], scores


def test_cfg_formula_and_traced_scale(gmm, x_and_sigma):
    model_fn, null = _conditional_gmm(gmm)
    x, s = x_and_sigma
    labels = jnp.array([2, 1, 0, 2, 1])
    d_c = model_fn(x, s, labels)
    d_u = model_fn(x, s, jnp.full((B,), null))
    out = guidance.classifier_free(model_fn, labels, null, 2.5)(x, s)
    np.testing.assert_allclose(out, d_u + 2.5 * (d_c - d_u), rtol=1e-12, atol=1e-12)
    # The scale is a traced leaf: changing it under jit does not retrace.
    f = jax.jit(lambda w: guidance.classifier_free(model_fn, labels, null, w)(x, s))
    np.testing.assert_allclose(f(2.5), out, rtol=1e-12)


def test_cfg_unet_adapter_shapes():
    model = unet.UNet(image_size=8, in_channels=1, base_channels=8, channel_mults=(1, 2),
                      num_res_blocks=1, num_classes=3)
    params = jax.eval_shape(functools.partial(unet.init, model), jax.random.PRNGKey(0))
    fn = guidance.unet_model_fn(model, params)
    den = guidance.classifier_free(fn, jnp.array([0, 2]), model.num_classes, 2.0)
    out = jax.eval_shape(den, jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32),
                         jax.ShapeDtypeStruct((2,), jnp.float32))
    assert out.shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="class-conditional"):
        guidance.unet_model_fn(unet.UNet(image_size=8), params)


def test_blend(denoise, gmm, x_and_sigma):
    model_fn, null = _conditional_gmm(gmm)
    x, s = x_and_sigma
    comps = [Partial(lambda x, s, k=k: model_fn(x, s, jnp.full((x.shape[0],), k)))
             for k in range(3)]
    parts = comps + [denoise]
    for k in range(4):
        w = np.eye(4)[k]
        np.testing.assert_array_equal(guidance.blend(parts, w)(x, s), parts[k](x, s))
    w = np.array([0.2, 0.3, -0.1, 0.6])
    expected = sum(wk * p(x, s) for wk, p in zip(w, parts))
    np.testing.assert_allclose(guidance.blend(parts, w)(x, s), expected, rtol=1e-12)
    # Two-denoiser CFG == the doubled-batch form.
    labels = jnp.full((B,), 1)
    cfg = guidance.classifier_free(model_fn, labels, null, 3.0)(x, s)
    np.testing.assert_allclose(guidance.blend([denoise, comps[1]], [-2.0, 3.0])(x, s), cfg,
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\).*\(3,\)"):
        guidance.blend(parts, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="at least one"):
        guidance.blend([], [])


def _gmm_posterior_cov(gmm, x, sigma):
    """Cov[x0 | x] of the diagonal GMM, (B, D, D), in numpy (closed form)."""
    means, variances, weights = map(np.asarray, gmm)
    out = []
    for xb, sb in zip(np.asarray(x), np.asarray(sigma)):
        tot = variances + sb ** 2
        diff = xb - means
        logits = -0.5 * np.sum(diff ** 2 / tot + np.log(tot), axis=-1) + np.log(weights)
        g = np.exp(logits - logits.max())
        g /= g.sum()
        m = means + variances / tot * diff                  # component posterior means
        v = variances * sb ** 2 / tot                       # component posterior variances
        mean = g @ m
        second = sum(gk * (np.diag(vk) + np.outer(mk, mk)) for gk, vk, mk in zip(g, v, m))
        out.append(second - np.outer(mean, mean))
    return np.stack(out)


def test_energy_guidance_closed_form(denoise, gmm, x_and_sigma):
    x, s = x_and_sigma
    zero = guidance.energy(denoise, lambda y: jnp.zeros(y.shape[0], y.dtype), 7.0)
    np.testing.assert_array_equal(zero(x, s), denoise(x, s))

    # E(y) = |y - c|^2 / 2: grad_x E(D(x)) = J^T (D - c), J = dD/dx = Cov[x0|x] / sigma^2,
    # so D_g = D - w sigma^2 J (D - c) = D - w Cov[x0|x] (D - c).
    c = jnp.array([1.0, -2.0, 0.5, 0.0])
    w = 0.7
    energy_fn = Partial(lambda c, y: 0.5 * jnp.sum((y - c) ** 2, axis=-1), c)
    guided = guidance.energy(denoise, energy_fn, w)(x, s)
    d = np.asarray(denoise(x, s))
    cov = _gmm_posterior_cov(gmm, x, s)
    expected = d - w * np.einsum("bij,bj->bi", cov, d - np.asarray(c))
    np.testing.assert_allclose(guided, expected, rtol=1e-10, atol=1e-12)
    # Works inside the sampler (pytree denoiser, traced scale).
    sigmas = schedules.polynomial(6, sigma_max=10.0)
    out = jaxdiff.sample(guidance.energy(denoise, energy_fn, 2.0),
                         sigmas[0] * jnp.ones((2, 4)), sigmas, solver="euler")
    assert out.shape == (2, 4) and np.all(np.isfinite(out))

    with pytest.raises(ValueError, match=r"energy_fn must return shape \(5,\), got \(\)"):
        guidance.energy(denoise, lambda y: jnp.sum(y), 1.0)(x, s)
    with pytest.raises(ValueError, match="scale must be a real scalar"):
        guidance.energy(denoise, energy_fn, [1.0, 2.0])


def test_classifier_guidance(denoise, gmm, x_and_sigma):
    x, s = x_and_sigma
    labels = jnp.array([0, 1, 2, 0, 1])
    const = lambda x, sigma: jnp.log(jnp.full((x.shape[0], 3), 1 / 3, x.dtype))
    np.testing.assert_array_equal(guidance.classifier(denoise, const, labels, 5.0)(x, s),
                                  denoise(x, s))
    # The Bayes classifier of the GMM at noise level sigma: p(y | x) = responsibilities.
    means, variances, weights = map(np.asarray, gmm)

    def log_prob(x, sigma):
        tot = variances + (sigma ** 2)[:, None, None]
        diff = x[:, None, :] - means
        logits = -0.5 * jnp.sum(diff ** 2 / tot + jnp.log(tot), axis=-1) + jnp.log(weights)
        return jax.nn.log_softmax(logits, axis=1)

    w = 1.5
    out = guidance.classifier(denoise, log_prob, labels, w)(x, s)
    grad = jax.vmap(jax.grad(lambda xb, sb, y: log_prob(xb[None], sb[None])[0, y]))(
        x, s, labels)
    np.testing.assert_allclose(out, denoise(x, s) + w * s[:, None] ** 2 * grad, rtol=1e-12)
    # With the Bayes classifier, w = 1 guidance gives exactly the class-conditional
    # denoiser: grad log p(y|x) = score_y - score.
    model_fn, _ = _conditional_gmm(gmm)
    np.testing.assert_allclose(guidance.classifier(denoise, log_prob, labels, 1.0)(x, s),
                               model_fn(x, s, labels), rtol=1e-10, atol=1e-10)

    with pytest.raises(ValueError, match=r"labels must be an integer array of shape \(B,\)"):
        guidance.classifier(denoise, log_prob, jnp.zeros((B, 1), jnp.int32), 1.0)
    with pytest.raises(ValueError, match=r"labels has batch 3 but x has batch 5"):
        guidance.classifier(denoise, log_prob, labels[:3], 1.0)(x, s)
    with pytest.raises(ValueError, match=r"log_prob_fn must return shape \(B=5"):
        guidance.classifier(denoise, lambda x, s: jnp.sum(x, -1), labels, 1.0)(x, s)


def test_cfg_bad_inputs(gmm, x_and_sigma):
    model_fn, null = _conditional_gmm(gmm)
    x, s = x_and_sigma
    with pytest.raises(ValueError, match=r"labels must be an integer array of shape \(B,\), "
                                         r"got float\d+ \(5,\)"):
        guidance.classifier_free(model_fn, jnp.zeros((B,)), null, 1.0)
    with pytest.raises(ValueError, match=r"shape \(B,\), got int\d+ \(5, 2\)"):
        guidance.classifier_free(model_fn, jnp.zeros((B, 2), jnp.int32), null, 1.0)
    with pytest.raises(ValueError, match="labels has batch 2 but x has batch 5"):
        guidance.classifier_free(model_fn, jnp.array([0, 1]), null, 1.0)(x, s)
    with pytest.raises(ValueError, match=r"must return shape \(10, 4\), got \(10,\)"):
        guidance.classifier_free(lambda x, s, y: x[:, 0], jnp.zeros((B,), jnp.int32), null,
                                 1.0)(x, s)
    with pytest.raises(ValueError, match="null_label must be an int, got 0.5"):
        guidance.classifier_free(model_fn, jnp.zeros((B,), jnp.int32), 0.5, 1.0)
    with pytest.raises(ValueError, match="scale must be finite"):
        guidance.classifier_free(model_fn, jnp.zeros((B,), jnp.int32), null, float("nan"))
