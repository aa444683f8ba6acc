"""GITS: the DP against brute force, the cost matrix against a direct loop and exact
Euler jumps, an end-to-end search on a Gaussian mixture, and input validation."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import denoisers, gits, schedules

# ------------------------------------------------------------------------------ DP


def brute_force(cost, num_steps, coeff):
    """Lexicographically first optimal path over all index subsets, same arithmetic."""
    m = cost.shape[0]
    best, best_path = np.inf, None
    for inner in itertools.combinations(range(1, m - 1), num_steps - 2):
        path = (0,) + inner + (m - 1,)
        total = cost[path[-2], path[-1]]
        for a, b in zip(path[-3::-1], path[-2:0:-1]):
            total = cost[a, b] + coeff * total
        if total < best:
            best, best_path = total, path
    return np.asarray(best_path), best


def path_cost(cost, path, coeff):
    return sum(coeff ** m * cost[a, b] for m, (a, b) in enumerate(zip(path[:-1], path[1:])))


@pytest.mark.parametrize("m", [2, 3, 5, 7, 9])
@pytest.mark.parametrize("coeff", [0.8, 1.0, 1.15, 2.0])
def test_dp_matches_brute_force(m, coeff):
    rng = np.random.default_rng(m * 100 + int(coeff * 100))
    for trial in range(3):
        cost = rng.uniform(0, 1, size=(m, m))
        if trial == 2:
            cost -= 0.3  # signed costs, as the dev metric can produce
        for num_steps in range(2, m + 1):
            path = gits.dp_schedule(cost, num_steps, coeff)
            expected, best = brute_force(cost, num_steps, coeff)
            np.testing.assert_array_equal(path, expected)
            assert path.dtype.kind == "i" and len(path) == num_steps
            np.testing.assert_allclose(path_cost(cost, path, coeff), best, rtol=1e-12)


def test_dp_ties_take_the_first_j():
    m = 7
    flat = np.ones((m, m))
    for num_steps in range(2, m + 1):
        # Every path of K steps costs the same with coeff 1: the first j wins each time.
        expected = list(range(num_steps - 1)) + [m - 1]
        np.testing.assert_array_equal(gits.dp_schedule(flat, num_steps, 1.0), expected)
    rng = np.random.default_rng(0)
    for _ in range(20):  # integer costs: many exact ties; floats are exact here.
        cost = rng.integers(0, 3, size=(8, 8)).astype(float)
        for coeff in (1.0, 2.0):
            for num_steps in (3, 4, 5):
                expected, _ = brute_force(cost, num_steps, coeff)
                np.testing.assert_array_equal(gits.dp_schedule(cost, num_steps, coeff),
                                              expected)


def test_dp_single_cheap_path_and_forbidden_jumps():
    m, target = 12, [0, 4, 5, 9, 11]
    cost = np.full((m, m), 10.0)
    for a, b in zip(target[:-1], target[1:]):
        cost[a, b] = 0.0
    np.testing.assert_array_equal(gits.dp_schedule(cost, len(target)), target)
    cost[cost > 0] = np.inf  # only that path is finite
    np.testing.assert_array_equal(gits.dp_schedule(cost, len(target)), target)
    with pytest.raises(ValueError, match="no finite-cost"):
        gits.dp_schedule(cost, 4)
    np.testing.assert_array_equal(gits.dp_schedule(np.zeros((6, 6)), 6), np.arange(6))


def test_dp_coeff_weights_later_steps():
    # Two 2-step paths: 0-1-3 costs (1, 3), 0-2-3 costs (3, 1) (per-step errors).
    cost = np.full((4, 4), np.inf)
    cost[0, 1], cost[1, 3], cost[0, 2], cost[2, 3] = 1.0, 3.0, 3.0, 1.0
    cost[0, 3] = cost[1, 2] = 100.0
    # c > 1 weighs the last (low-noise) step more: prefer a cheap last step.
    np.testing.assert_array_equal(gits.dp_schedule(cost, 3, 1.5), [0, 2, 3])
    np.testing.assert_array_equal(gits.dp_schedule(cost, 3, 0.5), [0, 1, 3])


def test_dp_bad_inputs():
    ok = np.ones((5, 5))
    for bad, match in [(np.ones((5, 4)), "square"), (np.ones(5), "square"),
                       (np.ones((1, 1)), "M >= 2")]:
        with pytest.raises(ValueError, match=match):
            gits.dp_schedule(bad, 3)
    for n in (1, 6, 2.5, True):
        with pytest.raises(ValueError, match="num_steps"):
            gits.dp_schedule(ok, n)
    for c in (0.0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="coeff"):
            gits.dp_schedule(ok, 3, c)
    nan = ok.copy()
    nan[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gits.dp_schedule(nan, 3)
    below = ok.copy()
    below[3, 1] = np.nan  # entries i >= j are ignored
    assert len(gits.dp_schedule(below, 3)) == 3


# --------------------------------------------------------------------- cost matrix


def naive_cost(xs, ds, grid, metric):
    xs, ds, grid = np.asarray(xs), np.asarray(ds), np.asarray(grid)
    m, b = xs.shape[:2]
    X, d = xs.reshape(m, b, -1), ds.reshape(m - 1, b, -1)

    def dev(y):
        u = (X[-1] - X[0]) / np.linalg.norm(X[-1] - X[0], axis=-1, keepdims=True)
        r = X[-1] - y
        return np.linalg.norm(r - np.sum(r * u, -1, keepdims=True) * u, axis=-1)

    out = np.full((m, m), np.inf)
    for i in range(m - 1):
        for j in range(i + 1, m):
            x_hat = X[i] + (grid[j] - grid[i]) * d[i]
            per = {"l1": lambda: np.abs(x_hat - X[j]).sum(-1),
                   "l2": lambda: np.linalg.norm(x_hat - X[j], axis=-1),
                   "dev": lambda: dev(x_hat) - dev(X[j])}[metric]()
            out[i, j] = per.mean()
    return out


@pytest.mark.parametrize("metric", gits.METRICS)
def test_cost_matrix_matches_direct_loop(metric):
    rng = np.random.default_rng(1)
    grid = schedules.get("polynomial", 9)
    xs = rng.normal(size=(9, 3, 2, 2))
    ds = rng.normal(size=(8, 3, 2, 2))
    got = np.asarray(gits.cost_matrix(xs, ds, grid, metric))
    np.testing.assert_allclose(got, naive_cost(xs, ds, grid, metric), rtol=1e-10,
                               atol=1e-12)
    assert np.all(np.isinf(got[np.tril_indices(9)]))


def test_cost_matrix_zero_where_the_euler_jump_is_exact():
    # X is straight (direction b1) up to node k, then straight with direction b2.
    m, k = 10, 4
    grid = np.asarray(schedules.get("polynomial", m))
    rng = np.random.default_rng(2)
    a, b1, b2 = rng.normal(size=(3, 2, 5))  # batch of 2, 5 features
    xs = np.empty((m, 2, 5))
    ds = np.empty((m - 1, 2, 5))
    for n in range(m):
        xs[n] = a + grid[n] * b1 if n <= k else a + grid[k] * b1 + (grid[n] - grid[k]) * b2
        if n < m - 1:
            ds[n] = b1 if n < k else b2
    for metric in ("l1", "l2"):
        c = np.asarray(gits.cost_matrix(xs, ds, grid, metric))
        for i in range(m - 1):
            for j in range(i + 1, m):
                if j <= k or i >= k:
                    assert abs(c[i, j]) < 1e-12, (metric, i, j)
                else:  # the jump keeps b1 past the bend at node k
                    gap = (grid[j] - grid[k]) * (b1 - b2)
                    norm = np.abs(gap).sum(-1) if metric == "l1" else np.linalg.norm(gap,
                                                                                      axis=-1)
                    np.testing.assert_allclose(c[i, j], norm.mean(), rtol=1e-10)


def test_teacher_cost_zero_for_point_mass_with_euler_teacher():
    # Data = one point mu: D = mu, trajectories x = mu + sigma z are straight lines, so
    # every Euler jump is exact and every metric is zero.
    mu = np.array([[0.5, -1.0, 2.0]])
    den = denoisers.gaussian_mixture(mu, np.zeros(1), np.ones(1))
    x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    grid = schedules.get("polynomial", 13)
    for metric in gits.METRICS:
        c = gits.teacher_cost_matrix(den, x_T, grid, teacher="euler", metric=metric)
        upper = c[np.triu_indices(13, 1)]
        assert np.max(np.abs(upper)) < 1e-9, metric


def test_teacher_cost_batching_is_exact_mean(denoise):
    x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    grid = schedules.get("polynomial", 11)
    full = gits.teacher_cost_matrix(denoise, x_T, grid, metric="l2")
    batched = gits.teacher_cost_matrix(denoise, x_T, grid, metric="l2", batch_size=3)
    np.testing.assert_allclose(batched, full, rtol=1e-10, atol=1e-12)


# -------------------------------------------------------------------------- search


def image_like_mixture(seed=0, k=6, dim=16):
    """Narrow components with means in [-1, 1]: trajectories bend late, as for images."""
    rng = np.random.default_rng(seed)
    means = np.clip(rng.normal(0.0, 0.7, size=(k, dim)), -1, 1)
    variances = rng.uniform(0.005, 0.05, size=(k, dim))
    return means, variances, rng.dirichlet(np.ones(k) * 5)


@pytest.fixture(scope="module")
def mixture_problem():
    den = denoisers.gaussian_mixture(*image_like_mixture())
    k_warm, k_eval = jax.random.split(jax.random.PRNGKey(0))
    x_warm = 80.0 * jax.random.normal(k_warm, (32, 16))
    x_eval = 80.0 * jax.random.normal(k_eval, (64, 16))  # held out from the search
    ref = jaxdiff.sample(den, x_eval, schedules.get("polynomial", 257), solver="heun")
    return den, x_warm, x_eval, ref


def mean_l2(a, b):
    return float(jnp.mean(jnp.linalg.norm(a - b, axis=1)))


def check_schedule(sigmas, length):
    s = np.asarray(sigmas)
    assert s.shape == (length,)
    assert np.all(np.diff(s) < 0)
    np.testing.assert_allclose([s[0], s[-1]], [80.0, 0.002], rtol=1e-12)
    jaxdiff.validate_sigmas(sigmas)


def test_reference_search_beats_polynomial_on_a_mixture(mixture_problem):
    den, x_warm, x_eval, ref = mixture_problem
    num_steps = 7  # NFE 6
    sigmas, info = gits.search(den, x_warm, num_steps, metric="dev", batch_size=16,
                               return_info=True)
    check_schedule(sigmas, num_steps)
    np.testing.assert_array_equal(sigmas, info.grid[info.indices])
    assert info.indices[0] == 0 and info.indices[-1] == 60 and info.grid.shape == (61,)
    assert info.teacher_nfe == 60 and info.model_calls == 60 * 32
    assert info.seconds > 0 and info.afs_index is None
    assert info.selected == "dev" and info.candidate_errors is None
    np.testing.assert_array_equal(info.indices, gits.dp_schedule(info.cost, num_steps))
    poly = schedules.get("polynomial", num_steps)
    for solver in ("ipndm", "euler"):
        e_gits = mean_l2(jaxdiff.sample(den, x_eval, sigmas, solver=solver), ref)
        e_poly = mean_l2(jaxdiff.sample(den, x_eval, poly, solver=solver), ref)
        # Measured: ipndm 0.26x, euler 0.56x of the polynomial schedule's error.
        assert e_gits < 0.7 * e_poly, (solver, e_gits, e_poly)
    plain = gits.search(den, x_warm, num_steps, metric="dev")
    np.testing.assert_allclose(plain, sigmas)


def test_select_keeps_the_candidate_closest_to_the_teacher(mixture_problem):
    den, x_warm, _, _ = mixture_problem
    num_steps = 7
    sigmas, info = gits.search(den, x_warm, num_steps, return_info=True)
    run = gits.run_teacher(den, x_warm, info.grid, metrics=("dev", "l2"))
    for name in ("dev", "l2"):
        np.testing.assert_allclose(run.costs[name], gits.teacher_cost_matrix(
            den, x_warm, info.grid, metric=name), rtol=1e-12)
    # Brute force: each candidate's student error to the teacher on the warm-up noises.
    options = {"dev": info.grid[gits.dp_schedule(run.costs["dev"], num_steps)],
               "l2": info.grid[gits.dp_schedule(run.costs["l2"], num_steps)],
               "base": schedules.get("polynomial", num_steps)}
    per_noise = {k: np.linalg.norm(np.asarray(jaxdiff.sample(den, x_warm, s, solver="ipndm")
                                              - run.x_end).reshape(32, -1), axis=1)
                 for k, s in options.items()}
    errors = {k: float(np.mean(e)) for k, e in per_noise.items()}
    assert info.candidate_errors.keys() == errors.keys()
    for k in errors:
        np.testing.assert_allclose(info.candidate_errors[k], errors[k], rtol=1e-9)
    best = min(errors, key=errors.get)
    best_dp = min(("dev", "l2"), key=errors.get)
    d = per_noise["base"] - per_noise[best_dp]
    gain = (d.mean(), d.std(ddof=1) / np.sqrt(32))
    expected = best if best == "base" or gain[0] > 2.0 * gain[1] else "base"
    assert gain[0] > 2.0 * gain[1] > 0, gain  # here the DP schedule is clearly better
    assert info.selected == expected
    np.testing.assert_allclose(sigmas, options[expected], rtol=1e-12)
    assert info.model_calls == 60 * 32 + 3 * 32 * 6
    for significance, want in ((0.0, best), (2.0, expected), (1e9, "base")):
        chosen = gits.select_schedule(den, run, num_steps, significance=significance)
        assert chosen.selected == want, (significance, chosen.selected)
        np.testing.assert_allclose(chosen.gain, gain, rtol=1e-9)
    without_base = gits.select_schedule(den, run, num_steps, candidates=("dev", "l2"),
                                        significance=1e9)     # no base: no guard
    assert without_base.selected == best_dp and without_base.gain is None
    chosen = gits.select_schedule(den, run, num_steps, candidates=("base",))
    assert chosen.selected == "base" and chosen.indices is None and chosen.gain is None
    np.testing.assert_allclose(chosen.sigmas, options["base"], rtol=1e-12)
    with pytest.raises(ValueError, match="significance must be a finite number >= 0, got -1"):
        gits.select_schedule(den, run, num_steps, significance=-1)


def test_search_other_grid_and_metric(denoise):
    x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(3), (8, 4))
    sigmas, info = gits.search(denoise, x_T, 4, grid_size=21, base="logsnr", metric="l1",
                               teacher="euler", sigma_max=40.0, return_info=True)
    np.testing.assert_allclose(info.grid, schedules.get("logsnr", 21, 0.002, 40.0))
    assert info.teacher_nfe == 20
    assert np.asarray(sigmas).shape == (4,) and np.all(np.diff(np.asarray(sigmas)) < 0)


def test_a_search_over_a_sharded_batch_is_the_unsharded_search(denoise):
    """Warm-up noise split over 4 devices (a "data" mesh): the same costs (float64 sums in
    another order), the same schedules, and the teacher's end points stay sharded."""
    from jaxinfra import mesh as mesh_lib

    x_T = 80.0 * jax.random.normal(jax.random.PRNGKey(5), (16, 4), jnp.float64)
    x_sh = jax.device_put(x_T, mesh_lib.sharded(mesh_lib.mesh_1d("data", 4)))
    grid = schedules.get("polynomial", 13)
    plain = gits.run_teacher(denoise, x_T, grid, metrics=("dev", "l2"))
    split = gits.run_teacher(denoise, x_sh, grid, metrics=("dev", "l2"))
    for m in ("dev", "l2"):
        np.testing.assert_allclose(split.costs[m], plain.costs[m], rtol=1e-12, atol=1e-14)
        for k in (3, 5):
            np.testing.assert_array_equal(gits.dp_schedule(split.costs[m], k),
                                          gits.dp_schedule(plain.costs[m], k))
    assert len(split.x_end.sharding.device_set) == 4
    np.testing.assert_allclose(split.x_end, plain.x_end, rtol=1e-12)


def test_search_and_cost_bad_inputs(denoise):
    x_T = 80.0 * jnp.ones((4, 4))
    for kw, match in [({"metric": "l3"}, "metric"), ({"grid_size": 1}, "grid_size"),
                      ({"candidates": ("dev", "cos")}, "candidates"),
                      ({"candidates": ()}, "candidates"),
                      ({"coeff": 0.0}, "coeff"), ({"batch_size": 0}, "batch_size"),
                      ({"significance": float("nan")}, "significance"),
                      ({"teacher": "rk4"}, "unknown solver"),
                      ({"teacher_options": {"max_order": 9}}, "max_order"),
                      ({"student": "nope"}, "unknown solver"),
                      ({"base": "cosine"}, "unknown schedule")]:
        with pytest.raises(ValueError, match=match):
            gits.search(denoise, x_T, 4, **kw)
    for n in (1, 62, 3.0):
        with pytest.raises(ValueError, match="num_steps"):
            gits.search(denoise, x_T, n)
    with pytest.raises(ValueError, match="x_T"):
        gits.search(denoise, jnp.ones((4, 4), jnp.int32), 4)
    grid = schedules.get("polynomial", 5)
    with pytest.raises(ValueError, match="metric"):
        gits.cost_matrix(np.zeros((5, 2, 3)), np.zeros((4, 2, 3)), grid, "cos")
    with pytest.raises(ValueError, match="xs"):
        gits.cost_matrix(np.zeros((4, 2, 3)), np.zeros((4, 2, 3)), grid)
    with pytest.raises(ValueError, match="ds"):
        gits.cost_matrix(np.zeros((5, 2, 3)), np.zeros((5, 2, 3)), grid)
    with pytest.raises(ValueError, match="grid"):
        gits.cost_matrix(np.zeros((5, 2, 3)), np.zeros((4, 2, 3)), grid[None])


def biased_at_high_noise(den, dim, amplitude=3.0, sigma_lo=10.0, sigma_hi=80.0, seed=7):
    """``den`` plus a constant error that bumps up between sigma_lo and sigma_hi.

    A caricature of a trained network that saw little data at high noise (EDM's
    log-normal training sigma puts ~0.2% of its mass above 10): its denoising trajectory
    is not monotone there, and the signed "dev" cost of the reference turns negative.
    """
    bias = jnp.asarray(np.random.default_rng(seed).normal(size=dim))

    def denoise(x, sigma):
        s = jnp.reshape(sigma, (-1,) + (1,) * (x.ndim - 1))
        t = jnp.clip(jnp.log(s / sigma_lo) / np.log(sigma_hi / sigma_lo), 0, 1)
        return den(x, sigma) + amplitude * jnp.sin(jnp.pi * t) * bias

    return denoise


@pytest.mark.parametrize("imperfect", [False, True], ids=["exact", "imperfect"])
def test_select_never_loses_to_the_polynomial_schedule(imperfect):
    means, variances, weights = image_like_mixture()
    den = denoisers.gaussian_mixture(means, variances, weights)
    if imperfect:
        den = biased_at_high_noise(den, means.shape[1])
    k_warm, k_eval = jax.random.split(jax.random.PRNGKey(0))
    x_warm = 80.0 * jax.random.normal(k_warm, (64, 16))
    x_eval = 80.0 * jax.random.normal(k_eval, (128, 16))
    ref = jaxdiff.sample(den, x_eval, schedules.get("polynomial", 257), solver="heun")
    run = gits.run_teacher(den, x_warm, schedules.get("polynomial", 61),
                           metrics=("dev", "l2"))
    negative = np.mean(run.costs["dev"][np.triu_indices(61, 1)] < 0)
    err = lambda s: mean_l2(jaxdiff.sample(den, x_eval, s, solver="ipndm"), ref)
    dev_losses = 0
    for nfe in range(3, 11):
        e_poly = err(schedules.get("polynomial", nfe + 1))
        e_select = err(gits.select_schedule(den, run, nfe + 1).sigmas)
        e_dev = err(run.grid[gits.dp_schedule(run.costs["dev"], nfe + 1)])
        assert e_select <= e_poly, (nfe, e_select, e_poly)
        assert e_select <= 1.15 * e_dev, (nfe, e_select, e_dev)
        dev_losses += e_dev > e_poly
    if imperfect:
        # The failure "select" guards against. Measured: 12% negative entries (min -3.2);
        # dev loses to polynomial at NFE 3, 4, 7, 8, 10 (e.g. NFE 7: 3.96 vs 1.56), its
        # schedules spend a step at sigma 73 or 11; select: 0.12-0.41 at every NFE.
        assert negative > 0.08 and dev_losses >= 3, (negative, dev_losses)
    else:
        # Exact denoiser: 3% negative entries, all tiny; dev loses only at NFE 4.
        assert negative < 0.05 and dev_losses <= 1, (negative, dev_losses)
