"""Trajectory geometry (section 7): closed forms, mean-shift equivalence, KDE monotonicity,
score deviation, jit/vmap, bad input, and the analysis entry point in its tiny mode."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from configs.analyze_digits import get_config
from jaxdiff import denoisers, geometry
from jaxdiff.experiments import analyze


def _np_mean_shift(data, x, sigma):
    """Brute force: softmax over -|x - y_i|^2 / (2 sigma^2) of explicit differences."""
    data, x = data.reshape(len(data), -1), x.reshape(len(x), -1)
    logits = -np.sum((x[:, None] - data[None]) ** 2, -1) / (2 * sigma ** 2)
    w = np.exp(logits - logits.max(1, keepdims=True))
    return (w / w.sum(1, keepdims=True)) @ data


def _np_kde(data, x, sigma):
    data, x = data.reshape(len(data), -1), x.reshape(len(x), -1)
    logits = -np.sum((x[:, None] - data[None]) ** 2, -1) / (2 * sigma ** 2)
    top = logits.max(1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(1))
    return lse - np.log(len(data)) - 0.5 * data.shape[1] * np.log(2 * np.pi * sigma ** 2)


@pytest.fixture(scope="module")
def small_data():
    return np.random.default_rng(1).normal(size=(12, 3))


@pytest.fixture(scope="module")
def optimal_run(small_data):
    """Euler with the optimal denoiser of 12 points in 3-D: (trajectory, sigmas)."""
    sigmas = jaxdiff.schedules.get("polynomial", 40, 0.01, 20.0)
    x_T = 20.0 * np.random.default_rng(2).normal(size=(5, 3))
    _, traj = jaxdiff.sample(denoisers.optimal(small_data), x_T, sigmas, solver="euler",
                             return_trajectory=True)
    return traj, sigmas


# ------------------------------------------------------------------- closed forms


def test_deviation_of_a_straight_line_is_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 2, 2))           # 3 trajectories of 2x2 "images"
    t = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(size=5)]))[:, None, None, None]
    xs = a + t * (b - a)                            # (7, 3, 2, 2), uneven spacing
    np.testing.assert_allclose(geometry.deviation(xs), 0.0, atol=1e-12)
    np.testing.assert_allclose(geometry.path_length(xs), np.linalg.norm((b - a).reshape(3, -1),
                                                                         axis=1), rtol=1e-12)


def test_deviation_of_bent_paths_matches_hand_values():
    # Chord (0,0)->(3,4), u = (0.6, 0.8); |cross((4,3), (3,4))| / 5 = 7/5.
    # Chord (0,0)->(2,0); the apex (1,1) is 1 above it.
    xs = np.array([[[0.0, 0.0], [0.0, 0.0]],
                   [[4.0, 3.0], [1.0, 1.0]],
                   [[3.0, 4.0], [2.0, 0.0]]])      # (N=3, B=2, D=2)
    np.testing.assert_allclose(geometry.deviation(xs), [[0, 0], [1.4, 1.0], [0, 0]],
                               atol=1e-12)
    np.testing.assert_allclose(geometry.deviation_from_chord(np.array([4.0, 3.0]),
                                                             np.zeros(2),
                                                             np.array([3.0, 4.0])), 1.4)
    np.testing.assert_allclose(geometry.distance_to_end(xs), [[5, 2], [np.sqrt(2), np.sqrt(2)],
                                                              [0, 0]], rtol=1e-12)
    np.testing.assert_allclose(geometry.path_length(xs), [5 + np.sqrt(2), 2 * np.sqrt(2)])


def test_direction_cosine_and_magnitudes_hand_values():
    xs = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])[:, None]   # (3, 1, 2)
    r = np.array([[0.0, 0.0], [1.0, 1.0]])[:, None]                 # (2, 1, 2)
    sigmas = np.array([2.0, 1.0, 0.5])
    # d_0 = (2,0)/2 is parallel to x_0 - x_2; d_1 = (0,-1) is orthogonal to x_1 - x_2.
    np.testing.assert_allclose(geometry.direction_cosine(xs, r, sigmas), [[1.0], [0.0]],
                               atol=1e-12)
    mags = geometry.magnitudes(xs, r, sigmas)
    np.testing.assert_allclose(mags.x, [[2], [1], [0]])
    np.testing.assert_allclose(mags.denoised, [[0], [np.sqrt(2)]])
    np.testing.assert_allclose(mags.d, [[1], [1]])


def test_pca_of_a_planar_trajectory():
    rng = np.random.default_rng(3)
    e, _ = np.linalg.qr(rng.normal(size=(10, 2)))   # orthonormal plane in D = 10
    t = np.linspace(0, 1, 15)
    coeff = np.stack([3 * t, np.sin(np.pi * t)], 1)  # a bent curve inside the plane
    xs = rng.normal(size=10) + coeff @ e.T           # (15, 10)
    p = geometry.pca_projection(xs)
    assert p.basis.shape == (3, 10) and p.coords.shape == (15, 3)
    assert p.variance_ratio.shape == (10,)
    np.testing.assert_allclose(p.variance_ratio[1:], 1.0, atol=1e-12)
    assert p.variance_ratio[0] < 0.999
    np.testing.assert_allclose(p.captured, 1.0, atol=1e-12)
    np.testing.assert_allclose(p.basis[:2] @ p.basis[:2].T, np.eye(2), atol=1e-12)
    chord = xs[-1] - xs[0]
    np.testing.assert_allclose(p.basis[0], chord / np.linalg.norm(chord), atol=1e-12)
    np.testing.assert_allclose(p.coords[0], [-np.linalg.norm(chord), 0, 0], atol=1e-10)
    np.testing.assert_allclose(p.coords[-1], 0.0, atol=1e-12)
    np.testing.assert_allclose(p.coords[:, 2], 0.0, atol=1e-10)     # nothing off-plane
    np.testing.assert_allclose(p.coords @ p.basis, xs - xs[-1], atol=1e-10)
    assert np.abs(p.coords[:, 1]).max() > 0.5 and p.coords[np.argmax(np.abs(p.coords[:, 1])), 1] > 0


# ------------------------------------------------------- mean shift and the KDE


@pytest.mark.parametrize("sigma,sigma_next", [(5.0, 3.0), (1.0, 0.4), (0.3, 0.29)])
def test_optimal_euler_step_is_damped_mean_shift(sigma, sigma_next):
    rng = np.random.default_rng(4)
    data = rng.normal(size=(20, 2, 3))
    x = data[:6] + sigma * rng.normal(size=(6, 2, 3))
    m = _np_mean_shift(data, x, sigma).reshape(x.shape)
    expected = x + (1 - sigma_next / sigma) * (m - x)
    np.testing.assert_allclose(geometry.mean_shift(data, x, sigma), m, rtol=0, atol=1e-10)
    np.testing.assert_allclose(denoisers.optimal(data)(x, sigma), m, rtol=0, atol=1e-10)
    np.testing.assert_allclose(geometry.mean_shift_step(data, x, sigma, sigma_next), expected,
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(geometry.optimal_euler_step(data, x, sigma, sigma_next),
                               expected, rtol=0, atol=1e-10)


def test_mean_shift_step_per_sample_bandwidths():
    rng = np.random.default_rng(5)
    data, x = rng.normal(size=(9, 4)), rng.normal(size=(3, 4))
    s, s_next = np.array([2.0, 1.0, 0.5]), np.array([1.0, 0.9, 0.1])
    got = geometry.mean_shift_step(data, x, s, s_next)
    for b in range(3):
        one = geometry.mean_shift_step(data, x[b:b + 1], s[b], s_next[b])
        np.testing.assert_allclose(got[b:b + 1], one, rtol=1e-13)


def test_kde_log_likelihood_matches_brute_force(small_data):
    x = np.random.default_rng(6).normal(size=(4, 3))
    for sigma in (3.0, 0.5, 0.05):
        np.testing.assert_allclose(geometry.kde_log_likelihood(small_data, x, sigma),
                                   _np_kde(small_data, x, sigma), rtol=1e-10)


def test_kde_increases_along_the_optimal_euler_trajectory(small_data, optimal_run):
    traj, sigmas = optimal_run
    gain = np.asarray(geometry.kde_gain(small_data, traj.xs, sigmas))     # (N-1, B)
    assert gain.shape == (39, 5)
    assert gain.min() >= -1e-12
    assert gain.sum(0).min() > 1.0
    # the convexity bound log1p(eta (2 - eta) |m - x|^2 / (2 sigma^2))
    eta = (1 - sigmas[1:] / sigmas[:-1])[:, None]
    step2 = np.sum(np.diff(np.asarray(traj.xs), axis=0) ** 2, -1)
    bound = np.log1p((2 - eta) / eta * step2 / (2 * np.asarray(sigmas[:-1])[:, None] ** 2))
    assert np.all(gain >= bound - 1e-9)
    # same bandwidth, hand-checked against brute force for one step
    n = 10
    np.testing.assert_allclose(
        gain[n], _np_kde(small_data, np.asarray(traj.xs[n + 1]), float(sigmas[n]))
        - _np_kde(small_data, np.asarray(traj.xs[n]), float(sigmas[n])), rtol=1e-9)
    # annealed mean shift lands on training points (memorisation)
    assert geometry.nearest_neighbor_distance(small_data, traj.xs[-1]).max() < 0.05


# --------------------------------------------------------------- score deviation


def test_score_deviation_is_zero_when_model_is_optimal(small_data, optimal_run):
    traj, sigmas = optimal_run
    opt = denoisers.optimal(small_data)
    sd = geometry.score_deviation(opt, opt, traj.xs[0], sigmas, solver="euler")
    assert sd.diff_sample_traj.shape == (40, 5)
    for name in ("diff_denoised_traj", "diff_traj", "diff_opt_traj"):
        assert getattr(sd, name).shape == (39, 5)
    for v in sd[:4]:
        np.testing.assert_array_equal(v, 0.0)
    np.testing.assert_array_equal(sd.optimal.xs, traj.xs)


def test_score_deviation_of_a_different_model(denoise):
    # conftest's closed-form GMM denoiser (a plain function) on 4-D data
    data = np.random.default_rng(8).normal(size=(15, 4))
    opt = denoisers.optimal(data)
    sigmas = jaxdiff.schedules.get("polynomial", 6, 0.01, 20.0)
    x_T = 20.0 * np.random.default_rng(9).normal(size=(2, 4))
    sd = geometry.score_deviation(denoise, opt, x_T, sigmas)
    np.testing.assert_array_equal(sd.diff_sample_traj[0], 0.0)
    assert np.all(np.asarray(sd.diff_sample_traj[-1]) > 0)
    n = 3
    xm, xo, s = sd.model.xs[n], sd.optimal.xs[n], jnp.full(2, sigmas[n])
    np.testing.assert_allclose(sd.diff_traj[n], np.linalg.norm(denoise(xm, s) - opt(xm, s),
                                                               axis=-1), rtol=1e-10)
    np.testing.assert_allclose(sd.diff_opt_traj[n], np.linalg.norm(denoise(xo, s) - opt(xo, s),
                                                                   axis=-1), rtol=1e-10)
    np.testing.assert_allclose(sd.diff_denoised_traj[n],
                               np.linalg.norm(denoise(xm, s) - opt(xo, s), axis=-1), rtol=1e-10)


# -------------------------------------------------------------------- jit / vmap


def test_jit_and_vmap_agree_with_eager_loops(optimal_run):
    traj, sigmas = optimal_run
    xs = jnp.stack([traj.xs, traj.xs[::-1] * 0.5])            # 2 groups of (N, B, D)
    vm = jax.jit(jax.vmap(geometry.deviation))(xs)
    for g in range(2):
        np.testing.assert_allclose(vm[g], geometry.deviation(xs[g]), rtol=1e-12, atol=1e-12)
    f = lambda t: geometry.direction_cosine(t.xs, t.denoised, t.sigmas)
    np.testing.assert_allclose(jax.jit(f)(traj), f(traj), rtol=1e-12)
    batched = jax.jit(jax.vmap(geometry.pca_projection, in_axes=1))(traj.xs)
    for b in range(traj.xs.shape[1]):
        one = geometry.pca_projection(traj.xs[:, b])
        for got, want in zip(batched, one):
            np.testing.assert_allclose(got[b], want, rtol=1e-9, atol=1e-9)
    grad = jax.grad(lambda x: geometry.deviation(x).sum())(traj.xs)
    assert grad.shape == traj.xs.shape and np.all(np.isfinite(grad))


# ---------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_value_errors():
    xs, r, s = np.zeros((5, 2, 3)), np.zeros((4, 2, 3)), np.linspace(2, 1, 5)
    with pytest.raises(ValueError, match=r"shape \(N, B, \.\.\.\) with N >= 2"):
        geometry.deviation(np.zeros(5))
    with pytest.raises(ValueError, match=r"denoised must have shape \(N - 1, B, \.\.\.\)"):
        geometry.direction_cosine(xs, np.zeros((5, 2, 3)), s)
    with pytest.raises(ValueError, match=r"sigmas must have shape \(N,\) = \(5,\)"):
        geometry.magnitudes(xs, r, s[:4])
    with pytest.raises(ValueError, match="3 features per row; the data have 4"):
        geometry.kde_log_likelihood(np.zeros((7, 4)), np.zeros((2, 3)), 1.0)
    with pytest.raises(ValueError, match=r"sigma must be a scalar or of shape \(2,\)"):
        geometry.mean_shift_step(np.zeros((7, 3)), np.zeros((2, 3)), np.ones(3), 0.5)
    with pytest.raises(ValueError, match="num_components must be an int in"):
        geometry.pca_projection(xs[:, 0], num_components=0)
    with pytest.raises(ValueError, match=r"sigmas must have shape \(5,\)"):
        geometry.kde_gain(np.zeros((7, 3)), xs, s[:3])


# ------------------------------------------------------------------ entry point


def test_analyze_tiny_writes_figures_and_summary(tmp_path):
    summary = analyze.run(get_config("tiny"), str(tmp_path))
    for name in ("deviation.png", "distance_to_end.png", "boomerang.png",
                 "score_deviation.png", "magnitudes.png", "samples_nearest.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["runs"].keys() == summary["runs"].keys() == {
        "gmm/euler", "gmm/heun", "optimal/euler", "optimal/heun"}
    opt, gmm = summary["runs"]["optimal/euler"], summary["runs"]["gmm/euler"]
    assert opt["kde_gain_above_minus_tol_fraction"] == 1.0
    # optimal samples copy training images; the smooth GMM does not
    assert opt["final_nearest_train_distance_max"] < 0.1
    assert gmm["final_nearest_train_distance_mean"] > 10 * opt["final_nearest_train_distance_max"]
    assert 0.99 < gmm["pca_variance_ratio_top2"] <= 1.0 + 1e-6
    assert summary["score_deviation"]["diff_sample_traj_final_mean"] > 0


def test_analyze_bad_config_fails_before_work(tmp_path):
    cfg = get_config("tiny")
    cfg.solvers = ("euler", "rk45")
    with pytest.raises(ValueError, match=r"unknown solver\(s\) \['rk45'\]"):
        analyze.run(cfg, str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
