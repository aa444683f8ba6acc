import numpy as np
import pytest

from jaxdiff import schedules

# Spec test vectors (sigma_max = 80, sigma_min = 0.002, N = 6).
VECTORS = [
    ("polynomial", {"rho": 7}, [80, 24.4083, 5.8389, 0.9654, 0.0851, 0.002]),
    ("logsnr", {}, [80, 9.609, 1.1542, 0.1386, 0.0167, 0.002]),
    ("time_uniform", {"rho": 1}, [80, 16.5062, 4.7463, 1.7541, 0.6502, 0.002]),
    ("time_uniform", {"rho": 2}, [80, 6.2923, 1.56, 0.556, 0.1503, 0.002]),
]


@pytest.mark.parametrize("name,kw,expected", VECTORS)
def test_spec_vectors(name, kw, expected):
    np.testing.assert_allclose(np.asarray(schedules.get(name, 6, **kw)), expected, atol=1e-4)


def test_gits_cifar_schedule_is_a_subgrid_of_the_61_point_polynomial():
    grid = np.asarray(schedules.get("polynomial", 61))
    idx = [0, 19, 27, 33, 39, 45, 60]
    np.testing.assert_allclose(grid[idx], [80, 10.9836, 3.8811, 1.584, 0.5666, 0.1698, 0.002],
                               atol=1e-4)


def test_deis_vp_fit():
    beta_d, beta_min = schedules.vp_beta()
    assert abs(beta_d - 17.538) < 1e-3 and abs(beta_min + 0.00477) < 1e-5
    sig = np.asarray(schedules.vp_sigma(np.array([1.0, 1e-3]), beta_d, beta_min))
    np.testing.assert_allclose(sig, [80, 0.002], rtol=1e-6)
    np.testing.assert_allclose(schedules.vp_sigma_inv(sig, beta_d, beta_min), [1.0, 1e-3],
                               rtol=1e-6)


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_endpoints_and_monotone(name):
    s = np.asarray(schedules.get(name, 11, sigma_min=0.01, sigma_max=20.0))
    assert s.shape == (11,)
    np.testing.assert_allclose([s[0], s[-1]], [20.0, 0.01], rtol=1e-6)
    assert np.all(np.diff(s) < 0)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown schedule 'karras'.*logsnr"):
        schedules.get("karras", 6)
    with pytest.raises(ValueError, match="num_steps"):
        schedules.get("polynomial", 1)
    with pytest.raises(ValueError, match="sigma_min"):
        schedules.get("polynomial", 6, sigma_min=90.0)
    for rho in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=f"rho must be a finite number > 0, got {rho}"):
            schedules.get("polynomial", 6, rho=rho)
    with pytest.raises(ValueError, match="eps must lie in"):
        schedules.get("time_uniform", 6, eps=0.0)


# ------------------------------------------------------------- Align Your Steps


@pytest.mark.parametrize("model", sorted(schedules.AYS_TABLES))
def test_align_your_steps_11_timestamps_is_the_published_table(model):
    s = np.asarray(schedules.get(f"ays_{model}", 11))
    np.testing.assert_array_equal(s, schedules.AYS_TABLES[model])
    assert s.shape == (11,) and np.all(np.diff(s) < 0)


def test_align_your_steps_published_values():
    ays = lambda model: np.asarray(schedules.align_your_steps(11, model))
    np.testing.assert_array_equal(ays("sd15")[[0, 5, 10]], [14.615, 1.396, 0.029])
    np.testing.assert_array_equal(ays("sdxl")[[1, 9]], [6.315, 0.113])
    np.testing.assert_array_equal(ays("svd")[[0, 1, 10]], [700.0, 54.5, 0.002])
    np.testing.assert_array_equal(ays("deepfloyd_if")[[0, 10]], [160.41, 0.006])


def test_align_your_steps_interpolates_log_sigma_over_the_table_index():
    table = np.asarray(schedules.AYS_TABLES["sd15"])
    # 21 timestamps: the table at even entries, geometric means of neighbours between
    s21 = np.asarray(schedules.align_your_steps(21))
    np.testing.assert_allclose(s21[::2], table, rtol=1e-14)
    np.testing.assert_allclose(s21[1], 9.727904450599832, rtol=1e-14)   # sqrt(14.615 * 6.475)
    np.testing.assert_allclose(s21[1::2], np.sqrt(table[:-1] * table[1:]), rtol=1e-14)
    # 6 timestamps: every other table entry
    np.testing.assert_allclose(schedules.align_your_steps(6), table[::2], rtol=1e-14)
    # any count: log sigma linear in the index on [0, 1], ends kept, decreasing
    for n in (2, 7, 32):
        s = np.asarray(schedules.get("ays_sdxl", n))
        grid = np.linspace(0, 1, 11)
        ref = np.exp(np.interp(np.linspace(0, 1, n), grid, np.log(schedules.AYS_TABLES["sdxl"])))
        np.testing.assert_allclose(s, ref, rtol=1e-13)
        assert s.shape == (n,) and s[0] == 14.615 and s[-1] == pytest.approx(0.029, rel=1e-14)
        assert np.all(np.diff(s) < 0)


def test_align_your_steps_bad_input():
    with pytest.raises(ValueError, match="unknown Align Your Steps model 'sd3'; valid: "
                                         r"\['deepfloyd_if', 'sd15', 'sdxl', 'svd'\]"):
        schedules.align_your_steps(10, "sd3")
    with pytest.raises(ValueError, match="num_steps must be an integer >= 2"):
        schedules.get("ays_sd15", 1)
    with pytest.raises(ValueError, match=r"ays_sd15 is a published table .* takes no "
                                         r"\['sigma_max', 'sigma_min'\]"):
        schedules.get("ays_sd15", 6, 0.01, 10.0)
    with pytest.raises(ValueError, match=r"takes no \['rho'\]"):
        schedules.get("ays_svd", 6, rho=7)
    with pytest.raises(ValueError, match="unknown schedule 'ays_sd3'.*ays_sd15"):
        schedules.get("ays_sd3", 6)
