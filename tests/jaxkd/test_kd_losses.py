"""jaxkd.losses, jaxkd.connectors and jaxkd.data against hand-computed numpy values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import connectors, data, losses

Z_S = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
Z_T = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
Y = np.array([1, 2])


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_and_accuracy():
    want = -np.log(_softmax(Z_S)[np.arange(2), Y])
    np.testing.assert_allclose(losses.cross_entropy(jnp.asarray(Z_S), jnp.asarray(Y)), want,
                               rtol=1e-12)
    np.testing.assert_array_equal(losses.accuracy(jnp.asarray(Z_S), jnp.asarray(Y)), [1, 1])


def test_kd_kl_hand_value():
    t = 4.0
    ps, pt = _softmax(Z_S / t), _softmax(Z_T / t)
    want = (pt * np.log(pt / ps)).sum(-1) * t * t
    got = losses.kd_kl(jnp.asarray(Z_S), jnp.asarray(Z_T), t)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(losses.kd_loss(jnp.asarray(Z_S), jnp.asarray(Z_T), t),
                               want.mean(), rtol=1e-12)
    # Row 2's teacher is uniform: KL = T^2 (-log 3 - mean_c log p_s,c).
    np.testing.assert_allclose(want[1], t * t * (-np.log(3) - np.log(ps[1]).mean()),
                               rtol=1e-12)


def test_camkd_weights_sum_to_one_and_order():
    # Three teachers on two samples; teacher 0 is confident and right, teacher 2 wrong.
    tl = np.array([[[0.0, 5.0, 0.0], [0.0, 0.0, 6.0]],
                   [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                   [[4.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])
    w = np.asarray(losses.camkd_weights(jnp.asarray(tl), jnp.asarray(Y)))
    np.testing.assert_allclose(w.sum(0), 1.0, rtol=1e-12)
    assert np.all(w[0] > w[1]) and np.all(w[1] > w[2])
    ce = -np.log(_softmax(tl)[:, np.arange(2), Y])          # (K, B)
    want = (1 - np.exp(ce) / np.exp(ce).sum(0)) / 2
    np.testing.assert_allclose(w, want, rtol=1e-12)
    with pytest.raises(ValueError, match="K >= 2"):
        losses.camkd_weights(jnp.asarray(tl[:1]), jnp.asarray(Y))


def test_camkd_kd_and_inter_loss_hand_values():
    tl = np.stack([Z_T, Z_T[::-1] * 2])                        # (2, 2, 3)
    w = np.array([[0.3, 0.6], [0.7, 0.4]])
    kl = np.stack([(_softmax(t / 4) * np.log(_softmax(t / 4) / _softmax(Z_S / 4))).sum(-1)
                   for t in tl]) * 16
    got = losses.camkd_kd_loss(jnp.asarray(Z_S), jnp.asarray(tl), jnp.asarray(w), 4.0)
    np.testing.assert_allclose(got, (w * kl).sum() / (2 * 2), rtol=1e-12)
    got1 = losses.camkd_kd_loss(jnp.asarray(Z_S), jnp.asarray(tl), jnp.asarray(w), 4.0,
                                scale_by_k=False)
    np.testing.assert_allclose(got1, (w * kl).sum() / 2, rtol=1e-12)
    rng = np.random.default_rng(0)
    h, f = rng.normal(size=(2, 2, 3, 3, 4)), rng.normal(size=(2, 2, 3, 3, 4))
    per = ((h - f) ** 2).mean(axis=(2, 3, 4))
    np.testing.assert_allclose(losses.camkd_inter_loss(jnp.asarray(h), jnp.asarray(f),
                                                       jnp.asarray(w)),
                               (w * per).sum() / 4, rtol=1e-12)


def test_aver_and_ebkd_hand_values():
    tl = np.stack([Z_T, np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.1]])])
    kl = np.stack([(_softmax(t / 4) * np.log(_softmax(t / 4) / _softmax(Z_S / 4))).sum(-1)
                   for t in tl]) * 16
    np.testing.assert_allclose(losses.aver_kd_loss(jnp.asarray(Z_S), jnp.asarray(tl)),
                               kl.mean(), rtol=1e-12)
    p = _softmax(tl)
    ent = -(p * np.log(p)).sum(-1)
    w = 1 - ent / ent.sum(0)
    np.testing.assert_allclose(losses.ebkd_weights(jnp.asarray(tl)), w, rtol=1e-12)
    # Row 1: teacher 1 is sharper (lower entropy) than teacher 0 -> larger weight.
    assert w[1, 0] > w[0, 0]
    np.testing.assert_allclose(losses.ebkd_kd_loss(jnp.asarray(Z_S), jnp.asarray(tl)),
                               (w * kl).sum() / 4, rtol=1e-12)


def _sklearn_weights(gram, nu):
    """CA-MKD's ``find_optimal_svm`` (no --svm_norm): sklearn's dual_coef_ / (K nu)."""
    from sklearn.svm import OneClassSVM
    svm = OneClassSVM(kernel="precomputed", nu=nu, tol=1e-6).fit(gram)
    k = gram.shape[0]
    np.testing.assert_allclose(svm.dual_coef_.sum(), nu * k, rtol=1e-6)   # libsvm scaling
    w = np.zeros(k)
    w[svm.support_] = svm.dual_coef_[0] / (k * nu)
    return w


def test_one_class_svm_weights_hand_values_and_sklearn():
    solve = jax.jit(losses.one_class_svm_weights, static_argnums=2)
    # Opposite gradients cancel at (1/2, 1/2); orthogonal ones of norms 1 and 2 would take
    # (0.8, 0.2) but the cap 1 / (nu K) = 0.6 binds.
    np.testing.assert_allclose(solve(jnp.array([[1.0, -1.0], [-1.0, 1.0]]), 1 / 1.2, 200),
                               [0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(solve(jnp.array([[1.0, 0.0], [0.0, 4.0]]), 1 / 1.0, 200),
                               [0.5, 0.5], atol=1e-12)             # nu = 1: all at the cap
    np.testing.assert_allclose(solve(jnp.array([[1.0, 0.0], [0.0, 4.0]]), 1 / 1.2, 200),
                               [0.6, 0.4], atol=1e-12)
    rng = np.random.default_rng(0)
    for k, d, common in [(3, 10, 0.0), (3, 100, 1.0), (4, 3, 1.0), (5, 20, 0.0),
                         (5, 100, 1.0)]:
        v = common * rng.normal(size=(1, d)) + rng.normal(size=(k, d)) * rng.uniform(
            0.2, 1.0, size=(k, 1))
        gram = v @ v.T
        nu = 1 / (0.6 * k)
        want = _sklearn_weights(gram, nu)
        got = np.asarray(solve(jnp.asarray(gram), nu, 200))
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert abs(got.sum() - 1) < 1e-12 and got.min() >= 0 and got.max() <= 0.6 + 1e-12


def test_aekd_weights_and_loss_hand_values():
    # Three teachers on the 2-sample batch; teacher 2 nearly repeats teacher 0.
    tl = np.stack([Z_T, np.array([[0.0, 3.0, 0.0], [0.0, 0.0, 0.1]]), Z_T + 0.1 * Z_S])
    t = 4.0
    ps, pt = _softmax(Z_S / t), _softmax(tl / t)
    g = (t / 2) * (ps[None] - pt)                              # d KD_k / d z_s, (K, B, C)
    gm = g.mean(1)                                             # (K, C)
    w = _sklearn_weights(gm @ gm.T, 1 / (0.6 * 3))
    got = losses.aekd_weights(jnp.asarray(Z_S), jnp.asarray(tl), t, 0.6)
    np.testing.assert_allclose(got, w, atol=1e-4)
    # --svm_norm: unit gradients in G, then w / |g| renormalised.
    n = np.linalg.norm(gm, axis=1)
    wn = _sklearn_weights((gm / n[:, None]) @ (gm / n[:, None]).T, 1 / (0.6 * 3)) / n
    got_n = losses.aekd_weights(jnp.asarray(Z_S), jnp.asarray(tl), t, 0.6, normalize=True)
    np.testing.assert_allclose(got_n, wn / wn.sum(), atol=1e-4)
    # Loss: sum_k w_k mean_i KL_ki; its gradient treats w as a constant.
    kl = (pt * np.log(pt / ps[None])).sum(-1) * t * t          # (K, B)
    f = lambda z: losses.aekd_kd_loss(z, jnp.asarray(tl), t, 0.6)
    loss, w_used = f(jnp.asarray(Z_S))
    np.testing.assert_allclose(loss, (np.asarray(w_used) * kl.mean(1)).sum(), rtol=1e-12)
    grad = jax.grad(lambda z: f(z)[0])(jnp.asarray(Z_S))
    np.testing.assert_allclose(grad, np.einsum("k,kbc->bc", np.asarray(w_used), g),
                               rtol=1e-10, atol=1e-14)


def test_dskd_layer_weights_rules():
    layer_loss = np.array([1.0, 3.0])
    np.testing.assert_allclose(losses.dskd_layer_weights(jnp.asarray(layer_loss), "proportional"),
                               [0.25, 0.75], rtol=1e-12)
    sm = np.exp(layer_loss / 2) / np.exp(layer_loss / 2).sum()
    np.testing.assert_allclose(losses.dskd_layer_weights(jnp.asarray(layer_loss), "softmax", 2.0),
                               sm, rtol=1e-12)
    np.testing.assert_allclose(
        losses.dskd_layer_weights(jnp.asarray(layer_loss), "inverse_softmax", 2.0), 1 - sm,
        rtol=1e-12)
    np.testing.assert_allclose(losses.dskd_layer_weights(jnp.asarray(layer_loss), "uniform"),
                               [0.5, 0.5])
    with pytest.raises(ValueError, match="valid"):
        losses.dskd_layer_weights(jnp.asarray(layer_loss), "bogus")


def test_adaptive_avg_pool_matches_brute_force():
    x = np.random.default_rng(1).normal(size=(2, 7, 5, 3))
    got = np.asarray(connectors.adaptive_avg_pool(jnp.asarray(x), (3, 2)))
    for i in range(3):
        for j in range(2):
            h0, h1 = (i * 7) // 3, -(-((i + 1) * 7) // 3)
            w0, w1 = (j * 5) // 2, -(-((j + 1) * 5) // 2)
            np.testing.assert_allclose(got[:, i, j], x[:, h0:h1, w0:w1].mean((1, 2)),
                                       rtol=1e-12)
    # Upsampling by 2 (bilinear, half-pixel centres): interior pixels are 3:1 blends.
    up = np.asarray(connectors.align_spatial(jnp.asarray(x[:, :4, :4]), (8, 8)))
    np.testing.assert_allclose(up[:, 1, 1], (9 * x[:, 0, 0] + 3 * x[:, 0, 1] + 3 * x[:, 1, 0]
                                             + x[:, 1, 1]) / 16, rtol=1e-6)


def test_augment_is_a_pure_crop_and_flip():
    x = np.arange(2 * 6 * 6, dtype=np.float64).reshape(2, 6, 6, 1) + 1.0
    key = jax.random.PRNGKey(3)
    a = np.asarray(data.augment(key, jnp.asarray(x), pad=2, flip=True, fill=(-1.0,)))
    np.testing.assert_array_equal(a, data.augment(key, jnp.asarray(x), pad=2, flip=True,
                                                  fill=(-1.0,)))
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    for b in range(2):
        windows = [w for i in range(5) for j in range(5)
                   for w in (padded[b, i:i + 6, j:j + 6], padded[b, i:i + 6, j:j + 6][:, ::-1])]
        assert any(np.array_equal(a[b], w) for w in windows)
    # No augmentation at all: identity.
    np.testing.assert_array_equal(data.augment(key, jnp.asarray(x), pad=0, flip=False), x)


def test_data_loaders_and_errors():
    d = data.load("digits", "train", max_examples=50)
    assert d.images.shape == (50, 8, 8, 1) and d.num_classes == 10
    full = data.load("digits", "train")
    assert full.images.shape[0] == 1437 and data.load("digits", "test").images.shape[0] == 360
    raw = full.images * 0.3760 + 0.3053                      # back to pixel / 16
    np.testing.assert_allclose([raw.min(), raw.max()], [0.0, 1.0], atol=1e-6)
    # "fashion_mnist" is the fixture of tests/idx_files.py (uint8 IDX files, 0 and 255
    # both present): normalised with the Fashion-MNIST statistics, which invert exactly.
    f = data.load("fashion_mnist", "test", max_examples=64)
    assert f.images.shape == (64, 28, 28, 1) and f.images.dtype == np.float32
    raw = (f.images * 0.3530 + 0.2860)                       # back to pixel / 255
    np.testing.assert_allclose([raw.min(), raw.max()], [0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="valid"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="no offline source"):
        data.load("cifar100", source="offline")
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist.*JAXINFRA_DATA_PATH"):
        data.load("fashion_mnist", data_dir="/nonexistent")


def test_fashion_mnist_is_searched_on_the_data_path(monkeypatch, tmp_path):
    """Only the folders of $JAXINFRA_DATA_PATH are searched (nothing else on the machine)."""
    monkeypatch.setenv("JAXINFRA_DATA_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "fashion-mnist")):
        data.load("fashion_mnist", "test", max_examples=4)
