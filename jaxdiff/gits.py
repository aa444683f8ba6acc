"""GITS: Geometry-Inspired Time Scheduling (Chen et al., ICML 2024).

GITS picks a student schedule of ``num_steps`` timestamps from a fine grid of
``grid_size`` noise levels by dynamic programming. A teacher solver runs on the fine
grid from a few warm-up noises; the cost of jumping from grid node i to node j is the
batch-mean error of one Euler step from the teacher's point X[i] with the teacher's own
derivative d[i], compared with the teacher's point X[j]. The DP picks the path
0 = phi_0 < phi_1 < ... < phi_K = M - 1 that minimises
``sum_m coeff**m * C[phi_m, phi_{m+1}]`` (step m counted from the noise end).

    from jaxdiff import gits, schedules
    x_T = 80.0 * jax.random.normal(key, (256, 64))           # warm-up noise at sigma_max
    sigmas = gits.search(denoise_fn, x_T, num_steps=7)        # 6 steps, from a 61-point grid
    x0 = jaxdiff.sample(denoise_fn, 80.0 * z, sigmas, solver="ipndm")

Three layers, each usable alone:
  * :func:`cost_matrix`: the (M, M) cost from given teacher trajectories (jitted).
  * :func:`teacher_cost_matrix`: runs the teacher in batches and averages the cost; one
    pass serves any number of step counts and coefficients.
  * :func:`dp_schedule`: the DP and its backtracking (numpy, O(K M^2)).
:func:`search` chains them and returns the sigmas (optionally with a :class:`SearchInfo`).

Conventions follow the reference code (gits-main): sigma is time, no final step to 0,
``num_steps`` counts timestamps. The regression schedule of the reference README,
CIFAR-10 EDM with 6 steps, is indices [0, 19, 27, 33, 39, 45, 60] of the 61-point
polynomial (rho = 7) grid.
"""
from __future__ import annotations

import functools
import math
import time
import warnings
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import schedules
from jaxdiff import solvers as solvers_lib
from jaxdiff.sampling import nfe as count_nfe
from jaxdiff.sampling import sample

__all__ = ["METRICS", "SearchInfo", "cost_matrix", "teacher_cost_matrix", "dp_schedule",
           "search"]

METRICS = ("l1", "l2", "dev")


# ------------------------------------------------------------------------ cost matrix


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {list(METRICS)}")


def _chord_deviation(y, start, end):
    """Distance of y from the line through ``start`` and ``end`` (per sample).

    dev(y | a, b) = |(b - y) - <b - y, u> u|_2 with u = (b - a) / |b - a|.

    Args:
      y: (..., B, D) points.
      start, end: (B, D) chord end points a = x_T and b = x_0 of each trajectory.

    Returns:
      (..., B) distances in data units. A zero-length chord gives |b - y|.
    """
    chord = end - start
    length = jnp.linalg.norm(chord, axis=-1, keepdims=True)
    u = jnp.where(length > 0, chord / jnp.where(length > 0, length, 1), 0)
    r = end - y
    return jnp.linalg.norm(r - jnp.sum(r * u, axis=-1, keepdims=True) * u, axis=-1)


@functools.partial(jax.jit, static_argnames=("metric",))
def _cost_sum(xs, ds, grid, metric):
    """Batch *sum* of the per-sample costs, (M, M); +inf where i >= j."""
    num, batch = xs.shape[0], xs.shape[1]
    X = xs.reshape(num, batch, -1)
    d = ds.reshape(num - 1, batch, -1)
    g = jnp.asarray(grid, X.dtype)
    if metric == "dev":
        dev_teacher = _chord_deviation(X, X[0], X[-1])  # (M, B)

    def row(i):
        # One Euler jump from node i to every node j at once: (M, B, D).
        x_hat = X[i][None] + (g - g[i])[:, None, None] * d[i][None]
        if metric == "l1":
            c = jnp.sum(jnp.abs(x_hat - X), axis=-1)
        elif metric == "l2":
            c = jnp.linalg.norm(x_hat - X, axis=-1)
        else:
            c = _chord_deviation(x_hat, X[0], X[-1]) - dev_teacher
        return jnp.sum(c, axis=1)  # (M,)

    rows = jax.lax.map(row, jnp.arange(num - 1))  # (M - 1, M): node M - 1 has no d.
    rows = jnp.concatenate([rows, jnp.zeros((1, num), rows.dtype)], axis=0)
    upper = jnp.arange(num)[:, None] < jnp.arange(num)[None, :]
    return jnp.where(upper, rows, jnp.inf)


def _check_trajectories(xs, ds, grid):
    xs, ds, grid = jnp.asarray(xs), jnp.asarray(ds), jnp.asarray(grid)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(f"grid must be 1-D with >= 2 noise levels, got shape {grid.shape}")
    num = grid.shape[0]
    if xs.ndim < 3 or xs.shape[0] != num or xs.shape[1] < 1:
        raise ValueError(f"xs must have shape (M, B, ...) = ({num}, B, ...) with B >= 1, "
                         f"got {xs.shape}")
    if ds.shape != (num - 1,) + xs.shape[1:]:
        raise ValueError(f"ds must have shape (M - 1, B, ...) = {(num - 1,) + xs.shape[1:]}, "
                         f"got {ds.shape}")
    return xs, ds, grid


def cost_matrix(xs, ds, grid, metric: str = "dev"):
    """GITS cost of every jump i -> j along given teacher trajectories.

    ``C[i, j] = mean_b cost(x_hat_b, X[j]_b)`` with the Euler jump
    ``x_hat = X[i] + (grid[j] - grid[i]) * d[i]``, for every pair i < j (one ``lax.map``
    over i; memory O(M * B * D) per row). Metrics, per sample, D = flattened features:

      * ``"l1"``: |x_hat - X[j]|_1 (sum over features).
      * ``"l2"``: |x_hat - X[j]|_2.
      * ``"dev"``: dev(x_hat | X[0], X[-1]) - dev(X[j] | X[0], X[-1]), where dev(y | a, b)
        is the distance of y from the chord line through a = x_T and b = x_0 of the same
        trajectory. This is the reference code's *signed* difference, kept as written:
        positive when the jump lands farther from the chord than the teacher. Sampling
        trajectories bulge away from the chord ("boomerang") and a tangent jump
        overshoots outwards, so entries are positive except at noise level: on digits
        (GMM denoiser, iPNDM teacher) 1-3% of the entries are negative, all short jumps
        with i >= 51 of 61 and magnitude <= 0.004 against costs up to 3, so taking the
        absolute value would not change the DP. A negative entry would reward a jump
        that cuts inside the teacher's curve. The metric sees only the deviation
        orthogonal to the chord; ``"l2"`` is a true distance.

    Args:
      xs: (M, B, ...) teacher trajectories on ``grid``; xs[0] = x_T, xs[-1] = x_0.
      ds: (M - 1, B, ...) the teacher's derivatives d_i = (X[i] - D(X[i]; grid[i])) /
        grid[i] (from a :class:`jaxdiff.Trajectory`: ``(xs[:-1] - denoised) /
        sigmas[:-1, None, ...]``).
      grid: (M,) strictly decreasing noise levels of the fine grid.
      metric: one of :data:`METRICS`.

    Returns:
      (M, M) float array in ``xs.dtype`` (data units); +inf where i >= j.
    """
    _check_metric(metric)
    xs, ds, grid = _check_trajectories(xs, ds, grid)
    return _cost_sum(xs, ds, grid, metric) / xs.shape[1]


def _teacher_batches(x_T, batch_size):
    total = x_T.shape[0]
    size = total if batch_size is None else min(int(batch_size), total)
    return [x_T[s:s + size] for s in range(0, total, size)]


def _teacher_run(denoise_fn, xb, grid, teacher, teacher_options):
    """Teacher on the grid: (xs (M, b, ...), ds (M - 1, b, ...))."""
    _, traj = sample(denoise_fn, xb, grid, solver=teacher, return_trajectory=True,
                     **teacher_options)
    s = traj.sigmas[:-1].reshape((-1,) + (1,) * (xb.ndim))
    return traj.xs, (traj.xs[:-1] - traj.denoised) / s


def _check_batch_size(batch_size):
    if batch_size is not None and (isinstance(batch_size, bool)
                                   or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None or an int >= 1, got {batch_size!r}")


def _check_noise(x_T):
    x_T = jnp.asarray(x_T)
    if x_T.ndim < 1 or x_T.shape[0] < 1 or not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(f"x_T must be a floating array of shape (B, ...) with B >= 1, got "
                         f"{x_T.dtype} {x_T.shape}")
    return x_T


def teacher_cost_matrix(denoise_fn: Callable, x_T, grid, *, teacher: str = "ipndm",
                        teacher_options: Optional[dict] = None, metric: str = "dev",
                        batch_size: Optional[int] = None, _keep_last: bool = False):
    """Runs the teacher on ``grid`` in batches and averages :func:`cost_matrix`.

    The cost is the exact mean over all B trajectories (batch sums divided by B; the
    reference averages per-round means, the same thing for equal rounds).

    Args:
      denoise_fn: ``denoise_fn(x, sigma) -> D(x; sigma)`` as for :func:`jaxdiff.sample`.
      x_T: (B, ...) warm-up states already at noise level ``grid[0]`` (e.g.
        ``sigma_max * z`` with z ~ N(0, I)).
      grid: (M,) the fine teacher grid, strictly decreasing.
      teacher: teacher solver name; its derivative is taken as (X[n] - denoised[n]) /
        sigma_n from the returned trajectory (exact for every solver whose ``denoised``
        is evaluated at X[n], i.e. all but ``unipc``).
      teacher_options: teacher solver options, e.g. ``{"max_order": 4}``.
      metric: one of :data:`METRICS`.
      batch_size: trajectories per teacher run (bounds memory to
        O(M * batch_size * D)); None runs all B at once.

    Returns:
      (M, M) numpy float64 cost matrix, +inf where i >= j.
    """
    _check_metric(metric)
    _check_batch_size(batch_size)
    x_T = _check_noise(x_T)
    teacher_options = dict(teacher_options or {})
    solvers_lib.get(teacher, **teacher_options)
    grid = jnp.asarray(grid, x_T.dtype)
    total = None
    last = None
    for xb in _teacher_batches(x_T, batch_size):
        xs, ds = _teacher_run(denoise_fn, xb, grid, teacher, teacher_options)
        part = np.asarray(_cost_sum(xs, ds, grid, metric), np.float64)
        total = part if total is None else total + part
        last = (xb, xs[-1])
    cost = total / x_T.shape[0]
    return (cost, last) if _keep_last else cost


# ------------------------------------------------------------------------------- DP


def _check_dp_inputs(cost, num_steps, coeff):
    c = np.asarray(cost, np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise ValueError(f"cost must be a square (M, M) matrix with M >= 2, got shape "
                         f"{c.shape}")
    num = c.shape[0]
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
            or not 2 <= num_steps <= num:
        raise ValueError(f"num_steps (timestamps) must be an int in [2, M={num}], got "
                         f"{num_steps!r}")
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float, np.floating,
                                                         np.integer)) \
            or not (math.isfinite(coeff) and coeff > 0):
        raise ValueError(f"coeff must be a finite number > 0, got {coeff!r}")
    upper = c[np.triu_indices(num, 1)]
    if np.any(np.isnan(upper) | (upper == -np.inf)):
        raise ValueError("cost must not hold NaN or -inf above the diagonal")
    c = c.copy()
    c[np.tril_indices(num)] = np.inf
    return c


def dp_schedule(cost, num_steps: int, coeff: float = 1.15) -> np.ndarray:
    """GITS dynamic program: the grid indices of the best ``num_steps``-point schedule.

    With K = num_steps - 1 steps, M = len(cost) and c = coeff:
    ``V[i, 1] = C[i, M-1]`` and ``V[j, k] = min_{j < i < M-1} C[j, i] + c V[i, k-1]``;
    the path is backtracked from node 0, at each step taking the *first* (smallest) j
    that attains the minimum. Step m (counted from the noise end) is weighted by c^m,
    so c > 1 weighs the low-noise end more.

    Args:
      cost: (M, M) jump costs; only entries i < j are read (+inf forbids a jump).
      num_steps: timestamps of the schedule, 2 <= num_steps <= M.
      coeff: the discount-like factor c > 0 (reference default 1.15; 1.20 for SD).

    Returns:
      (num_steps,) numpy int array, strictly increasing from 0 to M - 1.

    Raises:
      ValueError: non-square cost, num_steps outside [2, M], coeff <= 0, NaN or -inf
        costs, or no finite-cost path.
    """
    c = _check_dp_inputs(cost, num_steps, coeff)
    num, steps = c.shape[0], int(num_steps) - 1
    coeff = float(coeff)
    # value[k, i]: best cost from node i to node M-1 in exactly k steps.
    value = np.full((steps + 1, num), np.inf)
    value[0, num - 1] = 0.0
    for k in range(1, steps + 1):
        value[k] = np.min(c + coeff * value[k - 1][None, :], axis=1)
    if not np.isfinite(value[steps, 0]):
        raise ValueError(f"no finite-cost schedule with {num_steps} timestamps")
    path = [0]
    for k in range(steps, 0, -1):
        # The same expression as the forward pass, so the minimum is matched exactly.
        path.append(int(np.argmin(c[path[-1]] + coeff * value[k - 1])))
    return np.asarray(path, dtype=np.int64)


# ---------------------------------------------------------------------------- search


class SearchInfo(NamedTuple):
    """Details of a :func:`search`.

    Attributes:
      indices: (num_steps,) grid indices of the schedule ((num_steps + 1,) with AFS).
      grid: (M,) the fine teacher grid.
      cost: (M, M) the averaged cost matrix (numpy float64; +inf where i >= j).
      teacher_nfe: denoiser calls per teacher trajectory (60 for ipndm on 61 points).
      model_calls: per-sample denoiser evaluations in all: teacher_nfe * B plus, with
        AFS, the student runs on the last batch.
      seconds: wall time of the search, compilation included.
      afs_index: the inserted grid index with AFS (None without AFS, or when
        indices[1] == 1 left no grid point to insert).
      afs_errors: with AFS, the student's mean final L2 error for each candidate
        k = 1 .. phi[1] - 1 (else None).
    """
    indices: np.ndarray
    grid: jnp.ndarray
    cost: np.ndarray
    teacher_nfe: int
    model_calls: int
    seconds: float
    afs_index: Optional[int] = None
    afs_errors: Optional[np.ndarray] = None


def search(denoise_fn: Callable, x_T, num_steps: int, *, grid_size: int = 61,
           base: str = "polynomial", base_kw: Optional[dict] = None,
           sigma_min: float = 0.002, sigma_max: float = 80.0, teacher: str = "ipndm",
           teacher_options: Optional[dict] = None, coeff: float = 1.15,
           metric: str = "dev", afs: bool = False, student: str = "ipndm",
           student_options: Optional[dict] = None, batch_size: Optional[int] = None,
           return_info: bool = False):
    """Searches a GITS schedule of ``num_steps`` timestamps for ``denoise_fn``.

    1. Fine grid: ``schedules.get(base, grid_size, sigma_min, sigma_max, **base_kw)``
       (defaults: polynomial, rho = 7 as in the reference; 61 points).
    2. Teacher trajectories on the grid from ``x_T``, in batches of ``batch_size``, and
       their averaged cost matrix (:func:`teacher_cost_matrix`). NFE: ``teacher_nfe``
       per trajectory (60 for iPNDM-4 on 61 points).
    3. :func:`dp_schedule` with ``coeff``; sigmas = ``grid[indices]``.
    4. With ``afs=True``: for each grid index k with 0 < k < phi[1], the student runs
       ``jaxdiff.sample(..., afs=True)`` on ``grid[[0, k, phi[1], ...]]`` from the last
       warm-up batch; the k with the lowest mean L2 distance to the teacher's final
       points is inserted. The schedule then has num_steps + 1 timestamps but, sampled
       with ``afs=True``, the same NFE for one-call solvers (heun and dpm2 pay +1).

    Args:
      denoise_fn: ``denoise_fn(x, sigma) -> D(x; sigma)`` as for :func:`jaxdiff.sample`.
      x_T: (B, ...) warm-up states, already at sigma_max (``sigma_max * z``, z ~ N(0, I));
        the reference uses B = 256 with no data. Not the noise you evaluate on.
      num_steps: student timestamps, 2 <= num_steps <= grid_size (NFE = num_steps - 1
        for one-call solvers).
      grid_size: points M of the fine teacher grid.
      base: base schedule name of the grid (``jaxdiff.schedules.SCHEDULES``).
      base_kw: its options; default ``{"rho": 7.0}`` for polynomial, else ``{}``.
      sigma_min, sigma_max: grid end points (sigma units).
      teacher: teacher solver; ``teacher_options`` its options (ipndm: max_order 4).
      coeff: DP coefficient c > 0 (reference: 1.15; 1.20 for Stable Diffusion).
      metric: one of :data:`METRICS` (reference default "dev").
      afs: the AFS variant above; ``student`` and ``student_options`` name the solver it
        scores candidates with.
      batch_size: teacher trajectories per run; None runs all B at once.
      return_info: also return a :class:`SearchInfo`.

    Returns:
      sigmas, (num_steps,) (or (num_steps + 1,) with AFS) strictly decreasing, from
      sigma_max to sigma_min, in ``x_T``'s dtype; or ``(sigmas, SearchInfo)``.

    Raises:
      ValueError: bad sizes, names, options, coeff, batch size or noise shape, before
        any teacher run.
    """
    t_start = time.perf_counter()
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) \
            or grid_size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
            or not 2 <= num_steps <= grid_size:
        raise ValueError(f"num_steps (timestamps) must be an int in [2, grid_size="
                         f"{grid_size}], got {num_steps!r}")
    _check_dp_inputs(np.zeros((2, 2)), 2, coeff)
    _check_metric(metric)
    _check_batch_size(batch_size)
    x_T = _check_noise(x_T)
    teacher_options = dict(teacher_options or {})
    student_options = dict(student_options or {})
    solvers_lib.get(teacher, **teacher_options)
    if afs:
        solvers_lib.get(student, **student_options)
    if base_kw is None:
        base_kw = {"rho": 7.0} if base == "polynomial" else {}
    grid = jnp.asarray(schedules.get(base, grid_size, sigma_min, sigma_max, **base_kw),
                       x_T.dtype)

    cost, (x_last, teacher_last) = teacher_cost_matrix(
        denoise_fn, x_T, grid, teacher=teacher, teacher_options=teacher_options,
        metric=metric, batch_size=batch_size, _keep_last=True)
    indices = dp_schedule(cost, num_steps, coeff)
    teacher_nfe = count_nfe(teacher, grid_size, **teacher_options)
    model_calls = teacher_nfe * x_T.shape[0]

    afs_index = afs_errors = None
    if afs:
        candidates = np.arange(1, indices[1])
        if candidates.size == 0:
            warnings.warn("GITS AFS: the first DP step is one grid interval, so no grid "
                          "point can be inserted; returning the schedule without AFS "
                          "(sample it with afs=False)", stacklevel=2)
        else:
            errors = []
            for k in candidates:
                trial = grid[np.concatenate([[0, k], indices[1:]])]
                out = sample(denoise_fn, x_last, trial, solver=student, afs=True,
                             **student_options)
                errors.append(float(jnp.mean(jnp.linalg.norm(
                    (out - teacher_last).reshape(out.shape[0], -1), axis=1))))
            afs_errors = np.asarray(errors)
            afs_index = int(candidates[int(np.argmin(afs_errors))])
            indices = np.concatenate([[0, afs_index], indices[1:]]).astype(np.int64)
            model_calls += candidates.size * x_last.shape[0] * count_nfe(
                student, len(indices), afs=True, **student_options)

    sigmas = jax.block_until_ready(grid[indices])
    if not return_info:
        return sigmas
    info = SearchInfo(indices=indices, grid=grid, cost=cost, teacher_nfe=teacher_nfe,
                      model_calls=int(model_calls), seconds=time.perf_counter() - t_start,
                      afs_index=afs_index, afs_errors=afs_errors)
    return sigmas, info
