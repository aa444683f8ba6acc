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
import pathlib
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from faults import assert_same_leaves, flip_bit, largest_file, truncate

from configs.kd import kt as kt_config
from jaxinfra import checkpoints
from jaxkd import kt
from jaxkd.kt import nets
from jaxkd.kt import pairs as pairs_lib

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


# ---------------------------------------------------------------- hidden-unit order
def _random_blocks(rng, n):
    """n random BasicBlock variables (BN with random statistics) and SimpleBlockNoBn
    params, leading axis n; block 0 has tied hidden channels (equal incoming norms)."""
    f = lambda *shape: rng.normal(size=(n,) + shape).astype(np.float32)
    basic = {"params": {"conv1": {"kernel": f(3, 3, 6, 6)}, "conv2": {"kernel": f(3, 3, 6, 6)},
                        "bn1": {"scale": f(6), "bias": f(6)}, "bn2": {"scale": f(6), "bias": f(6)}},
             "batch_stats": {"bn1": {"mean": f(6), "var": np.exp(f(6))},
                             "bn2": {"mean": f(6), "var": np.exp(f(6))}}}
    simple = {"conv1": {"kernel": f(3, 3, 6, 3)}, "conv2": {"kernel": f(3, 3, 3, 6)}}
    for k in (basic["params"]["conv1"]["kernel"], simple["conv1"]["kernel"]):
        k[0, ..., 1] = -k[0, ..., 0]          # same norm, other filter: the tie-break decides
    k = basic["params"]["conv1"]["kernel"]
    k[0, ..., 3] = k[0, ..., 2]               # same incoming filter: decided by conv2/BN
    return basic, simple


_canon_basic = jax.jit(jax.vmap(nets.canonical_basic))
_canon_simple = jax.jit(jax.vmap(nets.canonical_simple))
_perm_basic = jax.jit(jax.vmap(nets.permute_basic))
_perm_simple = jax.jit(jax.vmap(nets.permute_simple))


def test_hidden_permutation_keeps_the_function():
    rng = np.random.default_rng(0)
    basic, simple = _random_blocks(rng, 2)        # block 0: tied channels, block 1: not
    x = jnp.asarray(rng.normal(size=(2, 14, 14, 6)), jnp.float32)
    p6, p3 = jnp.asarray([[5, 3, 0, 1, 4, 2]] * 2), jnp.asarray([[2, 0, 1]] * 2)
    stack = lambda *trees: jax.tree.map(lambda *a: jnp.concatenate(a), *trees)
    vb = stack(basic, _perm_basic(basic, p6), _canon_basic(basic))
    vs = stack(simple, _perm_simple(simple, p3), _canon_simple(simple))
    out_b = jax.jit(jax.vmap(lambda v: nets.BasicBlock().apply(v, x)))(vb)   # BN: eval mode
    out_s = jax.jit(jax.vmap(lambda p: nets.SimpleBlockNoBn().apply({"params": p}, x)))(vs)
    for out in (out_b, out_s):
        out = np.asarray(out).reshape((3, 2) + out.shape[1:])     # (variant, block, ...)
        assert np.abs(out[0]).max() > 1.0
        for variant in out[1:]:
            np.testing.assert_allclose(variant, out[0], rtol=1e-5, atol=1e-5)


def test_canonical_order_is_invariant_and_idempotent():
    rng = np.random.default_rng(1)
    n = 6
    basic, simple = _random_blocks(rng, n)
    cb, cs = _canon_basic(basic), _canon_simple(simple)
    perms6 = jnp.asarray(np.stack([rng.permutation(6) for _ in range(n)]))
    perms3 = jnp.asarray(np.stack([rng.permutation(3) for _ in range(n)]))
    shuffled_b, shuffled_s = _perm_basic(basic, perms6), _perm_simple(simple, perms3)
    assert not np.array_equal(shuffled_b["params"]["conv1"]["kernel"],
                              basic["params"]["conv1"]["kernel"])
    assert_same_leaves(jax.tree.leaves(_canon_basic(shuffled_b)), jax.tree.leaves(cb))
    assert_same_leaves(jax.tree.leaves(_canon_simple(shuffled_s)), jax.tree.leaves(cs))
    assert_same_leaves(jax.tree.leaves(_canon_basic(cb)), jax.tree.leaves(cb))   # idempotent
    assert_same_leaves(jax.tree.leaves(_canon_simple(cs)), jax.tree.leaves(cs))
    for k in (cb["params"]["conv1"]["kernel"], cs["conv1"]["kernel"]):      # norm descending
        norms = np.linalg.norm(np.asarray(k).reshape(n, -1, k.shape[-1]), axis=1)
        assert np.all(np.diff(norms, axis=1) <= 1e-6), norms


# ---------------------------------------------------------------- ridge baseline
def test_ridge_matches_closed_form_and_recovers_linear_maps():
    rng = np.random.default_rng(2)
    p, d, k = 40, 7, 3
    x = rng.normal(size=(p, d))
    y = rng.normal(size=(p, k))
    xc, yc = x - x.mean(0), y - y.mean(0)
    for lam in (0.5, 10.0):                                  # brute-force closed form
        w = np.linalg.solve(xc.T @ xc + lam * np.eye(d), xc.T @ yc)
        m = kt.ridge.fit(x, y, lam)
        np.testing.assert_allclose(m.w, w, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m.b, y.mean(0) - x.mean(0) @ w, rtol=1e-9, atol=1e-12)
    sol = np.linalg.lstsq(np.c_[x, np.ones(p)], y, rcond=None)[0]     # lam = 0: OLS
    m = kt.ridge.fit(x, y, 0.0)
    np.testing.assert_allclose(m.w, sol[:d], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.b, sol[d], rtol=1e-9, atol=1e-12)
    xs = rng.normal(size=(5, 12))                     # P < D: minimum-norm least squares
    ys = rng.normal(size=(5, 2))
    xsc, ysc = xs - xs.mean(0), ys - ys.mean(0)             # (the dual form)
    ref = np.linalg.lstsq(xsc, ysc, rcond=None)[0]
    np.testing.assert_allclose(kt.ridge.fit(xs, ys, 0.0).w, ref, rtol=1e-8, atol=1e-10)
    ref = np.linalg.solve(xsc.T @ xsc + 0.5 * np.eye(12), xsc.T @ ysc)
    np.testing.assert_allclose(kt.ridge.fit(xs, ys, 0.5).w, ref, rtol=1e-8, atol=1e-10)
    # Exact linear targets, shaped like the translator's arrays: recovered at lam = 0.
    w_true, b_true = rng.normal(size=(d, 6)), rng.normal(size=6)
    xt = x.reshape(p, 1, d)
    yt = (x @ w_true + b_true).reshape(p, 2, 3)
    m = kt.ridge.fit(xt, yt, 0.0)
    np.testing.assert_allclose(m.w, w_true, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(m.b, b_true, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(kt.ridge.predict(m, xt), yt.reshape(p, 6), rtol=1e-5,
                               atol=1e-5)
    # Selection: near-linear targets pick the weakest ridge; noise picks shrinkage to the
    # mean; the refit on all rows is fit() at the chosen strength.
    m, info = kt.ridge.select(xt, yt + 1e-6 * rng.normal(size=yt.shape))
    assert info["alpha"] == min(kt.ridge.ALPHAS) and info["holdout"] == 4, info
    assert info["holdout_mse"][str(info["alpha"])] < 1e-3 * info["holdout_mse_mean"]
    m, info = kt.ridge.select(x, y)
    assert info["alpha"] >= 1.0, info
    np.testing.assert_allclose(m.w, kt.ridge.fit(x, y, info["lam"]).w, rtol=1e-12)


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
    assert files == ["settings.json", "train_00000.npz", "val_00000.npz"]
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


def _state(workdir, epoch):
    mngr = checkpoints.manager(workdir, read_only=True)
    try:
        return jax.tree.leaves(checkpoints.read(mngr, epoch, state=None)["state"])
    finally:
        mngr.close()


def _metric_steps(workdir, key):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if key in r]


def test_resume_is_exact(tiny, tmp_path):
    cfg, workdir, result = tiny
    resumed = str(tmp_path / "resumed")
    shutil.copytree(os.path.join(workdir, "pairs"), os.path.join(resumed, "pairs"))
    first = kt.run(cfg, resumed, stop_at_epoch=1)                 # "interrupted"
    assert first["epochs_done"] == 1
    second = kt.run(cfg, resumed)
    assert second["epochs_done"] == result["epochs_done"] == 2
    assert_same_leaves(_state(workdir, 2), _state(resumed, 2))
    assert second["accuracy"]["translated_final"] == result["accuracy"]["translated_final"]
    assert second["evals"] == result["evals"]          # epoch 1's evaluation is kept


def test_canonical_option_and_ridge_baseline_in_the_run(tiny, tmp_path):
    cfg, workdir, result = tiny
    assert result["canonical"] == "none"
    fit = result["accuracy"]["ridge"]["fit"]
    assert fit["holdout"] == 1 and str(fit["alpha"]) in fit["holdout_mse"], fit
    assert 0.0 <= result["accuracy"]["ridge"]["mean"] <= 100.0
    train, val = _pairs(cfg, workdir, "train"), _pairs(cfg, workdir, "val")
    (t0, s0), (t1, s1) = kt.pair_arrays(train), kt.pair_arrays(train, "norm")
    # conv1's rows (out 3 x in 6) and conv2's (out 6 x in 3) are permuted per pair, only
    # over the hidden index; the BasicBlock tokens likewise.
    rows = lambda a, o, i: np.sort(a.reshape(a.shape[0], o, i, 9), axis=1 if o < i else 2)
    np.testing.assert_array_equal(rows(s1[:, :18], 3, 6), rows(s0[:, :18], 3, 6))
    np.testing.assert_array_equal(rows(s1[:, 18:], 6, 3), rows(s0[:, 18:], 6, 3))
    np.testing.assert_array_equal(np.sort(t1[:, :36], axis=1), np.sort(t0[:, :36], axis=1))
    assert not np.array_equal(s1, s0)
    c = kt_config.get_config("tiny")
    c.canonical = "norm"
    _, _, test_x, test_y = kt.load_data(c)
    base = kt.baselines(c, train, val, jnp.asarray(test_x), jnp.asarray(test_y))
    for name in ("large", "direct", "random_init"):          # do not depend on the order
        assert base[name] == result["accuracy"][name], name
    assert set(base) == {"large", "direct", "random_init", "mean_train_block", "ridge"}
    w = str(tmp_path / "w")                          # a translator setting: resume refuses
    shutil.copytree(os.path.join(workdir, "checkpoints"), os.path.join(w, "checkpoints"))
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"other settings: canonical: 'none' -> 'norm'"):
        kt.run(c, w)
    c.canonical = "sorted"
    with pytest.raises(ValueError, match=r"config.canonical 'sorted'; valid: none, norm"):
        kt.run(c, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")


# ---------------------------------------------------------------- faults
def _copy(workdir, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(workdir, dst)
    os.remove(os.path.join(dst, "results.json"))
    return dst


def test_corrupt_checkpoint_and_pair_chunk_are_recovered(tiny, tmp_path):
    """A bit flip in the last translator checkpoint (epoch 2) and a truncated val pair
    chunk: the run falls back to epoch 1 and regenerates the chunk, with a warning each,
    and ends bitwise where the undamaged run did."""
    cfg, workdir, result = tiny
    w = _copy(workdir, tmp_path)
    flip_bit(largest_file(pathlib.Path(w, "checkpoints", "2")))
    chunk = pathlib.Path(w, "pairs", "val_00000.npz")
    truncate(chunk)
    with pytest.warns(RuntimeWarning) as record:
        again = kt.run(cfg, w)
    msgs = [str(r.message) for r in record]
    assert any(re.search(r"checkpoint step 2 in .* is corrupt \(file .*\); moved to .*"
                         r"corrupt.*; using step 1", m) for m in msgs), msgs
    assert any(re.search(r"pair chunk .*val_00000.npz is unreadable \(BadZipFile: .*\); "
                         r"moved to .*corrupt.*; generating it again", m) for m in msgs), msgs
    with np.load(chunk) as new, np.load(os.path.join(workdir, "pairs", "val_00000.npz")) as old:
        assert sorted(new.files) == sorted(old.files)
        for k in old.files:
            np.testing.assert_array_equal(new[k], old[k])
    assert_same_leaves(_state(w, 2), _state(workdir, 2))
    assert again["accuracy"] == result["accuracy"] and again["evals"] == result["evals"]
    assert _metric_steps(w, "train/loss") == [1, 2]


def test_a_process_other_than_0_regenerates_a_bad_chunk_but_moves_and_writes_nothing(
        tiny, tmp_path, monkeypatch):
    """Process 1 of 2 (simulated; its peer agrees that the chunk is bad): it trains the
    chunk's pairs with the others, leaves the damaged file to process 0 (which moves it
    aside and writes the new one) and gets the very pairs the file held."""
    from jaxinfra import distributed

    cfg, workdir, _ = tiny
    w = _copy(workdir, tmp_path)
    chunk = pathlib.Path(w, "pairs", "val_00000.npz")
    truncate(chunk)
    damaged = chunk.read_bytes()
    monkeypatch.setattr(distributed, "process_index", lambda: 1)
    monkeypatch.setattr(distributed, "all_true", lambda ok: bool(ok))
    train_x, train_y, _, _ = kt.load_data(cfg)
    got = pairs_lib.pair_set(cfg, "val", jnp.asarray(train_x), jnp.asarray(train_y), w,
                             progress=False)
    assert chunk.read_bytes() == damaged
    assert not os.path.exists(os.path.join(w, "pairs", "corrupt"))
    jax.tree.map(np.testing.assert_array_equal, got, _pairs(cfg, workdir, "val"))


def test_resume_refuses_other_settings_and_extends_on_request(tiny, tmp_path):
    cfg, workdir, result = tiny
    w = _copy(workdir, tmp_path)
    c = kt_config.get_config("tiny")
    c.translator.lr = 0.05
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"holds a translator checkpoint \(step 2\) with other settings: "
                             r"translator.lr: 0.01 -> 0.05. Use a new --workdir"):
        kt.run(c, w)
    c = kt_config.get_config("tiny")
    c.seed, c.augment.noise_std = 1, 0.01
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"other settings: augment.noise_std: 0.0 -> 0.01; seed: 0 -> 1"):
        kt.run(c, w)
    c = kt_config.get_config("tiny")
    c.translator.epochs = 3
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"another length: translator.epochs: 2 -> 3. To continue it to "
                             r"the new length add --config.extend=True"):
        kt.run(c, w)
    c.extend = True
    longer = kt.run(c, w)
    assert longer["epochs_done"] == 3
    assert [e["epoch"] for e in longer["evals"]] == [1, 2, 3]
    assert longer["evals"][:2] == result["evals"]
    assert _metric_steps(w, "train/loss") == [1, 2, 3]
    mngr = checkpoints.manager(w, read_only=True)
    state = checkpoints.read(mngr, 3, state=None)["state"]
    mngr.close()
    assert (int(state["epoch"]), int(state["step"])) == (3, 3)      # 1 step per epoch
    c.translator.epochs = 2
    with pytest.raises(ValueError, match=r"trained for 3 epochs; translator.epochs=2 would "
                                         r"shorten it; accepted: translator.epochs >= 3"):
        kt.run(c, w)


def test_saved_pairs_of_other_settings_are_refused(tiny, tmp_path):
    cfg, workdir, _ = tiny
    w = str(tmp_path / "w")
    shutil.copytree(os.path.join(workdir, "pairs"), os.path.join(w, "pairs"))
    c = kt_config.get_config("tiny")
    c.seed, c.pairs.lr = 3, 0.02
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"pairs' holds pairs generated with other settings: pairs.lr: "
                             r"0.01 -> 0.02; seed: 0 -> 3"):
        kt.run(c, w)
    assert sorted(os.listdir(os.path.join(w, "pairs"))) == [
        "settings.json", "train_00000.npz", "val_00000.npz"]


def test_nan_stops_training_and_nothing_is_saved(tiny, tmp_path, monkeypatch):
    cfg, workdir, _ = tiny
    w = str(tmp_path / "w")
    shutil.copytree(os.path.join(workdir, "pairs"), os.path.join(w, "pairs"))
    c = kt_config.get_config("tiny")
    c.translator.lr = float("nan")                   # --config.translator.lr=nan
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"translator training \(epoch 1\) stopped at step 1: "
                             r"params_norm is nan; nothing was saved"):
        kt.run(c, w)
    assert not os.path.isdir(os.path.join(w, "checkpoints")) or not [
        d for d in os.listdir(os.path.join(w, "checkpoints")) if d.isdigit()]
    # Pair generation: a chunk whose training ended in NaN is not saved.
    real = pairs_lib.generate_pairs

    def diverged(*args, **kw):
        out = real(*args, **kw)
        return dict(out, loss_large=out["loss_large"].at[3].set(jnp.nan))

    monkeypatch.setattr(pairs_lib, "generate_pairs", diverged)
    x, y, _, _ = kt.load_data(cfg)
    fresh = str(tmp_path / "fresh")
    with pytest.raises(checkpoints.NonFiniteError,
                       match=r"pair generation stopped at val chunk 0: loss_large of pair\(s\) "
                             r"\[3\] is nan; nothing was saved"):
        kt.pair_set(cfg, "val", jnp.asarray(x), jnp.asarray(y), fresh, progress=False)
    assert os.listdir(os.path.join(fresh, "pairs")) == ["settings.json"]


# ---------------------------------------------------------------- bad options
def test_bad_options_name_the_valid_ones(tmp_path):
    for arg in ("gpu", "tyni", "seed=1"):
        with pytest.raises(ValueError, match="accepted: cpu, large, tiny"):
            kt_config.get_config(arg)
    with pytest.raises(ValueError, match="exclude each other"):
        kt_config.get_config("cpu,tiny")
    assert kt_config.get_config("cpu").pairs.num_train == 256
    large = kt_config.get_config("large")
    assert (large.pairs.num_train, large.pairs.steps_large, large.canonical) == (1024, 60,
                                                                                 "norm")
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


@pytest.mark.parametrize("name,value", [
    ("translator.epochs", 0), ("translator.batch_size", 0), ("checkpoint_every", 0),
    ("checkpoint_every", -1), ("eval_every", -1), ("pairs.steps_large", 0),
    ("keep_checkpoints", 0), ("eval_batch_size", 0)])
def test_bad_values_fail_before_any_work(tmp_path, name, value):
    cfg = kt_config.get_config("tiny")
    node, *rest = name.split(".")
    if rest:
        cfg[node][rest[0]] = value
    else:
        cfg[name] = value
    minimum = 0 if name == "eval_every" else 1
    with pytest.raises(ValueError) as err:
        kt.run(cfg, str(tmp_path / "w"))
    assert str(err.value) == f"config.{name} must be an integer >= {minimum}, got {value}"
    assert not os.path.exists(tmp_path / "w")


def test_empty_data_fails_before_any_pair(tmp_path, monkeypatch):
    from jaxkd.kt import data as kt_data
    real = kt_data.load_data

    def empty_train(config):
        x, y, tx, ty = real(config)
        return x[:0], y[:0], tx, ty

    monkeypatch.setattr(kt_data, "load_data", empty_train)
    with pytest.raises(ValueError, match=r"^the training split is empty \(0 images\)"):
        kt.run(kt_config.get_config("tiny"), str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "pairs")
