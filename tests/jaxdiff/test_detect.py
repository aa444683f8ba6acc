"""Tests of jaxdiff.detect: AUC / ROC against brute force and scikit-learn, the
features on hand-made images, the logistic head's optimality, detectors beating chance
on a tiny problem (real digits vs a Gaussian mixture's low-NFE samples), bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import jaxdiff
from jaxdiff import denoisers, detect_features, schedules
from jaxdiff import detectors as detect
from jaxdiff.experiments import detect as detect_bench
from jaxinfra import datasets as data


# ----------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("n,levels,seed", [(7, 3, 0), (40, 5, 1), (301, 1000, 2)])
def test_auc_matches_brute_force_and_sklearn(n, levels, seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, n).astype(np.float64)   # many ties when levels small
    labels = rng.permutation(np.r_[np.ones(n // 2), np.zeros(n - n // 2)]).astype(int)
    a = float(detect.auc(scores, labels))
    assert a == pytest.approx(detect.auc_brute_force(scores, labels), abs=1e-12)
    assert a == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert float(jax.jit(detect.auc)(scores, labels)) == pytest.approx(a, abs=1e-12)
    fpr, tpr, thr = detect.roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(a, abs=1e-12)
    assert thr.size == np.unique(scores).size + 1


def test_auc_hand_computed():
    # scikit-learn's docstring example: pairs (0.35 > 0.1, 0.35 < 0.4, 0.8 > both) -> 3/4.
    assert float(detect.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])) == pytest.approx(0.75)
    # A tie between classes counts 1/2: pairs (2 vs 1) = 1, (2 vs 2) = 1/2 -> 0.75.
    assert float(detect.auc([1.0, 2.0, 2.0], [0, 0, 1])) == pytest.approx(0.75)
    assert float(detect.auc([0.0, 1.0], [0, 1])) == 1.0
    assert float(detect.auc([0.0, 1.0], [1, 0])) == 0.0


def test_threshold_and_accuracy():
    s = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.35])
    y = np.array([0, 0, 0, 1, 1, 1])
    thr = detect.fit_threshold(s, y)
    assert thr == pytest.approx((0.35 + 0.3) / 2)        # midway between the classes
    assert detect.accuracy(s, y, thr) == 1.0
    assert detect.accuracy(s, y, 0.75) == pytest.approx(4 / 6)  # 0.7, 0.35 missed


# ---------------------------------------------------------------------------- features
def test_radial_spectrum_and_highpass():
    yy, xx = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    cos = np.cos(2 * np.pi * 2 * xx / 8)[None, :, :, None]      # 2 cycles / 8 pixels
    spec = np.asarray(detect.radial_spectrum(cos))[0]
    assert spec.shape == (6,)                                   # floor(8 / sqrt 2) + 1
    assert int(np.argmax(spec)) == 2
    # The only non-zero FFT entries: |F| = 32 at (0, +-2) -> band 2 averages them
    # with the other members of the band at log(1e-6).
    bins = detect_features._radial_bins(8, 8)
    members = int(np.sum(bins[2] > 0))
    expected = (2 * np.log(32.0 ** 2 + 1e-6) + (members - 2) * np.log(1e-6)) / members
    assert spec[2] == pytest.approx(expected, rel=1e-6)
    ramp = (0.1 * xx + 0.05 * yy)[None, :, :, None].astype(np.float64)
    res = np.asarray(detect.highpass_residual(ramp))[0, 1:-1, 1:-1]
    np.testing.assert_allclose(res, 0.0, atol=1e-12)          # linear -> no residual
    assert detect.frequency_features(cos).shape == (1, 5 + 5 + 1)


def test_quantize():
    x = jnp.array([-1.3, -0.06, 0.07, 0.9, 2.0])
    np.testing.assert_allclose(detect.quantize(x, 17), [-1.0, 0.0, 0.125, 0.875, 1.0])
    np.testing.assert_allclose(detect.quantize(x, 0), [-1.0, -0.06, 0.07, 0.9, 1.0])


def test_logistic_fit_is_the_regularised_optimum():
    rng = np.random.default_rng(0)
    xr, xf = rng.normal(size=(30, 3)), rng.normal(size=(50, 3)) + 0.7
    st = detect.logistic_fit(xr, xf, l2=0.1)

    def objective(theta):
        w, b = theta[:-1], theta[-1]
        z = lambda x: ((x - st.mean) / st.scale) @ w + b
        ce = 0.5 * jnp.mean(jax.nn.softplus(z(xr))) + 0.5 * jnp.mean(jax.nn.softplus(-z(xf)))
        return ce + 0.05 * jnp.sum(w ** 2)

    grad = jax.grad(objective)(jnp.append(st.w, st.b))
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)
    x = np.concatenate([xr, xf])
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12)


# ------------------------------------------------- the tiny problem: detectors vs chance
@pytest.fixture(scope="module")
def tiny_problem():
    """Real digits vs samples of a 20-component isotropic mixture on digits (Euler,
    3 steps = 2 NFE), quantized to 17 levels; 96 train / 96 test per class."""
    images, _ = data.load_digits()
    perm = np.random.default_rng(0).permutation(images.shape[0])
    means = images[perm[:20]].reshape(20, -1)
    gmm = denoisers.gaussian_mixture(means, np.full(20, 0.05), np.ones(20))
    sig = schedules.get("polynomial", 3)

    def fake(seed, n):
        z = sig[0] * jax.random.normal(jax.random.PRNGKey(seed), (n, 8, 8, 1))
        return detect.quantize(jaxdiff.sample(gmm, z, sig, solver="euler"))

    real = jnp.asarray(images[perm[20:212]])
    return gmm, (real[:96], fake(1, 96)), (real[96:], fake(2, 96))


def _train_and_test(det, tiny_problem):
    _, (real, fake), (real_t, fake_t) = tiny_problem
    state = det.fit(real, fake, jax.random.PRNGKey(0))
    thr = detect.fit_threshold(*detect.scores_and_labels(det, state, real, fake))
    return detect.evaluate(det, state, real_t, fake_t, threshold=thr)


def test_frequency_detector_beats_chance(tiny_problem):
    r = _train_and_test(detect.frequency_detector(), tiny_problem)
    assert r["auc"] > 0.9 and r["accuracy"] > 0.8


def test_dire_detector_beats_chance(tiny_problem):
    gmm = tiny_problem[0]
    det = detect.dire_detector(gmm, schedules.get("polynomial", 4), solver="euler")
    r = _train_and_test(det, tiny_problem)
    assert r["auc"] > 0.8 and r["accuracy"] > 0.7


def test_cnn_detector_beats_chance(tiny_problem):
    det = detect.cnn_detector(width=4, steps=40, batch_size=32)
    r = _train_and_test(det, tiny_problem)
    assert r["auc"] > 0.75 and r["accuracy"] > 0.6


# --------------------------------------------------------------------------- bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match="0 \\(real\\) or 1"):
        detect.auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="both classes"):
        detect.auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="equal length"):
        detect.auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        detect.auc([np.nan, 0.2], [0, 1])
    det = detect.frequency_detector()
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*\(4, 8, 8\)"):
        det.fit(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="differ in shape"):
        det.fit(np.zeros((4, 8, 8, 1)), np.zeros((4, 4, 4, 1)), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unknown head 'svm'"):
        detect.make_detector("x", lambda x: x, "svm")
    with pytest.raises(ValueError, match="unknown cnn head option"):
        detect.make_detector("x", lambda x: x, "cnn", depth=3)
    with pytest.raises(ValueError, match="unknown solver 'rk45'"):
        detect.dire_detector(lambda x, s: x, schedules.get("polynomial", 4), solver="rk45")
    with pytest.raises(ValueError, match="strictly decreasing"):
        detect.dire_detector(lambda x, s: x, jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="levels"):
        detect.quantize(jnp.zeros(3), 1)


def test_benchmark_config_errors():
    from configs import detect_digits
    with pytest.raises(ValueError, match="unknown config option.*huge"):
        detect_digits.get_config("huge")
    with pytest.raises(ValueError, match="model 'a' or 'b'"):
        detect_bench.parse_generator("c:heun:34")
    with pytest.raises(ValueError, match="unknown solver 'rk4'"):
        detect_bench.parse_generator("a:rk4:5")
    cfg = detect_digits.get_config("tiny")
    cfg.detectors = ("dire", "svm")
    with pytest.raises(ValueError, match="unknown detector.*svm"):
        detect_bench._check_config(cfg)
    cfg = detect_digits.get_config("tiny")
    cfg.train_generators = ("a:heun:9",)
    with pytest.raises(ValueError, match="must be among the \\(test\\) generators"):
        detect_bench._check_config(cfg)
    second = detect_digits.get_config("second_model")
    assert (second.seed, second.model.base_channels) == (1, 24)
    assert second.num_steps == detect_digits.edm_digits.get_config().num_steps
