"""Probability-flow ODE solvers in the EDM (sigma-as-time) convention.

``get(name, **options)`` builds an :class:`ODESolver`; ``SOLVERS`` lists the names.
"""
from __future__ import annotations

import inspect

from jaxdiff.solvers.base import ODESolver
from jaxdiff.solvers.deis import deis
from jaxdiff.solvers.dpmpp import dpmpp
from jaxdiff.solvers.multistep import ipndm, ipndm_v
from jaxdiff.solvers.single_step import dpm2, euler, heun
from jaxdiff.solvers.unipc import unipc

SOLVERS = {
    "euler": euler,
    "heun": heun,
    "dpm2": dpm2,
    "ipndm": ipndm,
    "ipndm_v": ipndm_v,
    "deis": deis,
    "dpmpp": dpmpp,
    "unipc": unipc,
}
# Reference-code spellings.
ALIASES = {"ddim": "euler", "dpm": "dpm2", "dpm_2": "dpm2", "dpm_pp": "dpmpp"}


def get(name: str, **options) -> ODESolver:
    """Solver by name; unknown names or options raise ValueError listing valid ones."""
    key = ALIASES.get(name, name)
    if key not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid: {sorted(SOLVERS)}")
    factory = SOLVERS[key]
    params = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"solver {key!r} does not take option(s) {unknown}; valid: {sorted(params)}")
    return factory(**options)


__all__ = ["ODESolver", "SOLVERS", "get", "euler", "heun", "dpm2", "ipndm", "ipndm_v", "deis",
           "dpmpp", "unipc"]
