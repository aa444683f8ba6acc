"""The sampling driver: ``sample(denoise_fn, x, sigmas, solver=...)``.

One ``lax.scan`` over the steps runs any solver. The first step is traced separately
when AFS replaces its model call, and the last when a solver needs it (UniPC); all other
steps share one scan body. The program is jitted with ``denoise_fn`` and the solver
options static and the sigmas traced, so a new schedule of the same length never
recompiles. ``sample`` is pure: it also works inside a user's ``jit``/``vmap``/``grad``.

Stochastic solvers take their randomness explicitly: a PRNG ``key`` (traced: a new key
never recompiles), from which step i draws ``normal(split(key, N - 1)[i], x.shape)``
inside the scan (see :func:`draw_noise`), or the whole ``noise`` array (N - 1, B, ...),
slice i for step i, e.g. to reproduce another implementation's draws.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiff import callables
from jaxdiff import solvers as solvers_lib
from jaxdiff.solvers.base import ODESolver, afs_evaluator, model_evaluator

__all__ = ["sample", "nfe", "steps_for_nfe", "Trajectory", "validate_sigmas", "draw_noise"]


class Trajectory(NamedTuple):
    """A sampling run.

    Attributes:
      xs: (N, B, ...) sampling trajectory; ``xs[0]`` is the input, ``xs[-1]`` the output.
      denoised: (N - 1, B, ...) denoising trajectory: the denoiser output each step
        starts from, D(x_n; sigma_n) (AFS steps: x - sigma d; UniPC: the evaluation that
        seeds step n, made at its predicted point).
      sigmas: (N,) the schedule.
    """
    xs: Any
    denoised: Any
    sigmas: Any


def validate_sigmas(sigmas, *, name: str = "sigmas", increasing: bool = False,
                    context: str = "") -> None:
    """ValueError unless sigmas is 1-D, length >= 2, finite, positive and strictly
    decreasing (strictly increasing with ``increasing=True``, for ODE inversion).

    Value checks run only on concrete arrays (inside a trace only the shape is checked),
    on the values as they are in the array's dtype. ``context`` is appended to errors.
    """
    note = f" ({context})" if context else ""
    if jnp.ndim(sigmas) != 1 or jnp.shape(sigmas)[0] < 2:
        raise ValueError(f"{name} must be a 1-D array of length >= 2, got shape "
                         f"{jnp.shape(sigmas)}")
    if isinstance(sigmas, jax.core.Tracer):
        return
    s = np.asarray(sigmas, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(s) | (s <= 0))
    if bad.size:
        raise ValueError(f"{name} must be finite and positive; {name}[{bad[0]}] = "
                         f"{s[bad[0]]}{note}")
    diff = np.diff(s)
    wrong = np.flatnonzero(diff <= 0 if increasing else diff >= 0)
    if wrong.size:
        i = wrong[0]
        order, cmp = ("increasing", ">=") if increasing else ("decreasing", "<=")
        raise ValueError(f"{name} must be strictly {order}; {name}[{i}] = {s[i]} {cmp} "
                         f"{name}[{i + 1}] = {s[i + 1]}{note}")


def cast_sigmas(sigmas, dtype, *, increasing: bool = False):
    """``sigmas`` in the state's ``dtype``, validated after the cast.

    Half precision merges close noise levels (in bfloat16, 80, 79.9 and 79.8 are all 80):
    such a schedule is an error naming the dtype instead of NaN samples.
    """
    cast = jnp.asarray(sigmas, dtype)
    if cast.dtype != jnp.asarray(sigmas).dtype:
        validate_sigmas(cast, increasing=increasing,
                        context=f"after the cast to {cast.dtype}, the dtype of x: use a "
                                "float32 state or noise levels further apart")
    return cast


def _check_coefficients_fit(solver: ODESolver, sigmas, name: str) -> None:
    """For half-precision states: ValueError when the solver's coefficients for these
    sigmas overflow the dtype (multistep weights grow with uneven step sizes)."""
    if isinstance(sigmas, jax.core.Tracer) or jnp.finfo(sigmas.dtype).bits > 16:
        return
    work = solver.prepare(np.asarray(sigmas, np.float32))
    biggest = max((float(np.max(np.abs(np.asarray(c)))) for c in jax.tree.leaves(work)
                   if np.size(c)), default=0.0)
    if not np.isfinite(biggest) or biggest > float(jnp.finfo(sigmas.dtype).max):
        raise ValueError(f"{name}'s coefficients for these sigmas reach {biggest:.3g}, beyond "
                         f"{sigmas.dtype}'s range ({float(jnp.finfo(sigmas.dtype).max):.3g}): "
                         "use a float32 state or a smoother schedule")


def _prepare(solver: ODESolver, sigmas):
    """The solver's coefficients computed in at least float32 (half precision loses them,
    and LAPACK has no bfloat16), then cast to the state's dtype."""
    work = jnp.promote_types(sigmas.dtype, jnp.float32)
    coeffs = solver.prepare(sigmas.astype(work))
    return jax.tree.map(
        lambda c: c.astype(sigmas.dtype) if jnp.issubdtype(c.dtype, jnp.floating) else c,
        coeffs)


def _segments(num_steps: int, solver: ODESolver, afs: bool):
    """Static (lo, hi, afs_here, is_last) step ranges: first/last split off when needed."""
    steps = num_steps - 1
    split_first = afs and not solver.afs_in_init
    cuts = {0, steps}
    if split_first:
        cuts.add(1)
    if solver.split_last:
        cuts.add(steps - 1)
    cuts = sorted(cuts)
    return [(lo, hi, split_first and lo == 0, solver.split_last and hi == steps and hi - lo == 1)
            for lo, hi in zip(cuts[:-1], cuts[1:])]


def draw_noise(key, num_steps: int, shape, dtype=jnp.float32):
    """The standard normal draws ``sample(..., key=key)`` makes: (num_steps - 1,) + shape.

    Slice i is ``jax.random.normal(jax.random.split(key, num_steps - 1)[i], shape, dtype)``;
    ``sample`` draws each slice inside its step, so a run never holds all of them at once.
    ``shape`` is the shape of x (B, ...) and ``num_steps`` the length of the schedule.
    """
    keys = jax.random.split(key, int(num_steps) - 1)
    return jax.vmap(lambda k: jax.random.normal(k, tuple(shape), dtype))(keys)


def _run(denoise_fn, x, sigmas, solver: ODESolver, afs: bool, denoise_to_zero: bool,
         return_trajectory: bool, afs_mean=None, key=None, noise=None):
    """Traced body of :func:`sample`. Returns (x_final, finite (N-1,), Trajectory | None).

    A stochastic solver gets step i's draw from ``noise[i]`` or, without ``noise``, from
    ``split(key, N - 1)[i]`` (drawn inside the step).
    """
    num_steps = sigmas.shape[0]
    per_step = None
    if solver.stochastic:
        per_step = noise if noise is not None else jax.random.split(key, num_steps - 1)

    def draw(r, like):
        if not solver.stochastic:
            return {}
        return {"noise": r if noise is not None else jax.random.normal(r, like.shape,
                                                                         like.dtype)}

    def model(x_, sigma):
        sigma_b = jnp.broadcast_to(jnp.asarray(sigma, x_.dtype), (x_.shape[0],))
        return denoise_fn(x_, sigma_b).astype(x_.dtype)

    evaluate = model_evaluator(model)
    afs_evaluate = functools.partial(afs_evaluator, mean=afs_mean)
    coeffs = _prepare(solver, sigmas)
    state = solver.init(afs_evaluate if afs and solver.afs_in_init else evaluate, model, x,
                        sigmas[0])

    outs = []
    carry = (x, state)
    for lo, hi, afs_here, is_last in _segments(num_steps, solver, afs):
        step = functools.partial(solver.step, afs_evaluate if afs_here else evaluate, model,
                                 is_last=is_last, num_steps=num_steps)

        def body(carry, inp, step=step):
            x_cur, st = carry
            s, s_next, c, r = inp
            x_next, st, denoised = step(x_cur, st, s, s_next, c, **draw(r, x_cur))
            out = (jnp.all(jnp.isfinite(x_next)),)
            if return_trajectory:
                out += (x_next, denoised)
            return (x_next, st), out

        inputs = (sigmas[lo:hi], sigmas[lo + 1:hi + 1], jax.tree.map(lambda a: a[lo:hi], coeffs),
                  None if per_step is None else per_step[lo:hi])
        carry, out = jax.lax.scan(body, carry, inputs)
        outs.append(out)

    x_final = carry[0]
    if denoise_to_zero:
        x_final = model(x_final, sigmas[-1])
    cat = lambda j: jnp.concatenate([o[j] for o in outs], axis=0)
    traj = None
    if return_trajectory:
        traj = Trajectory(jnp.concatenate([x[None], cat(1)], axis=0), cat(2), sigmas)
    return x_final, cat(0), traj


@functools.partial(jax.jit, static_argnames=("fn_def", "solver", "options", "afs",
                                             "denoise_to_zero", "return_trajectory"))
def _run_jit(x, sigmas, fn_leaves, afs_mean=None, key=None, noise=None, *, fn_def, solver,
             options, afs, denoise_to_zero, return_trajectory):
    denoise_fn = jax.tree.unflatten(fn_def, fn_leaves) if fn_leaves else fn_def
    return _run(denoise_fn, x, sigmas, solvers_lib.get(solver, **dict(options)), afs,
                denoise_to_zero, return_trajectory, afs_mean, key, noise)


def integrate(denoise_fn: Callable, x, sigmas, *, solver: str, **options):
    """The solver's update rule along ``sigmas`` in either direction, without AFS.

    The driver of :func:`sample` without its checks on ``sigmas`` (the caller validates
    them): :func:`jaxdiff.conditioning.invert` runs it on increasing sigmas. Every
    solver's coefficients are functions of the (log-)sigma increments, so the same
    updates integrate the ODE upwards with the same convergence order (tested).
    Stochastic solvers are a ValueError: there is no noise to add along an ODE.
    """
    _check_solver(solver, tuple(sorted(options.items())))
    if solvers_lib.get(solver, **options).stochastic:
        raise ValueError(f"integrate runs deterministic ODE solvers; {solver!r} with options "
                         f"{options} is stochastic")
    fn_def, fn_leaves = callables.split(denoise_fn)
    up = not isinstance(sigmas, jax.core.Tracer) and float(sigmas[0]) < float(sigmas[-1])
    x_final, _, _ = _run_jit(x, cast_sigmas(sigmas, x.dtype, increasing=up), fn_leaves,
                             fn_def=fn_def, solver=solver,
                             options=tuple(sorted(options.items())), afs=False,
                             denoise_to_zero=False, return_trajectory=False)
    return x_final


def sample(denoise_fn: Callable, x, sigmas, *, solver: str = "ipndm",
           return_trajectory: bool = False, afs: bool = False, afs_mean=None,
           denoise_to_zero: bool = False, check_finite: bool = False, amed=None,
           feature_fn: Callable | None = None, key=None, noise=None, **options):
    """Solve the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma along ``sigmas``,
    or run a stochastic sampler of the matching reverse SDE.

    Args:
      denoise_fn: ``denoise_fn(x, sigma) -> D(x; sigma)`` with x (B, ...) and sigma (B,);
        returns an array shaped like x. A pytree of arrays such as
        ``jax.tree_util.Partial(apply_fn, params)`` is traced (new params reuse the
        compiled program); any other callable is a static jit argument: reuse the same
        object to reuse the compiled program.
      x: (B, ...) initial state, already at noise level ``sigmas[0]`` (e.g. sigma_max * z).
      sigmas: (N,) strictly decreasing positive noise levels; sampling stops at
        ``sigmas[-1]`` (no implicit step to 0). N counts timestamps: N - 1 steps.
      solver: one of ``jaxdiff.solvers.SOLVERS`` (ODE solvers: euler, heun, dpm2, ipndm,
        ipndm_v, deis, dpmpp, unipc) or ``jaxdiff.solvers.STOCHASTIC_SOLVERS``
        (euler_ancestral with ``eta=1.0, s_noise=1.0``; dpmpp_2m_sde with ``eta=1.0,
        s_noise=1.0, variant="midpoint" | "heun"``). euler and heun take EDM's churn
        (``s_churn=0.0, s_tmin=0.0, s_tmax=inf, s_noise=1.0``), stochastic when
        ``s_churn > 0``; eta = 0 makes the other two deterministic. The updates are
        k-diffusion's (sample_euler_ancestral, sample_dpmpp_2m_sde, sample_euler/heun).
      return_trajectory: also return a :class:`Trajectory` (churned steps: ``denoised``
        is D at the churned state and noise level).
      afs: analytical first step: d = x / sqrt(1 + sigma_0^2) replaces the first model call
        (it takes D(x; sigma_0) ~ 0, right for data centred at 0). With a stochastic
        solver it replaces the first call the same way (made at the churned point and
        sigma_hat for churned euler/heun); the noise is still added.
      afs_mean: with ``afs``, the data mean m (shape x.shape[1:], or broadcastable to
        it): d = (x - m) / sqrt(1 + sigma_0^2), for data that are not centred (images in
        [-1, 1] with a dark background). A zero mean is plain AFS. Without a data mean
        at hand, ``denoise_fn(zeros, sigma_max)`` is one call that estimates it.
      denoise_to_zero: finish with one more call, returning D(x_final; sigmas[-1]).
      check_finite: after the run, raise FloatingPointError naming the first step that
        produced a NaN or inf (needs concrete values: call ``sample`` outside ``jit``).
      amed: a trained :class:`jaxdiff.amed.AMEDPredictor`: AMED-Plugin around ``solver``
        (euler, ipndm, dpm2, dpmpp), or AMED-Solver with ``solver="amed"``. Its own
        training settings (AFS, base options, num_steps) apply; a mismatch is an error.
      feature_fn: with ``amed``, ``feature_fn(x, sigma (B,)) -> (B, F)`` bottleneck
        features for the predictor (None: zeros).
      key: for a stochastic solver, a PRNG key (``jax.random.key(0)``; a legacy uint32
        key works too): step i uses ``normal(split(key, N - 1)[i], x.shape)``, i.e.
        ``draw_noise(key, N, x.shape, x.dtype)[i]``. Traced: a new key never recompiles,
        and the draws do not depend on how x is sharded.
      noise: instead of ``key``, the standard normal draws themselves, (N - 1,) + x.shape
        (cast to x's dtype); step i uses ``noise[i]``.
      **options: solver options, e.g. ``max_order=3``, ``r=0.5``, ``variant="bh1"``.

    Returns:
      x_final (B, ...), or ``(x_final, Trajectory)`` with ``return_trajectory=True``.

    Raises:
      ValueError: bad sigmas, unknown solver or option, out-of-range order, a
        denoiser whose output shape differs from x, a stochastic solver without key or
        noise (or with both), a deterministic one with either, a noise array of the
        wrong shape; all before any tracing.
    """
    validate_sigmas(sigmas)
    if afs_mean is not None and not afs:
        raise ValueError("afs_mean is the data mean of the analytical first step: it needs "
                         "afs=True")
    if amed is not None or solver == "amed":
        if afs_mean is not None:
            raise ValueError("with amed, AFS and its mean come from the predictor "
                             "(jaxdiff.training.amed.train(..., afs_mean=...))")
        if key is not None or noise is not None:
            raise ValueError("amed runs deterministic solvers: it takes no key or noise")
        return _sample_amed(denoise_fn, x, sigmas, solver, amed, feature_fn, return_trajectory,
                            options)
    options_key = tuple(sorted(options.items()))
    _check_solver(solver, options_key)           # validates name and options eagerly
    x = jnp.asarray(x)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating array of shape (batch, ...), got {x.dtype} "
                         f"{x.shape}")
    fn_def, fn_leaves = callables.split(denoise_fn)
    _check_denoiser_shape(denoise_fn, x, fn_def, fn_leaves)
    if hasattr(denoise_fn, "check_sigmas") and not isinstance(sigmas, jax.core.Tracer):
        denoise_fn.check_sigmas(sigmas)          # a wrapped model's own sigma range
    solver_obj = solvers_lib.get(solver, **dict(options_key))
    key, noise = _check_randomness(solver_obj, solver, options, key, noise, x,
                                   int(jnp.shape(sigmas)[0]))
    sigmas = cast_sigmas(sigmas, x.dtype)
    _check_coefficients_fit(solver_obj, sigmas, solver)
    x_final, finite, traj = _run_jit(
        x, sigmas, fn_leaves, _check_afs_mean(afs_mean, x), key, noise, fn_def=fn_def,
        solver=solver, options=options_key,
        afs=bool(afs), denoise_to_zero=bool(denoise_to_zero),
        return_trajectory=bool(return_trajectory))
    if check_finite:
        _raise_if_not_finite(finite, sigmas, solver)
    return (x_final, traj) if return_trajectory else x_final


def _check_randomness(solver_obj: ODESolver, solver: str, options: dict, key, noise, x,
                      num_steps: int):
    """(key, noise) for the run: ValueError unless a stochastic solver has exactly one of
    them (noise of shape (num_steps - 1,) + x.shape) and a deterministic one neither."""
    described = f"{solver!r}" + (f" with {options}" if options else "")
    if not solver_obj.stochastic:
        if key is not None or noise is not None:
            raise ValueError(f"solver {described} is deterministic: it takes no key or noise "
                             "(stochastic: euler_ancestral, dpmpp_2m_sde, euler/heun with "
                             "s_churn > 0)")
        return None, None
    if (key is None) == (noise is None):
        got = ("both" if key is not None else "neither (callers that take no key, such as "
               "GITS and AMED training, run deterministic solvers only)")
        raise ValueError(f"solver {described} is stochastic: pass exactly one of key= "
                         "(e.g. jax.random.key(0)) or noise= (standard normal draws of shape "
                         f"{(num_steps - 1,) + tuple(x.shape)}); got {got}")
    if noise is not None:
        noise = jnp.asarray(noise)
        want = (num_steps - 1,) + tuple(x.shape)
        if noise.shape != want or not jnp.issubdtype(noise.dtype, jnp.floating):
            raise ValueError(f"noise must be a floating array of shape (len(sigmas) - 1,) + "
                             f"x.shape = {want}, got {noise.dtype} {noise.shape}")
        return None, noise.astype(x.dtype)
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not (typed and key.shape == ()) and not (
            not typed and key.dtype == jnp.uint32 and key.shape == (2,)):
        raise ValueError(f"key must be one PRNG key (jax.random.key(seed), or a legacy "
                         f"uint32 key of shape (2,)), got {key.dtype} {key.shape}")
    return key, None


def _check_afs_mean(afs_mean, x):
    """``afs_mean`` as an array of x's dtype broadcastable to x[0] (None stays None)."""
    if afs_mean is None:
        return None
    mean = jnp.asarray(afs_mean, x.dtype)
    try:
        jnp.broadcast_shapes(mean.shape, x.shape[1:])
        if mean.ndim > x.ndim - 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"afs_mean of shape {mean.shape} does not broadcast to one sample "
                         f"of shape {x.shape[1:]}") from None
    return mean


@functools.lru_cache(maxsize=256)
def _check_solver(solver, options_key):
    solvers_lib.get(solver, **dict(options_key))


_SHAPES_OK: dict = {}


def _check_denoiser_shape(denoise_fn, x, fn_def, fn_leaves):
    """ValueError unless denoise_fn maps (B, ...) to (B, ...); cached per signature."""
    key = (fn_def, tuple((a.shape, str(a.dtype)) for a in fn_leaves if hasattr(a, "shape")),
           x.shape, str(x.dtype))
    try:
        if key in _SHAPES_OK:
            return
    except TypeError:          # unhashable callable: check every time
        key = None
    out = jax.eval_shape(denoise_fn, jax.ShapeDtypeStruct(x.shape, x.dtype),
                         jax.ShapeDtypeStruct(x.shape[:1], x.dtype))
    if getattr(out, "shape", None) != x.shape:
        raise ValueError(f"denoise_fn must return an array of the input's shape {x.shape}, "
                         f"got {getattr(out, 'shape', type(out))}")
    if key is not None and len(_SHAPES_OK) < 1024:
        _SHAPES_OK[key] = True


def _sample_amed(denoise_fn, x, sigmas, solver, predictor, feature_fn, return_trajectory,
                 options):
    from jaxdiff import amed as amed_lib
    if predictor is None:
        raise ValueError('solver="amed" needs a trained predictor: sample(..., amed=predictor)')
    if options:
        raise ValueError(f"with amed, solver options come from the predictor; got "
                         f"{sorted(options)}")
    amed_lib.check_compatible(predictor, solver, int(jnp.shape(sigmas)[0]))
    x = jnp.asarray(x)
    sigmas = cast_sigmas(sigmas, x.dtype)
    out, traj = amed_lib.sample(denoise_fn, x, sigmas, predictor, feature_fn=feature_fn,
                                return_trajectory=return_trajectory)
    if return_trajectory:
        return out, Trajectory(traj[0], traj[1], sigmas)
    return out


def _raise_if_not_finite(finite, sigmas, solver):
    if isinstance(finite, jax.core.Tracer):
        raise ValueError("check_finite=True needs concrete values: call sample outside jit")
    bad = np.flatnonzero(~np.asarray(finite))
    if bad.size:
        i = int(bad[0])
        raise FloatingPointError(
            f"{solver}: non-finite values produced at step {i} (sigma {float(sigmas[i]):.6g} -> "
            f"{float(sigmas[i + 1]):.6g})")


def nfe(solver: str, num_steps: int, afs: bool = False, denoise_to_zero: bool = False,
        amed: bool = False, **options) -> int:
    """Number of denoiser calls of ``sample`` with ``num_steps`` timestamps.

    ``amed=True`` (or ``solver="amed"``) counts AMED's two calls per step.
    """
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2 (timestamps), got {num_steps!r}")
    if amed or solver == "amed":
        return 2 * (int(num_steps) - 1) - int(bool(afs)) + int(bool(denoise_to_zero))
    return (solvers_lib.get(solver, **options).nfe(int(num_steps)) - int(bool(afs))
            + int(bool(denoise_to_zero)))


def steps_for_nfe(solver: str, nfe_target: int, **options):
    """``(num_steps, afs)`` making exactly ``nfe_target`` calls, preferring no AFS.

    Two-call solvers (heun, dpm2) reach odd NFE only with AFS, as in the reference tables.
    Raises ValueError when no setting hits the target exactly.
    """
    for afs in (False, True):
        for n in range(2, 2 * int(nfe_target) + 3):
            if nfe(solver, n, afs=afs, **options) == nfe_target:
                return n, afs
    raise ValueError(f"{solver} cannot make exactly {nfe_target} denoiser calls")
