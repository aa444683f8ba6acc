"""jaxkd.models: parameter counts against distillation.md §5, feature taps, forward_from,
PyTorch-matching BatchNorm and initialisation, input and name checks.

Counts and shapes come from ``jax.eval_shape`` (no real compute); real forward passes only
on two small models.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models
from jaxkd.models import _layers
from jaxkd.models.shufflenet import channel_shuffle

# distillation.md §5 (100 classes, BN scale/bias included, running statistics excluded).
# Exact integers where the spec gives one; strings are its figures in millions, rounded.
SPEC_PARAMS = {
    "resnet8": "0.08", "resnet14": "0.18", "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": "0.67", "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916, "wrn_40_1": 569_780, "wrn_16_2": 703_284, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": "9.28", "vgg13": 9_462_180, "vgg16": "14.77",
    "MobileNetV2": 812_836, "ShuffleV1": 949_258, "ShuffleV2": 1_355_528,
    "ResNet18": "11.22", "ResNet50": 23_705_252,
}
# (spatial sizes of feats[:-1], pooled width) on 32x32x3 inputs (§5 feature taps).
RES = (32, 32, 16, 8)
SPEC_FEATS = {
    **{f"resnet{d}": (RES, 64) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (RES, 256), "resnet32x4": (RES, 256),
    "wrn_16_1": (RES, 64), "wrn_40_1": (RES, 64), "wrn_16_2": (RES, 128),
    "wrn_40_2": (RES, 128),
    **{f"vgg{d}": ((32, 16, 8, 4, 4), 512) for d in (8, 11, 13, 16)},
    "MobileNetV2": ((16, 16, 8, 4, 2), 1280),
    "ShuffleV1": ((32, 16, 8, 4), 960), "ShuffleV2": ((32, 16, 8, 4), 1024),
    "ResNet18": ((32, 32, 16, 8, 4), 512), "ResNet50": ((32, 32, 16, 8, 4), 2048),
}
CHANNELS = {"resnet8x4": (32, 64, 128, 256), "wrn_40_2": (16, 32, 64, 128),
            "vgg8": (64, 128, 256, 512, 512), "ShuffleV1": (24, 240, 480, 960),
            "ShuffleV2": (24, 116, 232, 464), "MobileNetV2": (16, 12, 16, 48, 160)}


def _abstract(name, shape=(2, 32, 32, 3), num_classes=100):
    """eval_shape of init_with_output, recording the configuration of every BatchNorm
    (momentum, epsilon), Conv (kernel_init) and Linear (init rule) that runs."""
    model = models.create(name, num_classes)
    seen = {"bn": set(), "conv": set(), "linear": set()}

    def spy(next_fun, args, kwargs, context):
        mod = context.module
        if context.method_name == "__call__":
            if isinstance(mod, nn.BatchNorm):
                seen["bn"].add((mod.momentum, mod.epsilon))
            elif isinstance(mod, nn.Conv):
                seen["conv"].add(INITS.get(id(mod.kernel_init), mod.kernel_init))
            elif isinstance(mod, _layers.Linear):
                seen["linear"].add(mod.rule)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(spy):
        (logits, feats), variables = jax.eval_shape(
            lambda: model.init_with_output(jax.random.PRNGKey(0), jnp.zeros(shape)))
    return logits, feats, variables, seen


INITS = {id(_layers.kaiming_fan_out): "kaiming_fan_out", id(_layers.torch_default): "torch"}
# distillation.md §1 and the reference models' own init code: (conv kernels, Linear).
FAMILY_INIT = {"resnet": ("kaiming_fan_out", "torch"),
               "ResNet": ("kaiming_fan_out", "torch"),
               "wrn": ("kaiming_fan_out", "torch_zero_bias"),
               "vgg": ("kaiming_fan_out", "normal"),
               "Mobi": ("kaiming_fan_out", "normal"),
               "Shuf": ("torch", "torch")}


@pytest.fixture(scope="module")
def abstract():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _abstract(name)
        return cache[name]
    return get


def test_registry_covers_spec():
    assert set(SPEC_PARAMS) <= set(models.MODELS)


@pytest.mark.parametrize("name", sorted(SPEC_PARAMS))
def test_param_count_and_feature_taps(abstract, name):
    logits, feats, variables, seen = abstract(name)
    n, spec = models.count_params(variables), SPEC_PARAMS[name]
    if isinstance(spec, str):                     # "9.28" (M): same value when rounded
        assert f"{n / 1e6:.{len(spec.split('.')[1])}f}" == spec, (name, n, spec)
    else:                                         # exact in the spec (well within 1%)
        assert n == spec, (name, n, spec)
    assert logits.shape == (2, 100)
    sizes, width = SPEC_FEATS[name]
    assert [f.shape[1] for f in feats[:-1]] == list(sizes)
    assert [f.shape[2] for f in feats[:-1]] == list(sizes)
    assert feats[-1].shape == (2, width) and feats[-2].shape[-1] == width or \
        name in ("MobileNetV2", "ShuffleV2")      # these two have a 1x1 conv in the head
    if name in CHANNELS:
        assert tuple(f.shape[-1] for f in feats[:-1]) == CHANNELS[name]
    # Every BatchNorm is torch's BatchNorm2d(momentum=0.1, eps=1e-5).
    assert seen["bn"] == {(0.9, 1e-5)}
    conv_init, linear_init = next(v for k, v in FAMILY_INIT.items() if name.startswith(k))
    assert seen["conv"] == {conv_init} and seen["linear"] == {linear_init}
    # batch_stats hold a mean and a var for every BN scale.
    scales = [x for p, x in jax.tree_util.tree_leaves_with_path(variables["params"])
              if p[-1].key == "scale"]
    assert len(jax.tree.leaves(variables["batch_stats"])) == 2 * len(scales)


def test_cifar_resnet_counts_are_linear_in_depth(abstract):
    """resnet(6n + 2) adds the same blocks per n: the spec's exact resnet20/32/56/110 pin
    the line, so resnet8/14/44 (rounded in the spec) are checked exactly too."""
    count = {d: models.count_params(abstract(f"resnet{d}")[2]) for d in (8, 14, 44)}
    step = (1_736_564 - 278_324) // 15                      # per unit of n (n: 3 -> 18)
    assert step * 15 == 1_736_564 - 278_324
    for d, c in count.items():
        assert c == 278_324 + step * ((d - 2) // 6 - 3), (d, c)


def test_count_params_ignores_batch_stats(abstract):
    _, _, variables, _ = abstract("resnet20")
    assert models.count_params(variables) == models.count_params(variables["params"])
    assert models.count_params({"a": np.zeros((3, 4)), "b": [np.zeros(5)]}) == 17


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV2"])
def test_fashion_mnist_input(name):
    """28x28x1 works everywhere (global pooling); only the stem conv's params change."""
    logits, feats, variables, _ = _abstract(name, (2, 28, 28, 1), 10)
    assert logits.shape == (2, 10) and feats[-1].ndim == 2
    assert all(f.ndim == 4 for f in feats[:-1])
    _, _, v32, _ = _abstract(name, (2, 32, 32, 3), 10)
    stem = jax.tree.leaves(variables["params"])
    stem32 = jax.tree.leaves(v32["params"])
    diff = [(a.shape, b.shape) for a, b in zip(stem, stem32) if a.shape != b.shape]
    assert len(diff) == 1 and diff[0][0][:2] == diff[0][1][:2] and diff[0][0][2] == 1


def _real(name, shape, num_classes=10, seed=0):
    """A model with random variables of the right shapes (no init: RNG compiles are slow)
    and running statistics from one training-mode pass, so they are not the trivial 0 / 1."""
    model = models.create(name, num_classes)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    _, _, abstract, _ = _abstract(name, shape, num_classes)
    params = jax.tree.map(
        lambda a: jnp.asarray(rng.normal(size=a.shape) * math.sqrt(2 / math.prod(a.shape[:-1]))
                              + (a.ndim == 1), jnp.float32), abstract["params"])
    stats = jax.tree.map(lambda a: jnp.ones(a.shape, jnp.float32), abstract["batch_stats"])
    _, upd = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
        {"params": params, "batch_stats": stats}, x)
    return model, {"params": params, "batch_stats": upd["batch_stats"]}, x


@pytest.fixture(scope="module")
def resnet8():
    return _real("resnet8", (2, 32, 32, 3))


@pytest.fixture(scope="module", params=["resnet8", "wrn_16_1"])
def real_model(request, resnet8):
    return resnet8 if request.param == "resnet8" else _real("wrn_16_1", (2, 28, 28, 1))


def fwd_pre(model):
    return jax.jit(lambda v, x: model.apply(v, x, preact=True))


def test_forward_from_equals_full_forward(real_model):
    model, variables, x = real_model
    fwd = jax.jit(lambda v, x: model.apply(v, x))
    logits, feats = fwd(variables, x)
    assert len(feats) == 5
    ffwd = jax.jit(lambda v, h, i: model.apply(v, h, i, method="forward_from"),
                   static_argnums=2)
    for i in list(range(len(feats) - 1)) + [-2]:
        out = ffwd(variables, feats[i], i)
        np.testing.assert_allclose(out, logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"valid indices are 0\.\.3"):
        model.apply(variables, feats[-1], 4, method="forward_from")
    # preact=True: the stage maps before their last ReLU (WRN blocks end without one).
    _, pre = fwd_pre(model)(variables, x)
    np.testing.assert_array_equal(pre[0], feats[0])
    np.testing.assert_array_equal(pre[-1], feats[-1])
    relu_after = (1, 2, 3) if isinstance(model, models.resnet.ResNet) else (3,)
    for i in (1, 2, 3):
        want = np.maximum(pre[i], 0) if i in relu_after else pre[i]
        np.testing.assert_allclose(feats[i], want, rtol=1e-6, atol=1e-6)
        assert np.min(pre[i]) < 0


def test_train_mode_batch_norm(resnet8):
    """Stem BN after one train step from running stats 1: new = 0.9 * 1 + 0.1 * batch value
    (torch momentum 0.1; the variance is the biased one, torch's is unbiased: a factor
    n / (n - 1), here 2048 / 2047); eval output = (y - mean) / sqrt(var + 1e-5) * scale
    + bias."""
    model, variables, x = resnet8
    p = variables["params"]["stem"]
    y = jax.lax.conv_general_dilated(x, p["Conv_0"]["kernel"].astype(x.dtype), (1, 1),
                                     ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    stats = variables["batch_stats"]["stem"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.9 + 0.1 * y.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * y.var((0, 1, 2)), rtol=1e-5)
    _, feats = jax.jit(model.apply)(variables, x)
    bn = p["BatchNorm_0"]
    expect = (y - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]
    np.testing.assert_allclose(feats[0], np.maximum(expect, 0), rtol=1e-5, atol=1e-6)


def test_init_distributions():
    """The initialisers the models use (checked per family above) draw what torch draws:
    Kaiming-normal fan-out convs (untruncated), U(+-1/sqrt(fan_in)) torch defaults,
    N(0, 0.01) / zero-bias Linear."""
    @jax.jit
    def init(key):
        k = jax.random.split(key, 4)
        return (_layers.conv(256, 3).init(k[0], jnp.zeros((1, 1, 1, 256), jnp.float32)),
                _layers.conv(512, 1, init=_layers.torch_default).init(
                    k[1], jnp.zeros((1, 1, 1, 464), jnp.float32)),
                *(_layers.Linear(100, mode).init(k[i], jnp.zeros((1, 256), jnp.float32))
                  for i, mode in ((2, "torch"), (3, "normal"))))
    conv, shuffle_conv, lin, lin_normal = jax.device_get(init(jax.random.PRNGKey(0)))
    k = conv["params"]["kernel"]                              # (3, 3, 256, 256)
    assert k.shape == (3, 3, 256, 256) and "bias" not in conv["params"]
    assert abs(k.std() / math.sqrt(2 / (9 * 256)) - 1) < 0.01 and abs(k.mean()) < 1e-3
    assert np.abs(k).max() > 4 * k.std()                      # untruncated normal
    k = shuffle_conv["params"]["kernel"]                      # U(+-1/sqrt(464))
    assert 0.99 / math.sqrt(464) < np.abs(k).max() <= 1 / math.sqrt(464)
    assert abs(k.std() * math.sqrt(3 * 464) - 1) < 0.01
    for a in lin["params"].values():                          # torch default U(+-1/16)
        assert 0.9 / 16 < np.abs(a).max() <= 1 / 16
    assert lin["params"]["kernel"].shape == (256, 100)
    assert abs(np.std(lin_normal["params"]["kernel"]) / 0.01 - 1) < 0.05
    assert not np.any(lin_normal["params"]["bias"])


def test_channel_shuffle_matches_torch_layout():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 3, 4))                        # NCHW
    n, c, h, w = x.shape
    ref = x.reshape(n, 3, c // 3, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)
    out = channel_shuffle(jnp.asarray(x.transpose(0, 2, 3, 1)), 3)
    np.testing.assert_array_equal(np.asarray(out).transpose(0, 3, 1, 2), ref)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*resnet8, .*ShuffleV2"):
        models.create("resnet9")
    with pytest.raises(ValueError, match="num_classes"):
        models.create("resnet8", 0)
    with pytest.raises(ValueError, match=r"\(B, H, W, C\).*\(32, 32, 3\)"):
        models.create("resnet8").init(jax.random.PRNGKey(0), jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match="6n \\+ 2"):
        jax.eval_shape(lambda: models.resnet.ResNet(9, (16, 16, 32, 64)).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
