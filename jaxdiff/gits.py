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

Layers, each usable alone:
  * :func:`cost_matrix`: the (M, M) cost from given teacher trajectories (jitted).
  * :func:`run_teacher` (:func:`teacher_cost_matrix` for one metric): runs the teacher
    in batches and averages the costs; one pass serves any number of step counts,
    coefficients and metrics.
  * :func:`dp_schedule`: the DP and its backtracking (numpy, O(K M^2)).
  * :func:`select_schedule`: the DP schedules of several costs and the base schedule,
    judged by the student's error to the teacher on the warm-up noises.
:func:`search` chains them and returns the sigmas (optionally with a :class:`SearchInfo`).
Its default (``metric="select"``) is robust on trained denoisers; ``metric="dev"`` is
the reference code's search (see :func:`search` for when each is right).

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
from jaxinfra.config_checks import finite_at_least

__all__ = ["METRICS", "DEFAULT_CANDIDATES", "TeacherRun", "Selection", "SearchInfo",
           "cost_matrix", "run_teacher", "teacher_cost_matrix", "dp_schedule",
           "select_schedule", "search"]

METRICS = ("l1", "l2", "dev")
DEFAULT_CANDIDATES = ("dev", "l2", "base")


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
        trajectories of an exact denoiser bulge away from the chord ("boomerang") and a
        tangent jump overshoots outwards, so entries are positive except at noise
        level: on digits (GMM denoiser, iPNDM teacher) 1-3% of the entries are
        negative, all short jumps near sigma_min with magnitude <= 0.004. A trained
        network that is inaccurate at high noise breaks this: on the digits U-Net 14%
        of the entries were negative (down to -0.65), the DP bought those jumps and the
        schedule lost to the polynomial one (see :func:`search`, ``metric="select"``).
        The metric sees only the deviation orthogonal to the chord; ``"l2"`` is a true
        distance.

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


class TeacherRun(NamedTuple):
    """What a search keeps of the teacher's trajectories on the fine grid.

    Attributes:
      grid: (M,) the fine teacher grid, strictly decreasing.
      costs: ``{metric: (M, M) numpy float64 cost matrix}`` (+inf where i >= j).
      x_T: (B, ...) the warm-up states the teacher started from.
      x_end: (B, ...) the teacher's end points at ``grid[-1]``.
      teacher_nfe: denoiser calls per teacher trajectory (60 for ipndm on 61 points).
    """
    grid: jnp.ndarray
    costs: dict
    x_T: jnp.ndarray
    x_end: jnp.ndarray
    teacher_nfe: int


def run_teacher(denoise_fn: Callable, x_T, grid, *, teacher: str = "ipndm",
                teacher_options: Optional[dict] = None, metrics=("dev",),
                batch_size: Optional[int] = None) -> TeacherRun:
    """Runs the teacher on ``grid`` in batches; one pass gives the cost of every metric.

    Each cost is the exact mean over all B trajectories (batch sums divided by B; the
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
      metrics: names from :data:`METRICS`.
      batch_size: trajectories per run (bounds memory to O(M * batch_size * D)); None
        runs all B at once.

    Returns:
      A :class:`TeacherRun`.
    """
    metrics = tuple(metrics)
    for metric in metrics:
        _check_metric(metric)
    _check_batch_size(batch_size)
    x_T = _check_noise(x_T)
    teacher_options = dict(teacher_options or {})
    solvers_lib.get(teacher, **teacher_options)
    grid = jnp.asarray(grid, x_T.dtype)
    totals = dict.fromkeys(metrics, 0.0)
    ends = []
    for xb in _teacher_batches(x_T, batch_size):
        xs, ds = _teacher_run(denoise_fn, xb, grid, teacher, teacher_options)
        for m in metrics:
            totals[m] = totals[m] + np.asarray(_cost_sum(xs, ds, grid, m), np.float64)
        ends.append(xs[-1])
    return TeacherRun(grid=grid, costs={m: totals[m] / x_T.shape[0] for m in metrics},
                      x_T=x_T, x_end=jnp.concatenate(ends),
                      teacher_nfe=count_nfe(teacher, grid.shape[0], **teacher_options))


def teacher_cost_matrix(denoise_fn: Callable, x_T, grid, *, teacher: str = "ipndm",
                        teacher_options: Optional[dict] = None, metric: str = "dev",
                        batch_size: Optional[int] = None):
    """The cost matrix of one ``metric`` from :func:`run_teacher` (same arguments).

    Returns:
      (M, M) numpy float64 cost matrix, +inf where i >= j.
    """
    _check_metric(metric)
    return run_teacher(denoise_fn, x_T, grid, teacher=teacher,
                       teacher_options=teacher_options, metrics=(metric,),
                       batch_size=batch_size).costs[metric]


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


# ------------------------------------------------------------------------- selection


def _student_errors(denoise_fn, run: TeacherRun, sigmas, student, student_options,
                    afs=False) -> np.ndarray:
    """(B,) L2 distances of the student's end points to the teacher's, warm-up noises."""
    out = sample(denoise_fn, run.x_T, jnp.asarray(sigmas, run.x_T.dtype), solver=student,
                 afs=afs, **student_options)
    diff = (out - run.x_end).reshape(out.shape[0], -1)
    return np.asarray(jnp.linalg.norm(diff, axis=1), np.float64)


def _student_error(denoise_fn, run: TeacherRun, sigmas, student, student_options,
                   afs=False) -> float:
    """Mean L2 distance of the student's end points to the teacher's, warm-up noises."""
    return float(np.mean(_student_errors(denoise_fn, run, sigmas, student,
                                         student_options, afs)))


def _paired_gain(base, candidate):
    """(mean, standard error) of ``base - candidate`` errors over the warm-up noises
    (paired): how much closer to the teacher the candidate lands."""
    d = np.asarray(base) - np.asarray(candidate)
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("inf")
    return float(np.mean(d)), se


def _check_candidates(candidates):
    candidates = tuple(candidates)
    valid = METRICS + ("base",)
    if not candidates or any(c not in valid for c in candidates) \
            or len(set(candidates)) != len(candidates):
        raise ValueError(f"candidates must be distinct names from {list(valid)}, got "
                         f"{list(candidates)}")
    return candidates


def _base_kw(base, base_kw):
    if base_kw is None:
        return {"rho": 7.0} if base == "polynomial" else {}
    return dict(base_kw)


class Selection(NamedTuple):
    """The schedule :func:`select_schedule` chose, and why.

    Attributes:
      sigmas: (num_steps,) the chosen schedule.
      selected: the winning candidate: a metric name, or ``"base"``.
      indices: (num_steps,) grid indices of the chosen DP path; None for ``"base"``.
      errors: ``{candidate: mean L2 error to the teacher on the warm-up noises}``.
      model_calls: per-sample denoiser calls of the student runs, summed over the batch.
      gain: (mean, standard error) over the warm-up noises of the base schedule's error
        minus the best DP candidate's (paired); None without both in the candidates.
    """
    sigmas: jnp.ndarray
    selected: str
    indices: Optional[np.ndarray]
    errors: dict
    model_calls: int
    gain: Optional[tuple] = None


def select_schedule(denoise_fn: Callable, run: TeacherRun, num_steps: int, *,
                    coeff: float = 1.15, candidates=DEFAULT_CANDIDATES,
                    base: str = "polynomial", base_kw: Optional[dict] = None,
                    student: str = "ipndm", student_options: Optional[dict] = None,
                    significance: float = 2.0) -> Selection:
    """The candidate schedule whose student run lands closest to the teacher.

    Each metric in ``candidates`` gives a DP schedule (:func:`dp_schedule` on
    ``run.costs[metric]``); ``"base"`` is the base schedule itself,
    ``schedules.get(base, num_steps, grid[-1], grid[0], **base_kw)``. The student solver
    samples every candidate from the warm-up states ``run.x_T``; the one with the lowest
    mean L2 distance to the teacher's end points ``run.x_end`` wins (ties: the first in
    ``candidates``), but a DP candidate replaces the base schedule only if its mean gain
    over it is more than ``significance`` standard errors of the paired per-noise
    differences (with one warm-up noise, never); else the base schedule stays. The DP
    cost is a proxy (a sum of one-step errors); this measures the quantity it stands
    for, on noises the search already paid the teacher for, at
    ``len(candidates) * (num_steps - 1)`` student calls per warm-up sample.

    Why the guard: with 128 warm-up noises the candidates' means carry sampling error.
    On the `:wide` Fashion-MNIST U-Net at NFE 9 the ``l2`` schedule beat the polynomial
    one by 0.10 ± 0.082 (1.2 standard errors) on the warm-up noises and lost to it on
    the evaluation noises (1.47 against 1.31 from the reference); at NFE 3-8 the winners
    were 5.5-17 standard errors ahead. ``significance=0`` is the plain minimum.

    Args:
      denoise_fn: the denoiser the teacher ran on.
      run: a :class:`TeacherRun` holding the cost of every metric in ``candidates``.
      num_steps: timestamps of the student schedule, 2 <= num_steps <= M.
      coeff: DP coefficient (see :func:`dp_schedule`).
      candidates: names from :data:`METRICS` and ``"base"``.
      base, base_kw: the base schedule (default polynomial, rho = 7).
      student, student_options: the solver the schedule is for.
      significance: standard errors (>= 0) a DP candidate must gain over ``"base"`` by
        to replace it (only when ``"base"`` is a candidate).

    Returns:
      A :class:`Selection`.
    """
    candidates = _check_candidates(candidates)
    finite_at_least(significance, "significance", 0)
    missing = [c for c in candidates if c != "base" and c not in run.costs]
    if missing:
        raise ValueError(f"the teacher run has no cost for {missing}; it has "
                         f"{list(run.costs)}")
    student_options = dict(student_options or {})
    solvers_lib.get(student, **student_options)
    grid = run.grid
    options = {}
    for name in candidates:
        if name == "base":
            sigmas = schedules.get(base, int(num_steps), float(grid[-1]), float(grid[0]),
                                   **_base_kw(base, base_kw))
            options[name] = (jnp.asarray(sigmas, grid.dtype), None)
        else:
            indices = dp_schedule(run.costs[name], num_steps, coeff)
            options[name] = (grid[indices], indices)
    per_noise = {name: _student_errors(denoise_fn, run, sigmas, student, student_options)
                 for name, (sigmas, _) in options.items()}
    errors = {name: float(np.mean(e)) for name, e in per_noise.items()}
    selected = min(candidates, key=lambda name: errors[name])
    dp = [c for c in candidates if c != "base"]
    gain = None
    if "base" in candidates and dp:
        best_dp = min(dp, key=lambda name: errors[name])
        gain = _paired_gain(per_noise["base"], per_noise[best_dp])
        if selected != "base" and significance > 0 \
                and not gain[0] > significance * gain[1]:   # NaN too: keep the base
            selected = "base"
    sigmas, indices = options[selected]
    calls = len(candidates) * run.x_T.shape[0] * count_nfe(student, int(num_steps),
                                                            **student_options)
    return Selection(sigmas=sigmas, selected=selected, indices=indices, errors=errors,
                     model_calls=int(calls), gain=gain)


# ---------------------------------------------------------------------------- search


class SearchInfo(NamedTuple):
    """Details of a :func:`search`.

    Attributes:
      indices: (num_steps,) grid indices of the schedule ((num_steps + 1,) with AFS);
        None when the base schedule was selected (it need not lie on the grid).
      grid: (M,) the fine teacher grid.
      cost: (M, M) the averaged cost matrix of the metric that made the schedule
        (numpy float64; +inf where i >= j); None when the base schedule was selected.
      teacher_nfe: denoiser calls per teacher trajectory (60 for ipndm on 61 points).
      model_calls: per-sample denoiser evaluations in all: teacher_nfe * B plus the
        student runs of the selection and of AFS.
      seconds: wall time of the search, compilation included.
      afs_index: the inserted grid index with AFS (None without AFS, or when no grid
        point lies between the first two timestamps).
      afs_errors: with AFS, the student's mean final L2 error for each candidate grid
        point, in grid order (else None).
      selected: the metric whose DP schedule was returned, or ``"base"``.
      candidate_errors: with ``metric="select"``, each candidate's mean L2 error to the
        teacher on the warm-up noises (else None).
    """
    indices: Optional[np.ndarray]
    grid: jnp.ndarray
    cost: Optional[np.ndarray]
    teacher_nfe: int
    model_calls: int
    seconds: float
    afs_index: Optional[int] = None
    afs_errors: Optional[np.ndarray] = None
    selected: str = "dev"
    candidate_errors: Optional[dict] = None


def _check_int_in(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= (high if high is not None else value):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


def _insert_afs_point(denoise_fn, run, sigmas, indices, student, student_options):
    """AFS: the grid point between sigmas[0] and sigmas[1] the student does best with."""
    grid = run.grid
    candidates = np.flatnonzero((np.asarray(grid) < float(sigmas[0]))
                                & (np.asarray(grid) > float(sigmas[1])))
    if candidates.size == 0:
        warnings.warn("GITS AFS: no grid point lies between the first two timestamps, so "
                      "none can be inserted; returning the schedule without AFS (sample "
                      "it with afs=False)", stacklevel=3)
        return sigmas, indices, None, None, 0
    errors = np.asarray([
        _student_error(denoise_fn, run, jnp.concatenate([sigmas[:1], grid[k:k + 1],
                                                         sigmas[1:]]),
                       student, student_options, afs=True) for k in candidates])
    k = int(candidates[int(np.argmin(errors))])
    sigmas = jnp.concatenate([sigmas[:1], grid[k:k + 1], sigmas[1:]])
    if indices is not None:
        indices = np.concatenate([[0, k], indices[1:]]).astype(np.int64)
    calls = candidates.size * run.x_T.shape[0] * count_nfe(
        student, len(sigmas), afs=True, **student_options)
    return sigmas, indices, k, errors, calls


def search(denoise_fn: Callable, x_T, num_steps: int, *, grid_size: int = 61,
           base: str = "polynomial", base_kw: Optional[dict] = None,
           sigma_min: float = 0.002, sigma_max: float = 80.0, teacher: str = "ipndm",
           teacher_options: Optional[dict] = None, coeff: float = 1.15,
           metric: str = "select", candidates=DEFAULT_CANDIDATES, afs: bool = False,
           student: str = "ipndm", student_options: Optional[dict] = None,
           significance: float = 2.0, batch_size: Optional[int] = None,
           return_info: bool = False):
    """Searches a GITS schedule of ``num_steps`` timestamps for ``denoise_fn``.

    1. Fine grid: ``schedules.get(base, grid_size, sigma_min, sigma_max, **base_kw)``
       (defaults: polynomial, rho = 7 as in the reference; 61 points).
    2. Teacher trajectories on the grid from ``x_T``, in batches of ``batch_size``, and
       their averaged cost matrices (:func:`run_teacher`). NFE: ``teacher_nfe`` per
       trajectory (60 for iPNDM-4 on 61 points).
    3. With a metric from :data:`METRICS`: :func:`dp_schedule` with ``coeff`` on that
       cost, sigmas = ``grid[indices]`` (``metric="dev"`` is the reference code).
       With ``metric="select"`` (default): :func:`select_schedule` over ``candidates``
       (DP schedules of "dev" and "l2", and the base schedule itself), judged by the
       ``student`` solver's error to the teacher on the warm-up noises; a DP schedule
       replaces the base one only if it gains ``significance`` standard errors.
    4. With ``afs=True``: for each grid point strictly between the first two timestamps,
       the student runs ``jaxdiff.sample(..., afs=True)`` with that point inserted; the
       one with the lowest mean L2 distance to the teacher's end points is inserted. The
       schedule then has num_steps + 1 timestamps but, sampled with ``afs=True``, the
       same NFE for one-call solvers (heun and dpm2 pay +1).

    Which metric when: "dev" (the reference) is right for exact or very accurate
    denoisers, where its signed entries are almost all positive (digits GMM, iPNDM,
    NFE 5: error 0.64-0.69 against 1.10 for the polynomial schedule). On trained
    networks that are poor at high noise, 14% of its entries were negative (U-Net on
    digits, down to -0.65): the DP then buys a useless early node, and the schedule can
    be worse than the polynomial one at every NFE. "l2" is a true distance and robust,
    but on exact denoisers a little worse than "dev". "select" runs both and keeps
    whichever (or the base schedule) the student does best with on the warm-up noises,
    so it is never worse than the base schedule there, for a few student runs more; and
    it keeps the base schedule unless a DP schedule's gain is larger than the warm-up
    set's sampling error (``significance``, see :func:`select_schedule`).

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
      metric: one of :data:`METRICS`, or ``"select"``.
      candidates: with ``metric="select"``, names from :data:`METRICS` and "base".
      afs: the AFS variant above.
      student, student_options: the solver the schedule is for; it judges the
        candidates of ``"select"`` and of AFS.
      significance: with ``metric="select"``, the standard errors a DP schedule must
        gain over the base schedule by (:func:`select_schedule`; 0: the plain minimum).
      batch_size: teacher trajectories per run; None runs all B at once.
      return_info: also return a :class:`SearchInfo`.

    Returns:
      sigmas, (num_steps,) (or (num_steps + 1,) with AFS) strictly decreasing, from
      sigma_max to sigma_min, in ``x_T``'s dtype; or ``(sigmas, SearchInfo)``.

    Raises:
      ValueError: bad sizes, names, options, coeff, significance, batch size or noise
        shape, before any teacher run.
    """
    t_start = time.perf_counter()
    _check_int_in("grid_size", grid_size, 2)
    _check_int_in("num_steps (timestamps, at most grid_size)", num_steps, 2, grid_size)
    _check_dp_inputs(np.zeros((2, 2)), 2, coeff)
    if metric != "select":
        _check_metric(metric)
    metrics = (metric,) if metric != "select" else tuple(
        c for c in _check_candidates(candidates) if c != "base")
    _check_batch_size(batch_size)
    finite_at_least(significance, "significance", 0)
    x_T = _check_noise(x_T)
    student_options = dict(student_options or {})
    for role, name, opts in (("teacher", teacher, dict(teacher_options or {})),
                             ("student", student, student_options)):
        if solvers_lib.get(name, **opts).stochastic:
            raise ValueError(f"GITS searches schedules for ODE solvers; the {role} {name!r} "
                             f"with options {opts} is stochastic")
    base_kw = _base_kw(base, base_kw)
    grid = schedules.get(base, grid_size, sigma_min, sigma_max, **base_kw)

    run = run_teacher(denoise_fn, x_T, grid, teacher=teacher,
                      teacher_options=teacher_options, metrics=metrics,
                      batch_size=batch_size)
    model_calls = run.teacher_nfe * x_T.shape[0]
    candidate_errors = None
    if metric == "select":
        chosen = select_schedule(denoise_fn, run, num_steps, coeff=coeff,
                                 candidates=candidates, base=base, base_kw=base_kw,
                                 student=student, student_options=student_options,
                                 significance=significance)
        sigmas, indices, selected = chosen.sigmas, chosen.indices, chosen.selected
        candidate_errors = chosen.errors
        model_calls += chosen.model_calls
    else:
        indices = dp_schedule(run.costs[metric], num_steps, coeff)
        sigmas, selected = run.grid[indices], metric

    afs_index = afs_errors = None
    if afs:
        sigmas, indices, afs_index, afs_errors, calls = _insert_afs_point(
            denoise_fn, run, sigmas, indices, student, student_options)
        model_calls += calls

    sigmas = jax.block_until_ready(sigmas)
    if not return_info:
        return sigmas
    info = SearchInfo(indices=indices, grid=run.grid, cost=run.costs.get(selected),
                      teacher_nfe=run.teacher_nfe, model_calls=int(model_calls),
                      seconds=time.perf_counter() - t_start, afs_index=afs_index,
                      afs_errors=afs_errors, selected=selected,
                      candidate_errors=candidate_errors)
    return sigmas, info
