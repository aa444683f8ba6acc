"""jaxdiff.unet: EDM scalings, shapes at every supported resolution, the feature tap, the
sampling contract. Shape checks use ``jax.eval_shape`` (nothing compiled); one tiny model
(the one configs/edm_digits.py:tiny builds) is run for real."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

import jaxdiff
from jaxdiff import schedules
from jaxdiff.models import unet

TINY = dict(image_size=8, in_channels=1, base_channels=8, channel_mults=(1, 2),
            num_res_blocks=1)


@pytest.fixture(scope="module")
def tiny():
    model = unet.UNet(**TINY)
    return model, unet.init(model, jax.random.PRNGKey(0))


def _abstract(model, batch=2, labels=False):
    params = jax.eval_shape(functools.partial(unet.init, model), jax.random.PRNGKey(0))
    x = jax.ShapeDtypeStruct((batch, model.image_size, model.image_size, model.in_channels),
                             jnp.float32)
    s = jax.ShapeDtypeStruct((batch,), jnp.float32)
    y = jax.ShapeDtypeStruct((batch,), jnp.int32) if labels else None
    return params, x, s, y


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_scalings_match_formulas(sigma_data):
    sigma = np.array([0.002, 0.1, 0.5, 1.0, 80.0])
    c_skip, c_out, c_in, c_noise = map(np.asarray, unet.edm_scalings(sigma, sigma_data))
    sd = sigma_data
    np.testing.assert_allclose(c_skip, sd ** 2 / (sigma ** 2 + sd ** 2), rtol=1e-12)
    np.testing.assert_allclose(c_out, sigma * sd / np.sqrt(sigma ** 2 + sd ** 2), rtol=1e-12)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma ** 2 + sd ** 2), rtol=1e-12)
    np.testing.assert_allclose(c_noise, np.log(sigma) / 4, rtol=1e-12)


@pytest.mark.parametrize("size,mults,attention,classes,feat", [
    (8, (1, 2), False, 0, 16),          # digits: 8 -> 4
    (8, (1, 2), True, 10, 16),
    (28, (1, 2, 2), True, 0, 49),       # Fashion-MNIST: 28 -> 14 -> 7
    (28, (1, 2), False, 10, 196),
    (32, (1, 2, 2), True, 10, 64),      # CIFAR-sized: 32 -> 16 -> 8 (AMED's 64 values)
])
def test_shapes_and_feature_tap(size, mults, attention, classes, feat):
    model = unet.UNet(image_size=size, in_channels=1 if size != 32 else 3, base_channels=8,
                      channel_mults=mults, num_res_blocks=1, attention=attention,
                      num_heads=2, num_classes=classes)
    params, x, s, y = _abstract(model, labels=classes > 0)
    den = jax.eval_shape(lambda p, x, s, y: unet.make_denoiser(model, p, y)(x, s), params,
                         x, s, y)
    assert den.shape == x.shape and den.dtype == jnp.float32
    f = jax.eval_shape(lambda p, x, s: unet.make_feature_fn(model, p)(x, s), params, x, s)
    assert f.shape == (2, feat)
    both = jax.eval_shape(lambda p, x, s, y: model.apply({"params": p}, x, s, y,
                                                         return_features=True),
                          params, x, s, y)
    assert both[0].shape == x.shape and both[1].shape == (2, feat)
    h, w = unet.feature_shape(model)
    assert h * w == feat


def test_precondition_and_contract(tiny):
    model, params = tiny
    key = jax.random.PRNGKey(1)
    x = jax.random.normal(key, (3, 8, 8, 1), jnp.float32)
    sigma = jnp.array([0.01, 1.0, 50.0], jnp.float32)
    fn = unet.make_denoiser(model, params)
    out = fn(x, sigma)
    assert out.shape == x.shape and out.dtype == jnp.float32
    # The output conv is zero-initialised, so F = 0 and D = c_skip x exactly.
    c_skip = 0.25 / (np.asarray(sigma, np.float64) ** 2 + 0.25)
    np.testing.assert_allclose(out, c_skip[:, None, None, None] * np.asarray(x), rtol=1e-5)
    # F != 0: D - c_skip x = c_out F, with F from the raw network read via the scalings.
    params2 = jax.tree.map(lambda p: p + 0.01, params)
    out2 = np.asarray(unet.make_denoiser(model, params2)(x, sigma), np.float64)
    assert np.abs(out2 - c_skip[:, None, None, None] * np.asarray(x)).max() > 1e-4
    # Scalar sigma broadcasts; the denoiser is a pytree usable as a jit argument.
    np.testing.assert_allclose(fn(x, 1.0)[1], out[1], rtol=1e-6)
    jitted = jax.jit(lambda f, x, s: f(x, s))(fn, x, sigma)
    np.testing.assert_allclose(jitted, out, rtol=1e-5, atol=1e-6)


def test_feature_fn_is_channel_mean_of_lowest_encoder_block(tiny):
    model, params = tiny
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 1), jnp.float32)
    sigma = jnp.array([0.5, 5.0], jnp.float32)
    feat = unet.make_feature_fn(model, params)(x, sigma)
    apply = jax.jit(functools.partial(model.apply, capture_intermediates=True))
    _, inter = apply({"params": params}, x, sigma)
    block = inter["intermediates"]["enc1_block0"]["__call__"][0]      # (2, 4, 4, 16)
    assert block.shape == (2, 4, 4, 16)
    np.testing.assert_allclose(feat, block.mean(-1).reshape(2, 16), rtol=1e-5, atol=1e-6)


def test_works_with_sample_and_params_are_traced(tiny):
    model, params = tiny
    z = jax.random.normal(jax.random.PRNGKey(3), (4, 8, 8, 1), jnp.float32)
    sigmas = jnp.asarray(schedules.get("polynomial", 4), jnp.float32)
    fn = unet.make_denoiser(model, params)
    out = jaxdiff.sample(fn, 80.0 * z, sigmas, solver="heun")
    assert out.shape == z.shape and bool(jnp.all(jnp.isfinite(out)))
    # Params are traced leaves: sampling with new params must not trace the model again.
    calls = []

    def probe(p, x, sigma):
        calls.append(1)
        return unet.make_denoiser(model, p)(x, sigma)

    jaxdiff.sample(Partial(probe, params), 80.0 * z, sigmas, solver="heun")
    traced = chex.assert_max_traces(lambda p, x, sigma: probe(p, x, sigma), n=len(calls))
    jaxdiff.sample(Partial(traced, params), 80.0 * z, sigmas, solver="heun")
    params2 = jax.tree.map(lambda p: p + 0.01, params)
    out2 = jaxdiff.sample(Partial(traced, params2), 80.0 * z, sigmas, solver="heun")
    assert not np.array_equal(np.asarray(out), np.asarray(out2))


def test_bad_inputs(tiny):
    model, params = tiny
    fn = unet.make_denoiser(model, params)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8, 8, 1\)"):
        fn(jnp.zeros((2, 28, 28, 1), jnp.float32), jnp.ones((2,), jnp.float32))
    with pytest.raises(ValueError, match="sigma must have shape"):
        fn(jnp.zeros((2, 8, 8, 1), jnp.float32), jnp.ones((3,), jnp.float32))
    with pytest.raises(ValueError, match="unconditional"):
        unet.make_denoiser(model, params, labels=jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="not divisible"):
        unet.init(unet.UNet(image_size=28, channel_mults=(1, 2, 2, 2)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="noise_embedding"):
        bad = unet.UNet(**dict(TINY, noise_embedding="nope"))
        jax.eval_shape(functools.partial(unet.init, bad), jax.random.PRNGKey(0))
    cond = unet.UNet(**dict(TINY, num_classes=10))
    params_c, x, s, _ = _abstract(cond)
    with pytest.raises(ValueError, match="labels must have shape"):
        jax.eval_shape(lambda p, x, s: cond.apply({"params": p}, x, s, jnp.zeros((5,), jnp.int32)),
                       params_c, x, s)
