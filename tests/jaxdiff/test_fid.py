"""jaxdiff.fid: Fréchet distance against closed forms, the classifier pipeline, bad input."""
import numpy as np
import pytest
import scipy.linalg

from configs import edm_digits
from jaxdiff import frechet as fid
from jaxdiff.experiments import fid as fid_experiment
from jaxinfra import datasets as data


def test_frechet_distance_of_rank_deficient_covariances():
    """Fewer samples than features (a reduced FID run): the covariances are singular, sqrtm's
    off-diagonal imaginary parts are large, the trace is still exact: it equals the sum of
    square roots of the (real, >= 0) eigenvalues of sigma1 @ sigma2."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 64)), rng.normal(size=(8, 64)) + 0.5
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sum(np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * root_trace
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), expected, rtol=1e-6)


def test_frechet_distance_equals_pytorch_fids_sqrtm_formula():
    """Full-rank pairs (where scipy.linalg.sqrtm is accurate): the eigh route gives
    pytorch-fid's value |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) to 1e-9."""
    rng = np.random.default_rng(3)
    for d in (3, 40):
        a, b = rng.normal(size=(4 * d, d)), rng.normal(size=(4 * d, d)) * 1.5 + 0.2
        mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        ref = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)
        np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), ref, rtol=1e-9)
        np.testing.assert_allclose(fid.frechet_distance(mu2, s2, mu1, s1), ref, rtol=1e-9)


@pytest.mark.parametrize("which,bad,message", [
    (1, [[1.0, 0.5], [0.0, 1.0]], "sigma1 is not symmetric; accepted: a covariance matrix"),
    (2, [[1.0, 0.5], [0.0, 1.0]], "sigma2 is not symmetric; accepted: a covariance matrix"),
    (1, [[1.0, 0.0], [0.0, -2.0]], "sigma1 has eigenvalue -2 < 0; accepted: a covariance"),
    (2, [[1.0, 0.0], [0.0, -2.0]], "sigma2 has eigenvalue < 0"),
])
def test_frechet_distance_refuses_matrices_that_are_not_covariances(which, bad, message):
    sigmas = [np.eye(2), np.eye(2)]
    sigmas[which - 1] = np.asarray(bad)
    with pytest.raises(ValueError, match=message):
        fid.frechet_distance(np.zeros(2), sigmas[0], np.zeros(2), sigmas[1])


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 2.0, size=6), rng.uniform(0.1, 2.0, size=6)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    np.testing.assert_allclose(got, closed, rtol=1e-10)
    # A shared rotation leaves the distance unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rot = fid.frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    np.testing.assert_allclose(rot, closed, rtol=1e-8)
    # One dimension: (m1 - m2)^2 + (s1 - s2)^2.
    np.testing.assert_allclose(fid.frechet_distance([1.0], [[4.0]], [0.0], [[1.0]]), 2.0)


def test_frechet_distance_identical_and_singular():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T
    mu = rng.normal(size=5)
    assert abs(fid.frechet_distance(mu, cov, mu, cov)) < 1e-8
    sing = np.diag([1.0, 0.0, 2.0])                       # rank-deficient, as ReLU features
    assert abs(fid.frechet_distance(np.zeros(3), sing, np.zeros(3), sing)) < 1e-6
    with pytest.raises(ValueError, match="shape mismatch"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_classifier_features_and_fd_of_real_images():
    images, labels = data.load("digits", max_examples=600)
    state = fid.train_classifier(images[:500], labels[:500], width=8, features=16, epochs=8,
                                 batch_size=50, lr=1e-2)
    acc = fid.accuracy(state, images[500:], labels[500:])
    assert acc > 0.5, acc                                   # chance is 0.1
    f = fid.features(state, images[:7], batch_size=4)       # padded last batch
    assert f.shape == (7, 16) and f.dtype == np.float64
    real = fid.feature_stats(state, images)
    assert real.mu.shape == (16,) and real.sigma.shape == (16, 16) and real.n == 600
    assert abs(fid.fd_of_samples(images, state, real)) < 1e-6       # FD(real, real) = 0
    noise = np.random.default_rng(0).uniform(-1, 1, images.shape).astype(np.float32)
    assert fid.fd_of_samples(noise, state, real) > 10 * fid.fd_of_samples(
        images[:300], state, fid.feature_stats(state, images[300:]))
    with pytest.raises(ValueError, match="trained on"):
        fid.fd_of_samples(np.zeros((4, 28, 28, 1), np.float32), state, real)


def test_load_splits_and_bad_input():
    cfg = edm_digits.get_config("tiny")
    (xtr, ytr), (xte, yte) = fid_experiment.load_splits(cfg)
    assert xtr.shape == (256, 8, 8, 1) and xte.shape == (359, 8, 8, 1)
    cfg.dataset = "no_such_dataset_xyz"
    with pytest.raises(ValueError, match="unknown data set"):
        fid_experiment.load_splits(cfg)
    with pytest.raises(ValueError, match="solver:NFE"):
        fid_experiment._parse_eval("heun")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        fid.train_classifier(np.zeros((4, 8, 8, 1), np.float32), np.array([0, 1, 2, 10]))
