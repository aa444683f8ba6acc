"""jaxdiff.noisy_classifier: normalisation, training, exact resume, guidance on digits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import denoisers, guidance
from jaxdiff.models import noisy_classifier as nc
from jaxdiff.training import noisy_classifier as nc_train
from jaxinfra import datasets as data

TINY = {"num_classes": 2, "width": 4, "features": 8, "emb_channels": 8, "num_steps": 60,
        "batch_size": 32, "lr": 1e-2, "sigma_min": 0.01, "sigma_max": 80.0,
        "log_every": 30, "checkpoint_every": 60, "progress": False}


@pytest.fixture(scope="module")
def zeros_and_ones():
    """Digits 0 and 1: (N, 8, 8, 1) float32 in [-1, 1], labels 0/1; first 250 train."""
    x, y = data.load_digits()
    keep = y < 2
    return x[keep], y[keep]


@pytest.fixture(scope="module")
def trained(zeros_and_ones, tmp_path_factory):
    x, y = zeros_and_ones
    workdir = str(tmp_path_factory.mktemp("nc"))
    state, info = nc_train.train(x[:250], y[:250], TINY, workdir)
    return state, info, workdir


def test_log_prob_fn_is_normalised_and_batch_consistent(trained, zeros_and_ones):
    state, _, _ = trained
    x = jnp.asarray(zeros_and_ones[0][:5])
    fn = nc.log_prob_fn(state)
    lp = fn(x, jnp.full((5,), 0.7))
    assert lp.shape == (5, 2)
    np.testing.assert_allclose(jax.scipy.special.logsumexp(lp, axis=1), 0.0, atol=1e-6)
    np.testing.assert_array_equal(fn(x, 0.7), lp)                 # scalar sigma broadcast
    # Per-sample: one row alone gives the same answer as in the batch.
    np.testing.assert_allclose(fn(x[2:3], jnp.full((1,), 0.7)), lp[2:3], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 8, 8, 1\)"):
        fn(jnp.zeros((2, 8, 8, 3)), jnp.ones((2,)))


def test_training_learns_the_classes_and_noise_erases_them(trained, zeros_and_ones):
    state, info, _ = trained
    x, y = zeros_and_ones
    acc = nc.accuracy_vs_sigma(state, x[250:], y[250:], [0.05, 0.5, 80.0],
                               key=jax.random.PRNGKey(0))
    # measured (60 steps, 250 images; 110 held-out images): 0.96, 0.95, 0.52
    assert acc[0] > 0.9 and acc[1] > 0.85, acc
    assert abs(acc[2] - 0.5) < 0.2, acc                            # chance at sigma_max
    assert info["steps_trained"] == 60


def test_checkpoint_reload_and_exact_resume(trained, zeros_and_ones, tmp_path):
    state, _, workdir = trained
    x, y = zeros_and_ones
    # A finished run is loaded, not retrained.
    again, info = nc_train.train(x[:250], y[:250], TINY, workdir)
    assert info["steps_trained"] == 0
    jax.tree.map(np.testing.assert_array_equal, again.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, nc_train.load(workdir).params, state.params)
    # Interrupted at step 30 and resumed: bitwise the same parameters.
    resumed_dir = str(tmp_path / "resumed")
    _, part = nc_train.train(x[:250], y[:250], TINY, resumed_dir, stop_at_step=30)
    assert part["step"] == 30
    resumed, info = nc_train.train(x[:250], y[:250], TINY, resumed_dir)
    assert info["steps_trained"] == 30
    jax.tree.map(np.testing.assert_array_equal, resumed.params, state.params)
    # Other settings in the same folder: an error, not a silent retrain.
    with pytest.raises(ValueError, match="other settings"):
        nc_train.train(x[:250], y[:250], dict(TINY, lr=3e-3), workdir)


def test_data_parallel_training_over_4_devices_matches_one_device(trained, zeros_and_ones,
                                                                   tmp_path):
    """The batch split over a 4-device mesh (each device a quarter of the rows): the same
    parameters as one device up to float32 rounding of the gradient sums."""
    from jaxinfra import mesh as mesh_lib

    state, _, _ = trained
    x, y = zeros_and_ones
    mesh = mesh_lib.mesh_1d("data", 4)
    split, info = nc_train.train(x[:250], y[:250], TINY, str(tmp_path / "dp"), mesh=mesh)
    assert info["step"] == 60
    worst = max(float(np.max(np.abs(a - b))) for a, b in
                zip(jax.tree.leaves(split.params), jax.tree.leaves(state.params)))
    # measured: 6.3e-7 after 60 Adam steps at lr 1e-2 on parameters of size <= 2
    assert worst <= 5e-6, worst
    with pytest.raises(ValueError, match="batch_size=30 does not split over the 4 devices"):
        nc_train.train(x[:8], y[:8], dict(TINY, batch_size=30), mesh=mesh)


def test_classifier_guidance_pulls_samples_to_the_class(trained, zeros_and_ones):
    """Exact denoiser of 40 digits (20 zeros, 20 ones) + the trained noise-aware classifier.
    Scale 0 is the unguided sampler; guidance towards "1" moves the samples to ones."""
    state, _, _ = trained
    x, y = zeros_and_ones
    train_x = np.concatenate([x[y == 0][:20], x[y == 1][:20]])
    den = denoisers.optimal(train_x)
    b = 16
    sigmas = jaxdiff.schedules.polynomial(8, sigma_max=80.0)
    x_T = sigmas[0] * jax.random.normal(jax.random.PRNGKey(3), (b, 8, 8, 1), jnp.float32)
    target = jnp.ones((b,), jnp.int32)
    plain = jaxdiff.sample(den, x_T, sigmas, solver="heun")

    def frac_ones(out):   # nearest training image is a one
        d = ((np.asarray(out).reshape(b, 1, -1) - train_x.reshape(1, 40, -1)) ** 2).sum(-1)
        return float(np.mean(np.argmin(d, axis=1) >= 20))

    fn0 = guidance.classifier(den, nc.log_prob_fn(state), target, 0.0)
    np.testing.assert_allclose(jaxdiff.sample(fn0, x_T, sigmas, solver="heun"), plain,
                               rtol=0, atol=1e-5)
    to_one, to_zero = (
        jaxdiff.sample(guidance.classifier(den, nc.log_prob_fn(state), lab, 16.0), x_T,
                       sigmas, solver="heun") for lab in (target, 0 * target))
    # measured fraction of ones: unguided 0.44, guided to "1": 1.0, guided to "0": 0.25
    assert frac_ones(to_one) >= 0.9, frac_ones(to_one)
    assert frac_ones(to_zero) <= frac_ones(plain) - 0.1 and frac_ones(to_zero) <= 0.35, (
        frac_ones(plain), frac_ones(to_zero))


def test_bad_settings_and_data_are_clear_errors(zeros_and_ones):
    x, y = zeros_and_ones
    with pytest.raises(ValueError, match="unknown sigma_dist 'uniform'"):
        nc_train.train(x[:8], y[:8], {"sigma_dist": "uniform"})
    with pytest.raises(ValueError, match="unknown noisy-classifier setting 'depth'"):
        nc_train.train(x[:8], y[:8], {"depth": 3})
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        nc_train.train(x[:8], y[:8] + 1, {"num_classes": 2})
    with pytest.raises(ValueError, match="labels must be an int array of shape"):
        nc_train.train(x[:8], y[:7], {})
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        nc_train.train(x[:8], y[:8], {"sigma_min": 1.0, "sigma_max": 0.5})


def test_the_entry_point_trains_the_classifier_that_guide_then_loads(tmp_path):
    """``python -m jaxdiff.noisy_classifier`` (here its run function) trains into
    workdir/noisy_classifier over all 4 devices; jaxdiff.guide's call with the same config
    and workdir then finds it finished and trains nothing."""
    from configs import guide_digits
    from jaxdiff.experiments import fid
    from jaxdiff.experiments import noisy_classifier as job

    config = guide_digits.get_config("tiny")
    config.noisy_classifier.update({"num_steps": 4, "log_every": 2, "checkpoint_every": 4})
    result = job.run(config, str(tmp_path))
    assert (result["step"], result["devices"], result["steps_trained_now"]) == (4, 4, 4)
    assert sorted(result["test_accuracy_vs_sigma"]) == ["0.1", "10.0"]
    (x, y), _ = fid.load_splits(config.unet)
    _, info = nc_train.train(x, y, job.classifier_settings(config),    # as jaxdiff.guide
                             str(tmp_path / job.SUBDIR))
    assert info["steps_trained"] == 0
