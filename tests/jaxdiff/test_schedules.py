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
