"""Trajectory geometry of probability-flow ODE sampling (reference section 7).

Conventions: a trajectory set is an array ``xs`` of shape (N, B, ...) as in
:class:`jaxdiff.Trajectory` (``xs[0]`` the noise x_T, ``xs[-1]`` the sample); the
denoising trajectory ``denoised`` r_n = D(x_n; sigma_n) has shape (N - 1, B, ...);
``sigmas`` has shape (N,). Trailing dims are flattened to D features. Distances are
Euclidean norms in data units (pixels in [-1, 1] for the bundled data sets), sigmas
are in the same units. Integer inputs are promoted to the default float dtype.

Every function is a pure jnp function of its array arguments, jitted (compiled once
per input shape) and usable under ``jit``, ``vmap`` and ``grad``; shape errors raise
ValueError at trace time. The (N, B, ...) functions are already batched over B: vmap
them over an extra leading axis, not over B (a (N, D) slice would read as D
trajectories of 1 feature). ``pca_projection`` takes one trajectory (N, ...): vmap it
with ``in_axes=1``.
``score_deviation`` and ``optimal_euler_step`` run :func:`jaxdiff.sample` and are meant
to be called eagerly.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdiff import denoisers
from jaxdiff.sampling import Trajectory, sample

__all__ = [
    "deviation_from_chord", "deviation", "distance_to_end", "path_length",
    "direction_cosine", "Magnitudes", "magnitudes", "PCAProjection", "pca_projection",
    "denoise_along", "ScoreDeviation", "score_deviation", "mean_shift", "mean_shift_step",
    "optimal_euler_step", "kde_log_likelihood", "kde_gain", "nearest_neighbor_distance",
]

_HI = jax.lax.Precision.HIGHEST  # logits scale as 1 / sigma^2: no reduced-precision dots.


# ----------------------------------------------------------------------------- helpers


def _as_float(a):
    """jnp array; integer/bool inputs promoted to the default float dtype."""
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def _trajectory(xs, name="xs"):
    """(N, B, ...) -> (N, B, D) with N >= 2."""
    xs = _as_float(xs)
    if xs.ndim < 2 or xs.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, B, ...) with N >= 2, got {xs.shape}")
    return xs.reshape(xs.shape[0], xs.shape[1], -1)


def _points(x, dim, name="x"):
    """(B, ...) -> (B, D), checking that D == dim (integers promoted to float)."""
    return denoisers.as_points(_as_float(x), dim, name)


def _data(data):
    """(M, ...) -> (M, D) with M >= 1."""
    data = _as_float(data)
    if data.ndim < 1 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (M, ...) with M >= 1, got {data.shape}")
    return data.reshape(data.shape[0], -1)


def _sigma(sigma, batch, dtype, name="sigma"):
    """Scalar or (B,) noise level -> (B,) in ``dtype``."""
    sigma = jnp.asarray(sigma, dtype)
    if sigma.ndim == 0:
        return jnp.broadcast_to(sigma, (batch,))
    if sigma.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or of shape ({batch},), got {sigma.shape}")
    return sigma


def _with_denoised(xs, denoised, sigmas):
    """Validates a (sampling, denoising, sigmas) triple; returns flat (N,B,D), (N-1,B,D), (N,)."""
    xs, denoised, sigmas = _as_float(xs), _as_float(denoised), _as_float(sigmas)
    if xs.ndim < 2 or xs.shape[0] < 2:
        raise ValueError(f"xs must have shape (N, B, ...) with N >= 2, got {xs.shape}")
    want = (xs.shape[0] - 1,) + xs.shape[1:]
    if denoised.shape != want:
        raise ValueError(f"denoised must have shape (N - 1, B, ...) = {want} for xs of shape "
                         f"{xs.shape}, got {denoised.shape}")
    if sigmas.shape != (xs.shape[0],):
        raise ValueError(f"sigmas must have shape (N,) = ({xs.shape[0]},), got {sigmas.shape}")
    n, b = xs.shape[:2]
    return xs.reshape(n, b, -1), denoised.reshape(n - 1, b, -1), sigmas


def _norm(v):
    """Euclidean norm over the last axis, with gradient 0 (not NaN) at the origin."""
    sq = jnp.sum(jnp.square(v), axis=-1)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1)), 0)


def _normalise(v):
    """v / |v| over the last axis; a zero vector stays zero."""
    n = _norm(v)[..., None]
    return v / jnp.where(n > 0, n, 1)


def _cosine(a, b):
    """Cosine over the last axis; 0 where either vector is zero."""
    den = _norm(a) * _norm(b)
    return jnp.sum(a * b, axis=-1) / jnp.where(den > 0, den, 1)


def _sq_dists(x, y):
    """Squared distances (B, M) between rows of x (B, D) and y (M, D), clamped at 0."""
    sq = (jnp.sum(jnp.square(x), -1)[:, None] + jnp.sum(jnp.square(y), -1)[None]
          - 2.0 * jnp.matmul(x, y.T, precision=_HI))
    return jnp.maximum(sq, 0.0)


# ------------------------------------------------------------------ straightness


@jax.jit
def deviation_from_chord(y, a, b):
    """Distance of y from the line through a and b (GITS's ``dev(y | a, b)``).

    ``dev = |(b - y) - <b - y, u> u|`` with ``u = (b - a) / |b - a|`` (u = 0 when a == b,
    so the result is then |b - y|).

    Args:
      y, a, b: arrays broadcastable to (..., D); the last axis holds the features.

    Returns:
      (...) distances in data units.
    """
    y, a, b = _as_float(y), _as_float(a), _as_float(b)
    u = _normalise(b - a)
    v = b - y
    return _norm(v - jnp.sum(v * u, axis=-1, keepdims=True) * u)


@jax.jit
def deviation(traj_xs):
    """Deviation of every point from the chord between the trajectory's endpoints.

    ``dev_n = |(b - x_n) - <b - x_n, u> u|``, ``u = (b - a) / |b - a|``, a = xs[0],
    b = xs[-1]; zero at both ends. Pass ``Trajectory.denoised`` for the denoising
    trajectory (its own endpoints r_0 and r_{N-2} define the chord).

    Args:
      traj_xs: (N, B, ...) trajectories, N >= 2.

    Returns:
      (N, B) distances in data units.
    """
    xs = _trajectory(traj_xs, "traj_xs")
    return deviation_from_chord(xs, xs[0], xs[-1])


@jax.jit
def distance_to_end(xs):
    """``|x_n - x_{N-1}|`` for every point: (N, B, ...) -> (N, B); last row is 0."""
    xs = _trajectory(xs)
    return _norm(xs - xs[-1])


@jax.jit
def path_length(xs):
    """Polyline length ``sum_n |x_{n+1} - x_n|`` of each trajectory: (N, B, ...) -> (B,)."""
    xs = _trajectory(xs)
    return jnp.sum(_norm(jnp.diff(xs, axis=0)), axis=0)


# ------------------------------------------------------------- directions, norms


@jax.jit
def direction_cosine(xs, denoised, sigmas):
    """cos(d_n, x_n - x_{N-1}) with the ODE direction d_n = (x_n - r_n) / sigma_n.

    Args:
      xs: (N, B, ...) sampling trajectories.
      denoised: (N - 1, B, ...) r_n = D(x_n; sigma_n).
      sigmas: (N,) noise levels.

    Returns:
      (N - 1, B) cosines for n = 0..N-2 (0 where a vector vanishes).
    """
    xs, r, sigmas = _with_denoised(xs, denoised, sigmas)
    d = (xs[:-1] - r) / sigmas[:-1, None, None]
    return _cosine(d, xs[:-1] - xs[-1])


class Magnitudes(NamedTuple):
    """Norms along a trajectory (data units).

    Attributes:
      x: (N, B) |x_n|; about sigma_n sqrt(D) at large sigma.
      denoised: (N - 1, B) |r_n|.
      d: (N - 1, B) |d_n| with d_n = (x_n - r_n) / sigma_n; about sqrt(D) at large sigma.
    """
    x: Any
    denoised: Any
    d: Any


@jax.jit
def magnitudes(xs, denoised, sigmas) -> Magnitudes:
    """|x_n|, |r_n| and |d_n|; shapes as in :class:`Magnitudes`."""
    xs, r, sigmas = _with_denoised(xs, denoised, sigmas)
    d = (xs[:-1] - r) / sigmas[:-1, None, None]
    return Magnitudes(_norm(xs), _norm(r), _norm(d))


# ------------------------------------------------------------ low-dim structure


class PCAProjection(NamedTuple):
    """Low-dimensional view of one trajectory.

    Attributes:
      basis: (K, D) orthonormal rows u_1..u_K; u_1 is the chord direction from x_start
        to x_end, u_2.. the top principal directions of the trajectory projected onto
        u_1's orthogonal complement. A degenerate direction (rank-deficient trajectory)
        is a zero row.
      coords: (N, K) coordinates <x_n - x_end, u_k> (data units); the end is the origin,
        the start has coordinate -|x_end - x_start| on u_1 and 0 on the others.
      variance_ratio: (min(N, D),) cumsum(S^2) / sum(S^2) of the centered trajectory
        (S its singular values): the fraction of variance in the top-k PCs.
      captured: () fraction of the centered trajectory's variance inside span(basis).
    """
    basis: Any
    coords: Any
    variance_ratio: Any
    captured: Any


def _gram_schmidt(vectors):
    """Orthonormalises the rows of (K, D) in order (two passes); dependent rows -> 0."""
    out = []
    for k in range(vectors.shape[0]):
        v = vectors[k]
        for _ in range(2):
            for q in out:
                v = v - jnp.dot(v, q, precision=_HI) * q
        norm = jnp.linalg.norm(v)
        keep = norm > 1e-6 * jnp.maximum(jnp.linalg.norm(vectors[k]), 1e-30)
        out.append(jnp.where(keep, v / jnp.where(keep, norm, 1), 0.0))
    return jnp.stack(out)


@functools.partial(jax.jit, static_argnames="num_components")
def pca_projection(xs, num_components: int = 3) -> PCAProjection:
    """The 3-D "boomerang" view of ONE trajectory (reference section 7 item 9).

    u_1 = normalise(x_end - x_start); the centered trajectory is projected onto u_1's
    orthogonal complement and its top ``num_components - 1`` right singular vectors are
    Gram-Schmidt-orthonormalised after u_1. Signs of u_2.. are fixed so the coordinate of
    largest magnitude is positive. For a batch use
    ``jax.vmap(pca_projection, in_axes=1)(traj.xs)``.

    Args:
      xs: (N, ...) one trajectory (N >= 2); trailing dims flatten to D.
      num_components: K >= 1 basis vectors, at most min(N, D) + 1 and at most D.

    Returns:
      :class:`PCAProjection`.
    """
    xs = _as_float(xs)
    if xs.ndim < 1 or xs.shape[0] < 2:
        raise ValueError(f"xs must be one trajectory of shape (N, ...) with N >= 2, got "
                         f"{xs.shape} (vmap over a batch with in_axes=1)")
    x = xs.reshape(xs.shape[0], -1)
    n, dim = x.shape
    k = num_components
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= min(n + 1, dim):
        raise ValueError(f"num_components must be an int in [1, {min(n + 1, dim)}] for a "
                         f"trajectory of shape {xs.shape}, got {k!r}")
    k = int(k)
    start, end = x[0], x[-1]
    u1 = _normalise(end - start)
    centered = x - jnp.mean(x, axis=0)
    perp = centered - jnp.matmul(centered, u1, precision=_HI)[:, None] * u1
    _, _, vt = jnp.linalg.svd(perp, full_matrices=False)
    basis = _gram_schmidt(jnp.concatenate([u1[None], vt[:k - 1]], axis=0))
    coords = jnp.matmul(x - end, basis.T, precision=_HI)  # (N, K)
    big = jnp.take_along_axis(coords, jnp.argmax(jnp.abs(coords), axis=0)[None], axis=0)[0]
    sign = jnp.where(jnp.arange(k) == 0, 1.0, jnp.where(big < 0, -1.0, 1.0)).astype(x.dtype)
    basis, coords = basis * sign[:, None], coords * sign
    s2 = jnp.square(jnp.linalg.svd(centered, compute_uv=False))
    total = jnp.sum(s2)
    safe = jnp.where(total > 0, total, 1)
    ratio = jnp.where(total > 0, jnp.cumsum(s2) / safe, 1.0)
    inside = jnp.sum(jnp.square(jnp.matmul(centered, basis.T, precision=_HI)))
    captured = jnp.where(total > 0, inside / safe, 1.0)
    return PCAProjection(basis, coords, ratio, captured)


# ------------------------------------------------------------ score deviation


def denoise_along(denoise_fn: Callable, xs, sigmas):
    """D(x_n; sigma_n) at every point of a trajectory set, one call per n.

    Args:
      denoise_fn: ``denoise_fn(x (B, ...), sigma (B,)) -> (B, ...)``.
      xs: (M, B, ...) points.
      sigmas: (M,) noise levels.

    Returns:
      (M, B, ...) denoiser outputs in ``xs.dtype``.
    """
    xs = _as_float(xs)
    if xs.ndim < 2:
        raise ValueError(f"xs must have shape (M, B, ...), got {xs.shape}")
    sigmas = jnp.asarray(sigmas, xs.dtype)
    if sigmas.shape != xs.shape[:1]:
        raise ValueError(f"sigmas must have shape ({xs.shape[0]},), got {sigmas.shape}")
    leaves = jax.tree.leaves(denoise_fn)
    if leaves and all(isinstance(leaf, jax.Array) for leaf in leaves):
        return _denoise_along_traced(denoise_fn, xs, sigmas)  # Pytree denoiser: traced.
    return _denoise_along_static(denoise_fn, xs, sigmas)


def _denoise_along_impl(denoise_fn, xs, sigmas):
    batch = xs.shape[1]
    return jax.lax.map(
        lambda a: denoise_fn(a[0], jnp.broadcast_to(a[1], (batch,))).astype(xs.dtype),
        (xs, sigmas))


_denoise_along_traced = jax.jit(_denoise_along_impl)
_denoise_along_static = jax.jit(_denoise_along_impl, static_argnums=0)


class ScoreDeviation(NamedTuple):
    """Model vs optimal denoiser along trajectories from the same noise (section 7 item 3).

    x_n / x*_n: model / optimal sampling trajectories; r_theta, r*: model / optimal
    denoisers, evaluated at (x, sigma_n). Distances in data units.

    Attributes:
      diff_sample_traj: (N, B) |x_n - x*_n| (0 at n = 0).
      diff_denoised_traj: (N - 1, B) |r_theta(x_n) - r*(x*_n)|.
      diff_traj: (N - 1, B) |r_theta(x_n) - r*(x_n)|, the score deviation along the
        model's path.
      diff_opt_traj: (N - 1, B) |r_theta(x*_n) - r*(x*_n)|, along the optimal path.
      model: the model's :class:`jaxdiff.Trajectory`.
      optimal: the optimal denoiser's :class:`jaxdiff.Trajectory`.
    """
    diff_sample_traj: Any
    diff_denoised_traj: Any
    diff_traj: Any
    diff_opt_traj: Any
    model: Trajectory
    optimal: Trajectory


def score_deviation(model_fn: Callable, optimal_fn: Callable, x_T, sigmas, *,
                    solver: str = "euler", **options) -> ScoreDeviation:
    """Runs both denoisers from the same noise and measures how far apart they are.

    All four denoiser values are evaluated directly as D(x_n; sigma_n) for
    n = 0..N-2 (not taken from the solver's bookkeeping, which differs under AFS or
    UniPC); the sampling trajectories come from :func:`jaxdiff.sample`.

    Args:
      model_fn: ``model_fn(x, sigma) -> D_theta(x; sigma)`` (the "trained" model).
      optimal_fn: the optimal denoiser, e.g. ``jaxdiff.denoisers.optimal(data)``.
      x_T: (B, ...) initial noise at level ``sigmas[0]``.
      sigmas: (N,) decreasing schedule.
      solver: any ``jaxdiff.solvers`` name.
      **options: forwarded to :func:`jaxdiff.sample` (solver options, ``afs``).

    Returns:
      :class:`ScoreDeviation`; shapes (N, B) for ``diff_sample_traj`` and (N - 1, B)
      for the three denoiser distances.
    """
    _, tm = sample(model_fn, x_T, sigmas, solver=solver, return_trajectory=True, **options)
    _, to = sample(optimal_fn, x_T, sigmas, solver=solver, return_trajectory=True, **options)
    s = tm.sigmas[:-1]
    xm, xo = tm.xs[:-1], to.xs[:-1]
    flat = lambda a: a.reshape(a.shape[0], a.shape[1], -1)
    r_m_at_m = flat(denoise_along(model_fn, xm, s))
    r_o_at_o = flat(denoise_along(optimal_fn, xo, s))
    r_o_at_m = flat(denoise_along(optimal_fn, xm, s))
    r_m_at_o = flat(denoise_along(model_fn, xo, s))
    return ScoreDeviation(
        diff_sample_traj=_norm(flat(tm.xs) - flat(to.xs)),
        diff_denoised_traj=_norm(r_m_at_m - r_o_at_o),
        diff_traj=_norm(r_m_at_m - r_o_at_m),
        diff_opt_traj=_norm(r_m_at_o - r_o_at_o),
        model=tm, optimal=to)


# ------------------------------------------------------- mean shift and the KDE


def _kernel_logits(data, x, sigma):
    """-|x_b - y_i|^2 / (2 sigma_b^2): (B, M), plus flat x (B, D) and sigma (B,)."""
    y = _data(data)
    xf = _points(x, y.shape[1])
    y = y.astype(jnp.result_type(xf.dtype, y.dtype))
    xf = xf.astype(y.dtype)
    sigma = _sigma(sigma, xf.shape[0], y.dtype)
    return -_sq_dists(xf, y) / (2.0 * jnp.square(sigma))[:, None], xf, y, sigma


@jax.jit
def mean_shift(data, x, sigma):
    """Gaussian-kernel mean shift m_sigma(x) = sum_i K(x - y_i) y_i / sum_i K(x - y_i).

    K(v) = exp(-|v|^2 / (2 sigma^2)). This is the optimal denoiser of the empirical
    distribution of ``data`` (computed here independently of ``denoisers.optimal``).

    Args:
      data: (M, ...) data points y_i.
      x: (B, ...) query points with the same trailing size D.
      sigma: scalar or (B,) bandwidths (data units).

    Returns:
      (B, ...) shaped like x.
    """
    logits, xf, y, _ = _kernel_logits(data, x, sigma)
    out = jnp.matmul(jax.nn.softmax(logits, axis=-1), y, precision=_HI)
    return out.reshape(jnp.shape(x)).astype(xf.dtype)


@jax.jit
def mean_shift_step(data, x, sigma, sigma_next):
    """Damped mean-shift step x + (1 - sigma'/sigma) (m_sigma(x) - x).

    With the optimal denoiser D = m_sigma, the Euler step of the probability-flow ODE
    x + (sigma' - sigma)(x - D)/sigma is exactly this update: Euler sampling with the
    optimal denoiser is annealed mean shift with bandwidth sigma_n (see
    :func:`optimal_euler_step`).

    Args:
      data: (M, ...) data points.
      x: (B, ...) current points at noise level ``sigma``.
      sigma, sigma_next: scalars or (B,) with 0 <= sigma_next < sigma.

    Returns:
      (B, ...) the next points.
    """
    m = mean_shift(data, x, sigma)
    x = _as_float(x).astype(m.dtype)
    batch = x.shape[0]
    eta = 1.0 - (_sigma(sigma_next, batch, m.dtype, "sigma_next")
                 / _sigma(sigma, batch, m.dtype))
    return x + eta.reshape((batch,) + (1,) * (x.ndim - 1)) * (m - x)


def optimal_euler_step(data, x, sigma, sigma_next):
    """One Euler step of :func:`jaxdiff.sample` with ``denoisers.optimal(data)``.

    Equals :func:`mean_shift_step` up to rounding; this function exists to show it.

    Args:
      data: (M, ...) data points.
      x: (B, ...) points at noise level ``sigma``.
      sigma, sigma_next: python floats or scalars, sigma > sigma_next > 0.

    Returns:
      (B, ...) the next points.
    """
    x = _as_float(x)
    sigmas = jnp.stack([jnp.asarray(sigma, x.dtype), jnp.asarray(sigma_next, x.dtype)])
    return sample(denoisers.optimal(jnp.asarray(data, x.dtype)), x, sigmas, solver="euler")


@jax.jit
def kde_log_likelihood(data, x, sigma):
    """Log density of the Gaussian KDE (1/M) sum_i N(x; y_i, sigma^2 I) at x.

    Args:
      data: (M, ...) data points.
      x: (B, ...) query points with the same trailing size D.
      sigma: scalar or (B,) bandwidths.

    Returns:
      (B,) log densities (nats).
    """
    logits, xf, y, sigma = _kernel_logits(data, x, sigma)
    m, dim = y.shape
    return (jax.nn.logsumexp(logits, axis=-1) - jnp.log(m)
            - 0.5 * dim * jnp.log(2.0 * jnp.pi * jnp.square(sigma)))


@jax.jit
def kde_gain(data, xs, sigmas):
    """KDE increase over each step at the step's own bandwidth.

    ``log p_{sigma_n}(x_{n+1}) - log p_{sigma_n}(x_n)``. For Euler with the optimal
    denoiser (annealed mean shift) every entry is >= 0: with step size
    eta = 1 - sigma'/sigma in (0, 1] the convexity bound of mean shift gives
    gain >= log1p(eta (2 - eta) |m_sigma(x_n) - x_n|^2 / (2 sigma_n^2)) >= 0, where
    m_sigma(x_n) - x_n = (x_{n+1} - x_n) / eta (convexity of the Gaussian profile).

    Args:
      data: (M, ...) data points.
      xs: (N, B, ...) trajectories.
      sigmas: (N,) noise levels.

    Returns:
      (N - 1, B) gains in nats.
    """
    xs = _trajectory(xs)
    sigmas = _as_float(sigmas)
    if sigmas.shape != (xs.shape[0],):
        raise ValueError(f"sigmas must have shape ({xs.shape[0]},), got {sigmas.shape}")
    ll = jax.vmap(lambda a, b, s: kde_log_likelihood(data, b, s)
                  - kde_log_likelihood(data, a, s))
    return ll(xs[:-1], xs[1:], sigmas[:-1])


@jax.jit
def nearest_neighbor_distance(data, x):
    """Distance from each x to its nearest data point: (B, ...) -> (B,) data units."""
    y = _data(data)
    xf = _points(x, y.shape[1])
    dtype = jnp.result_type(xf.dtype, y.dtype)
    return jnp.sqrt(jnp.min(_sq_dists(xf.astype(dtype), y.astype(dtype)), axis=-1))
