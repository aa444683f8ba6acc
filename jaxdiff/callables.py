"""Callables as jit arguments: a pytree callable is split into traced leaves + static rest.

A denoiser such as ``jax.tree_util.Partial(apply_fn, params)`` is a pytree whose leaves
are arrays. Passing those leaves as traced jit arguments means new parameters never
recompile and large data never become compile-time constants; the tree structure (which
holds ``apply_fn``) is the static, hashable part. Any other callable is static as a whole:
reuse the same object to reuse the compiled program.

    static, leaves = split(denoise_fn)           # outside jit
    f = jax.jit(run, static_argnames="static")   # run(leaves, ..., static=static)
    denoise_fn = join(static, leaves)            # inside the jitted function

Used by :func:`jaxdiff.sample`, :mod:`jaxdiff.amed`, :mod:`jaxdiff.guidance` and
:mod:`jaxdiff.conditioning`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np

__all__ = ["split", "join"]


def split(fn: Callable | None) -> tuple[Any, list]:
    """``(static, leaves)`` of ``fn``.

    Returns:
      ``(treedef, array leaves)`` when ``fn`` is a pytree whose leaves are all arrays;
      otherwise ``(fn, [])`` (``None`` gives ``(None, [])``).
    """
    leaves, treedef = jax.tree.flatten(fn)
    if leaves and all(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves):
        return treedef, leaves
    return fn, []


def join(static: Any, leaves: list) -> Callable | None:
    """Inverse of :func:`split` (also inside jit, with traced leaves)."""
    return jax.tree.unflatten(static, leaves) if leaves else static
