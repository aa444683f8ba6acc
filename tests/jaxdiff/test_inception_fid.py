"""Inception FID / KID (jaxdiff.metrics, jaxdiff.models.inception) against pytorch-fid.

The reference outputs in fixtures/inception/reference.npz come from pytorch-fid's own
InceptionV3 (torch, float32) loaded with ``random_state_dict(seed)``
(``python -m benchmarks.inception_fixtures``); no weights are stored and no torch is
needed here. Tolerances: the features and activations are O(1) (max |f| ~ 5);
torch's own float32 result is ~1e-6 from its float64 one, so "equal to float32
rounding" is asserted as max |flax - torch| <= 1e-5 * max |torch| and, against
torch's float64 run, within 10x torch's own float32 error. The network compiles once
(batch size 2) for the features and once for the intermediate activations.
"""
import pathlib
import sys
import urllib.error

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxdiff import metrics
from jaxdiff.experiments import inception_weights
from jaxdiff.frechet import FeatureStats
from jaxdiff.models import inception

REF_PATH = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "inception" / "reference.npz"
HOOKED = ("Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e", "Mixed_7c")
REL_TOL = 1e-5          # of max |torch|, for features and activations


@pytest.fixture(scope="module")
def ref():
    with np.load(REF_PATH) as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def state_dict(ref):
    return inception.random_state_dict(int(ref["seed"]))


@pytest.fixture(scope="module")
def variables(state_dict):
    return jax.device_put(inception.variables_from_state_dict(state_dict))


@pytest.fixture(scope="module")
def features(ref, variables):
    """Flax features of the fixture images: the RGB pair, and the gray image given as one
    channel (padded to a batch of 2): one compile (batch size 2)."""
    rgb = metrics.inception_features(ref["images_32"], variables, batch_size=2)
    gray = metrics.inception_features(ref["images_64"][..., :1], variables, batch_size=2)
    return {"32": rgb, "64": gray}


def _close(actual, expected, rel=REL_TOL):
    err = float(np.max(np.abs(np.asarray(actual, np.float64) - expected)))
    assert err <= rel * float(np.max(np.abs(expected))), (err, float(np.max(np.abs(expected))))
    return err


# ----------------------------------------------------------------------- network


def test_random_state_dict_is_the_fixtures_and_loads_into_pytorch_fid(ref, state_dict):
    # The fixture script loaded this dict strictly into pytorch-fid's model: same names.
    assert sorted(state_dict) == list(ref["state_dict_keys"])
    sums = [np.abs(state_dict[k].astype(np.float64)).sum() for k in ref["state_dict_keys"]]
    np.testing.assert_allclose(sums, ref["state_dict_checksum"], rtol=1e-12)
    assert len(inception.state_dict_shapes()) == 470                    # 94 BasicConv2d x 5
    assert state_dict["Mixed_7c.branch_pool.conv.weight"].shape == (192, 2048, 1, 1)
    assert min(v.min() for k, v in state_dict.items() if k.endswith("running_var")) > 0


@pytest.mark.parametrize("case", ["up", "down", "mixed", "same"])
def test_resize_matches_torch_bilinear(ref, case):
    x, want = ref[f"resize_in_{case}"], ref[f"resize_out_{case}"]
    got = np.asarray(inception.resize_bilinear(jnp.asarray(x), want.shape[1:3]))
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)          # observed <= 4e-7


def test_resize_to_299_matches_torch_and_differs_from_antialiased_jax(ref):
    got = np.asarray(inception.resize_bilinear(jnp.asarray(ref["images_32"])))
    np.testing.assert_allclose(got[:, ::7, ::7], ref["resize299_sub"], rtol=0, atol=1e-6)
    # Shrinking: jax.image.resize antialiases by default, torch (and pytorch-fid) do not.
    x, want = ref["resize_in_down"], ref["resize_out_down"]
    smooth = np.asarray(jax.image.resize(jnp.asarray(x), want.shape, "bilinear"))
    sharp = np.asarray(jax.image.resize(jnp.asarray(x), want.shape, "bilinear",
                                        antialias=False))
    assert np.abs(smooth - want).max() > 0.1
    np.testing.assert_allclose(sharp, want, rtol=0, atol=1e-5)


def test_features_match_pytorch_fid(ref, features):
    want, exact = ref["features_32"], ref["features64_32"]
    got = features["32"]
    assert got.shape == (2, 2048) and got.dtype == np.float32
    err = _close(got, want)
    torch_err = np.abs(want.astype(np.float64) - exact).max()
    assert np.abs(got - exact).max() <= 10 * torch_err                # observed ~2.5x
    # The check can fail: the two images' features differ by far more than err.
    assert np.abs(want[0] - want[1]).max() > 1e4 * err


def test_gray_64px_image_features_match_pytorch_fid_on_rgb(ref, features):
    # (1, 64, 64, 1) is repeated to RGB, as pytorch-fid's loader (PIL convert("RGB")).
    assert features["64"].shape == (1, 2048)
    _close(features["64"], ref["features_64"])
    assert np.abs(features["64"][0] - features["32"][0]).max() > 0.1


def test_intermediate_activations_match_pytorch_fid(ref, variables):
    model = inception.FIDInceptionV3()
    apply = jax.jit(lambda v, x: model.apply(
        v, x, mutable=["intermediates"],
        capture_intermediates=lambda m, method: m.name in HOOKED and method == "__call__"))
    out, state = apply(variables, jnp.asarray(ref["images_32"]))
    _close(out, ref["features_32"])                     # the module applied directly
    shapes = {"Conv2d_4a_3x3": (71, 192), "Mixed_5d": (35, 288), "Mixed_6e": (17, 768),
              "Mixed_7c": (8, 2048)}
    for name, (s, c) in zip(HOOKED, ref["sub_strides"]):
        act = np.asarray(state["intermediates"][name]["__call__"][0])
        size, channels = shapes[name]
        assert act.shape == (2, size, size, channels), name
        _close(act.mean(axis=(1, 2)), ref[f"mean_{name}"])
        _close(act[:, ::s, ::s, ::c], ref[f"sub_{name}"])


def test_fid_stats_streamed_through_the_network(ref, variables, features):
    # A stream (generator) of uint8 batches: the fixture images are k / 255, so uint8 / 255
    # is the same input. (Accumulation over several batches: the test below.)
    uint8 = np.round(ref["images_32"] * 255).astype(np.uint8)
    stats = metrics.fid_stats((b for b in [uint8]), variables, batch_size=2)
    want = ref["features_32"].astype(np.float64)
    assert stats.n == 2 and stats.mu.shape == (2048,) and stats.sigma.shape == (2048, 2048)
    _close(stats.mu, want.mean(axis=0))
    # Same as numpy's one-shot statistics of the one-shot features (the same network).
    mine = np.cov(features["32"].astype(np.float64), rowvar=False)
    np.testing.assert_allclose(stats.sigma, mine, rtol=0, atol=1e-6 * np.abs(mine).max())
    # Against torch: a 2-sample covariance is (f0 - f1)(f0 - f1)^T / 2 with |f0 - f1| ~
    # 1% of |f|, so it amplifies the ~1e-6 feature error about 100x (observed 2e-5).
    cov = np.cov(want, rowvar=False)
    np.testing.assert_allclose(stats.sigma, cov, rtol=0, atol=1e-4 * np.abs(cov).max())


# -------------------------------------------------------------------- statistics


def test_streamed_stats_equal_one_shot_numpy():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(37, 6)) * [1, 2, 3, 4, 5, 6] + 1e3     # a large mean
    acc = metrics.FeatureAccumulator()
    for lo, hi in ((0, 5), (5, 5), (5, 18), (18, 37)):                 # one empty batch
        acc.update(feats[lo:hi])
    stats = acc.stats()
    assert stats.n == 37
    np.testing.assert_allclose(stats.mu, feats.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-10,
                               atol=1e-10)
    with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
        acc.update(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="at least 2 images, got 1"):
        one = metrics.FeatureAccumulator()
        one.update(feats[:1])
        one.stats()


def _gaussians(seed, d=5):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    return rng.normal(size=d), a @ a.T + 0.1 * np.eye(d), rng.normal(size=d), b @ b.T


def test_fid_closed_form_on_gaussians():
    mu1, c1, mu2, c2 = _gaussians(1)
    # Diagonal (commuting) covariances: Tr (C1 C2)^(1/2) = sum sqrt(a_i b_i).
    a, b = np.diag(c1), np.diag(c2)
    want = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = metrics.fid(FeatureStats(mu1, np.diag(a), 0), FeatureStats(mu2, np.diag(b), 0))
    assert got == pytest.approx(want, rel=1e-10)
    # General SPD pair: pytorch-fid's formula, scipy.linalg.sqrtm of the product.
    tr_root = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_root
    got = metrics.fid(FeatureStats(mu1, c1, 0), FeatureStats(mu2, c2, 0))
    assert got == pytest.approx(want, rel=1e-9)
    assert metrics.fid(FeatureStats(mu1, c1, 0), FeatureStats(mu1, c1, 0)) == pytest.approx(
        0.0, abs=1e-9)


def test_stats_files_round_trip(tmp_path):
    mu1, c1, _, _ = _gaussians(2)
    metrics.save_stats(tmp_path / "s.npz", FeatureStats(mu1, c1, 7))
    back = metrics.load_stats(tmp_path / "s.npz")
    assert back.n == 7 and np.array_equal(back.mu, mu1) and np.array_equal(back.sigma, c1)
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu1, sigma=c1)         # pytorch-fid's keys
    assert metrics.load_stats(tmp_path / "pytorch_fid.npz").n == 0


def _brute_mmd2(x, y):
    """Unbiased MMD^2 with k(u, v) = (u . v / d + 1)^3, one pair at a time."""
    m, d = x.shape
    k = lambda u, v: (float(np.dot(u, v)) / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2 * xy / m ** 2


def test_kid_equals_brute_force_unbiased_mmd():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(9, 4)), rng.normal(0.5, 1.0, size=(11, 4))
    got = metrics.kid(a, b, num_subsets=3, subset_size=5, seed=7)
    draws = np.random.default_rng(7)
    values = []
    for _ in range(3):
        ia = draws.choice(9, 5, replace=False)
        ib = draws.choice(11, 5, replace=False)
        values.append(_brute_mmd2(a[ia], b[ib]))
    assert got.mean == pytest.approx(np.mean(values), rel=1e-12)
    assert got.std == pytest.approx(np.std(values), rel=1e-9)
    # subset_size >= N: every subset is the whole (smaller) set, m = min(N_a, N_b).
    full = metrics.kid(a, b[:9], num_subsets=2, subset_size=1000)
    assert full.mean == pytest.approx(_brute_mmd2(a, b[:9]), rel=1e-12)
    assert full.std == pytest.approx(0.0, abs=1e-12)
    # Larger samples: same distribution ~ 0, shifted clearly > 0.
    x, y = rng.normal(size=(2, 300, 4))
    same, shifted = metrics.kid(x, y, subset_size=100), metrics.kid(x, y + 0.5, subset_size=100)
    assert abs(same.mean) < 3 * same.std < 0.5 * shifted.mean


def test_kid_errors():
    a = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"subsets of >= 2 rows: subset_size=1"):
        metrics.kid(a, a, subset_size=1)
    with pytest.raises(ValueError, match=r"\(N_a, d\) and \(N_b, d\), got \(5, 3\), \(5, 2\)"):
        metrics.kid(a, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="num_subsets must be >= 1, got 0"):
        metrics.kid(a, a, num_subsets=0)


# ----------------------------------------------------------------- weights, errors


def test_missing_weights_name_the_file_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXDIFF_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        metrics.load_inception()
    msg = str(e.value)
    assert metrics.WEIGHTS_FILE in msg and metrics.WEIGHTS_URL in msg
    assert "--convert=" in msg and str(tmp_path) in msg
    with pytest.raises(FileNotFoundError, match="no file /nonexistent/inc.npz"):
        metrics.load_inception("/nonexistent/inc.npz")
    with pytest.raises(ValueError, match=r"suffix '.bin'; accepted: \('.npz', '.pth', '.pt'\)"):
        metrics.load_inception(str(tmp_path / "weights.bin"))


def test_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
    path = tmp_path / "w.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)                 # import torch fails
    with pytest.raises(ImportError, match=r"needs torch .* --convert="):
        metrics.read_state_dict(path)


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(metrics.urllib.request, "urlopen", offline)
    with pytest.raises(OSError, match=r"could not download https://github.com/.*offline"):
        metrics.download_weights(str(tmp_path / metrics.WEIGHTS_FILE))
    with pytest.raises(SystemExit):
        inception_weights.main([])                                  # neither option
    missing = ["--convert=/nonexistent/w.pth", f"--out={tmp_path / 'w.npz'}"]
    assert inception_weights.main(missing) == 1


def test_npz_weights_load_without_torch_and_keys_are_strict(tmp_path, state_dict,
                                                            variables):
    path = tmp_path / "inc.npz"
    np.savez(path, **state_dict)
    loaded = metrics.load_inception(str(path))
    same = jax.tree.map(lambda u, v: bool(np.array_equal(u, v)), loaded, variables)
    assert all(jax.tree.leaves(same))
    kernel = loaded["params"]["Mixed_6e"]["branch7x7dbl_3"]["conv"]["kernel"]
    assert kernel.shape == (1, 7, 192, 192)                          # (kh, kw, in, out)
    np.testing.assert_array_equal(
        kernel, state_dict["Mixed_6e.branch7x7dbl_3.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(loaded["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"],
                                  state_dict["Conv2d_1a_3x3.bn.running_var"])
    missing = {k: v for k, v in state_dict.items() if k != "Mixed_5b.branch1x1.bn.bias"}
    with pytest.raises(KeyError, match=r"1 missing keys \['Mixed_5b.branch1x1.bn.bias'\]"):
        inception.variables_from_state_dict(missing)
    extra = dict(state_dict, **{"AuxLogits.fc.weight": np.zeros((1000, 768))})
    with pytest.raises(KeyError, match=r"1 unexpected keys \['AuxLogits.fc.weight'\]"):
        inception.variables_from_state_dict(extra)
    wrong = dict(state_dict, **{"Conv2d_1a_3x3.conv.weight": np.zeros((32, 1, 3, 3))})
    with pytest.raises(ValueError, match=r"Conv2d_1a_3x3.conv.weight has shape \(32, 1, 3, 3\)"
                                         r", expected \(32, 3, 3, 3\)"):
        inception.variables_from_state_dict(wrong)


def test_convert_cli_from_pth(tmp_path, state_dict):
    torch = pytest.importorskip("torch")
    pth, out = tmp_path / "w.pth", tmp_path / "w.npz"
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, pth)
    assert inception_weights.main([f"--convert={pth}", f"--out={out}"]) == 0
    back = metrics.read_state_dict(out)
    assert sorted(back) == sorted(state_dict)
    assert all(np.array_equal(back[k], state_dict[k]) for k in state_dict)
    with pytest.raises(ValueError, match="--out must end in .npz, got"):
        metrics.convert(pth, tmp_path / "w.pth2")


@pytest.mark.parametrize("images, match", [
    (np.zeros((2, 8, 8)), r"\(N, H, W, C\), got shape \(2, 8, 8\)"),
    (np.zeros((2, 3, 8, 8)), r"3 \(RGB\) or 1 \(gray\) channels last, got 8"),
    (np.zeros((2, 8, 8, 4)), r"3 \(RGB\) or 1 \(gray\) channels last, got 4"),
    (np.full((2, 8, 8, 3), -0.5), r"must lie in \[0, 1\], got \[-0.5, -0.5\]"),
    (np.full((2, 8, 8, 3), 255.0), r"must lie in \[0, 1\], got \[255, 255\]"),
    (np.full((1, 8, 8, 3), np.nan), r"must be finite, got 192 NaN/inf values"),
    (np.zeros((2, 8, 8, 3), np.int32), "float in \\[0, 1\\] or uint8, got dtype int32"),
])
def test_bad_images_are_rejected(images, match, variables):
    with pytest.raises(ValueError, match=match):
        metrics.inception_features(images, variables)


def test_other_argument_errors(variables):
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        metrics.inception_features(np.zeros((1, 8, 8, 3)), variables, batch_size=0)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\) images, got shape \(1, 8, 8, 1\)"):
        inception.FIDInceptionV3().apply(variables, jnp.zeros((1, 8, 8, 1)))
    assert metrics.inception_features(np.zeros((0, 8, 8, 3)), variables).shape == (0, 2048)
