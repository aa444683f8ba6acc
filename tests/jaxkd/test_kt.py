"""Knowledge Translation (jaxkd.kt): parameter counts, the pair generator, augmentation
statistics, translator training, evaluation, resume, the CLI and bad options.

One tiny end-to-end run (configs/kd/kt.py:tiny) is shared by the tests; its compiled
functions are reused by the resume and evaluation checks. Its "fashion_mnist" is the
Fashion-MNIST-shaped fixture of tests/idx_files.py (sklearn digits upscaled to 28x28,
1437 train / 360 test images) that tests/conftest.py puts on $JAXINFRA_DATA_PATH.
"""
import functools
import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.kd import kt as kt_config
from jaxinfra import checkpoints
from jaxkd import kt
from jaxkd.kt import nets

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------- parameter counts
def _count(module, shape):
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float32))
    return nets.count_params(shapes["params"])


def test_block_parameter_counts():
    h = (1, 14, 14, 6)
    assert _count(nets.BeginBlock(), (1, 28, 28, 1)) == 66           # 54 + 12
    assert _count(nets.BasicBlock(), h) == 672                        # 2*324 + 2*12
    assert _count(nets.SimpleBlockNoBn(), h) == 324                   # 162 + 162
    assert _count(nets.LastBlock(), h) == 5986                        # 72 + 24 + 5890


def test_translator_parameter_count():
    assert nets.mixer_param_count() == 4_096_621
    # A hand count for a small configuration: map1 + L layers + head.
    L, s, c, hs, hc = 2, 72, 16, 8, 12
    layer = 2 * c + (s * hs + hs) + (hs * s + s) + 2 * c + (c * hc + hc) + (hc * c + c)
    head = 2 * c + (s * hs + hs) + (hs * (s // 2) + s // 2) + (c * 9 + 9)
    assert nets.mixer_param_count(L, s, c, hs, hc) == (9 * c + c) + L * layer + head


# ---------------------------------------------------------------- building blocks
def test_patch_conv_and_pool_match_xla():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 6), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    for shape, stride, pad in (((3, 3, 6, 3), 1, 1), ((1, 1, 6, 12), 2, 0)):
        k = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float32)
        ref = jax.lax.conv_general_dilated(x, k, (stride,) * 2, ((pad, pad),) * 2,
                                           dimension_numbers=dn)
        out = nets.patch_conv(x, k, (stride,) * 2, ((pad, pad),) * 2)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    ref = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(nets.max_pool_3x3_s2(x), ref)
    assert nets.max_pool_3x3_s2(jnp.zeros((1, 28, 28, 6))).shape == (1, 14, 14, 6)


def test_token_layout():
    ar = lambda *shape: jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    v = {"conv1": {"kernel": ar(3, 3, 6, 6)}, "conv2": {"kernel": 1000 + ar(3, 3, 6, 6)}}
    tok = nets.basic_tokens(v)
    assert tok.shape == (72, 9)
    k1, k2 = v["conv1"]["kernel"], v["conv2"]["kernel"]         # HWIO (3, 3, 6, 6)
    o, i = 4, 1
    np.testing.assert_array_equal(tok[o * 6 + i], k1[:, :, i, o].reshape(9))
    np.testing.assert_array_equal(tok[36 + o * 6 + i], k2[:, :, i, o].reshape(9))
    s = {"conv1": {"kernel": ar(3, 3, 6, 3)}, "conv2": {"kernel": 1000 + ar(3, 3, 3, 6)}}
    out = nets.kernels_to_output(*nets.simple_to_kernels(s))
    assert out.shape == (36, 9)
    np.testing.assert_array_equal(out[0], s["conv1"]["kernel"][:, :, 0, 0].reshape(9))
    back = nets.simple_from_output(out)
    for c in ("conv1", "conv2"):
        np.testing.assert_array_equal(back[c]["kernel"], s[c]["kernel"])


# ---------------------------------------------------------------- augmentation
def test_augment_statistics_and_targets():
    key = jax.random.PRNGKey(0)
    augment = jax.jit(kt.augment, static_argnums=3)
    tokens = jnp.ones((256, 72, 9), jnp.float32)
    targets = jnp.full((256, 36, 9), 2.0, jnp.float32)
    p = 0.3
    t, s = augment(key, tokens, targets, kt.AugmentConfig(mask_prob=p, mask_target="t"))
    frac = float(jnp.mean(t == 0))
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / t.size), frac
    assert bool(jnp.all((t == 0) | (t == 1)))
    np.testing.assert_array_equal(s, targets)                      # "t": target untouched
    t, s = augment(key, tokens, targets, kt.AugmentConfig(mask_prob=p, mask_target="s"))
    np.testing.assert_array_equal(t, tokens)
    assert abs(float(jnp.mean(s == 0)) - p) < 4 * np.sqrt(p * (1 - p) / s.size)
    sigma = 0.05
    t, s = augment(key, tokens, targets, kt.AugmentConfig(noise_std=sigma, noise_target="both"))
    for noisy, clean in ((t, tokens), (s, targets)):
        d = np.asarray(noisy - clean, np.float64)
        assert abs(d.std() - sigma) < 0.03 * sigma and abs(d.mean()) < 0.01 * sigma
    assert not np.allclose(t[:, :36] - tokens[:, :36], s - targets)   # independent draws
    t, s = augment(key, tokens, targets, kt.AugmentConfig())          # all off: identity
    np.testing.assert_array_equal(t, tokens)
    np.testing.assert_array_equal(s, targets)


# ---------------------------------------------------------------- end to end (tiny)
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = kt_config.get_config("tiny")
    workdir = str(tmp_path_factory.mktemp("kt_tiny"))
    result = kt.run(cfg, workdir)
    return cfg, workdir, result


def test_pair_generator_beats_chance(tiny):
    _, workdir, result = tiny
    acc = result["accuracy"]
    # 8 held-out networks, 40 + 40 SGD steps of batch 16 on the digits fixture; 10 classes
    # (chance 10 %). Measured: large 64 %, direct 62 %, random init 39 %.
    assert acc["large"]["mean"] > 45.0, acc["large"]
    assert acc["direct"]["mean"] > 45.0, acc["direct"]
    assert acc["direct"]["mean"] > acc["random_init"]["mean"] + 10.0
    assert result["final_train_loss_large"] < np.log(10)
    files = sorted(os.listdir(os.path.join(workdir, "pairs")))
    assert files == ["train_00000.npz", "val_00000.npz"]
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["accuracy"]["direct"] == acc["direct"]


def _pairs(cfg, workdir, split):
    """Loads the saved pairs (no generation: the chunk files exist)."""
    return kt.pair_set(cfg, split, None, None, workdir, progress=False)


def test_evaluation_matches_plain_forward(tiny):
    cfg, workdir, result = tiny
    val = _pairs(cfg, workdir, "val")
    _, _, test_x, test_y = kt.load_data(cfg)
    acc = kt.evaluate_blocks(val["begin"], val["last"], {"params": val["simple"]},
                             jnp.asarray(test_x), jnp.asarray(test_y),
                             batch_size=int(cfg.eval_batch_size))
    forward = jax.jit(functools.partial(nets.classifier_apply, middle="simple"))
    plain = []
    for m in range(val["simple"]["conv1"]["kernel"].shape[0]):
        net = {"begin": jax.tree.map(lambda a: a[m], val["begin"]),
               "middle": {"params": jax.tree.map(lambda a: a[m], val["simple"])},
               "last": jax.tree.map(lambda a: a[m], val["last"])}
        logits, _ = forward(net, test_x)
        plain.append(np.mean(np.argmax(np.asarray(logits), -1) == test_y))
    np.testing.assert_allclose(np.asarray(acc), plain, atol=1.5 / len(test_y))
    assert abs(100 * np.mean(plain) - result["accuracy"]["direct"]["mean"]) < 0.6


def test_translator_training_lowers_loss(tiny):
    cfg, workdir, _ = tiny
    tokens, targets = map(jnp.asarray, kt.pair_arrays(_pairs(cfg, workdir, "train")))
    model = kt.make_translator(cfg)
    t = cfg.translator
    tx = kt.make_optimizer(t.optimizer, t.lr, t.weight_decay, t.grad_clip, t.epochs,
                           tokens.shape[0] // t.batch_size, t.schedule)
    key = jax.random.PRNGKey(5)
    params = model.init(key, jnp.zeros((1, 72, 9), jnp.float32))["params"]
    state = kt.TranslatorState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                               params=params, opt_state=tx.init(params))
    loss = lambda p: float(kt.translator_loss(model, p, tokens, targets, key, False))
    before = loss(state.params)
    for _ in range(15):
        state, _ = kt.train_epoch(state, tokens, targets, key, model=model, tx=tx,
                                  batch_size=int(t.batch_size), aug=kt.AugmentConfig())
    after = loss(state.params)
    assert int(state.step) == 15 * (tokens.shape[0] // t.batch_size)
    assert after < 0.5 * before, (before, after)


def test_resume_is_exact(tiny, tmp_path):
    cfg, workdir, result = tiny
    resumed = str(tmp_path / "resumed")
    shutil.copytree(os.path.join(workdir, "pairs"), os.path.join(resumed, "pairs"))
    first = kt.run(cfg, resumed, stop_at_epoch=1)                 # "interrupted"
    assert first["epochs_done"] == 1
    second = kt.run(cfg, resumed)
    assert second["epochs_done"] == result["epochs_done"] == 2
    states = []
    for w in (workdir, resumed):
        mngr = checkpoints.manager(w, read_only=True)
        states.append(checkpoints.read(mngr, 2, state=None)["state"])
        mngr.close()
    for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
        np.testing.assert_array_equal(a, b)
    assert second["accuracy"]["translated_final"] == result["accuracy"]["translated_final"]


def test_cli_reports_a_finished_run(tiny, tmp_path):
    """``python -m jaxkd.kt`` on a copy of the finished tiny run: nothing is retrained
    (pairs and the last checkpoint exist); the baselines are re-evaluated and printed."""
    cfg, workdir, result = tiny
    copy = str(tmp_path / "cli")
    shutil.copytree(workdir, copy)
    os.remove(os.path.join(copy, "results.json"))
    out = subprocess.run([sys.executable, "-m", "jaxkd.kt", "--config=configs/kd/kt.py:tiny",
                          f"--workdir={copy}"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "direct (trained compressed)" in out.stdout and "results.json" in out.stdout
    with open(os.path.join(copy, "results.json")) as f:
        again = json.load(f)
    assert again["epochs_done"] == result["epochs_done"]
    for name in ("large", "direct", "random_init", "mean_train_block"):
        assert again["accuracy"][name] == result["accuracy"][name], name


# ---------------------------------------------------------------- bad options
def test_bad_options_name_the_valid_ones(tmp_path):
    for arg in ("gpu", "tyni", "seed=1"):
        with pytest.raises(ValueError, match="accepted: cpu, tiny"):
            kt_config.get_config(arg)
    with pytest.raises(ValueError, match="exclude each other"):
        kt_config.get_config("cpu,tiny")
    assert kt_config.get_config("cpu").pairs.num_train == 256
    assert kt_config.get_config("").pairs.num_train == 300_000
    cfg = kt_config.get_config("tiny")
    cfg.augment.mask_target = "x"
    with pytest.raises(ValueError, match=r"\['t', 's', 'both'\].*'x'"):
        kt.run(cfg, str(tmp_path / "a"))
    cfg = kt_config.get_config("tiny")
    cfg.dataset = "cifar10"
    with pytest.raises(ValueError, match="'cifar10'.*fashion_mnist"):
        kt.run(cfg, str(tmp_path / "b"))
    cfg = kt_config.get_config("tiny")
    cfg.translator.optimizer = "lamb"
    with pytest.raises(ValueError, match="'lamb'; valid: adam, sgd"):
        kt.run(cfg, str(tmp_path / "c"))
    with pytest.raises(ValueError, match="valid: \\['basic', 'simple'\\]"):
        nets.init_classifier(jax.random.PRNGKey(0), "large")
    with pytest.raises(ValueError, match="AugmentConfig|noise_target"):
        kt.augment(jax.random.PRNGKey(0), jnp.ones((1, 72, 9)), jnp.ones((1, 36, 9)),
                   kt.AugmentConfig(noise_std=0.1, noise_target="input"))
    assert not os.path.exists(tmp_path / "a" / "pairs")   # failed before any work
