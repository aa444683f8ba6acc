"""Probability-flow ODE solvers and stochastic samplers in the EDM (sigma-as-time) convention.

``get(name, **options)`` builds an :class:`ODESolver`. ``SOLVERS`` lists the ODE solvers
(deterministic; euler and heun become stochastic with EDM's ``s_churn > 0``),
``STOCHASTIC_SOLVERS`` the reverse-SDE samplers that add fresh noise every step (with
``eta > 0``, their default). Stochastic solvers need a ``key`` or ``noise`` in
:func:`jaxdiff.sample`; callers that take neither reject them.
"""
from __future__ import annotations

import inspect

from jaxdiff.solvers.base import ODESolver
from jaxdiff.solvers.deis import deis
from jaxdiff.solvers.dpmpp import dpmpp
from jaxdiff.solvers.multistep import ipndm, ipndm_v
from jaxdiff.solvers.single_step import dpm2, euler, heun
from jaxdiff.solvers.stochastic import dpmpp_2m_sde, euler_ancestral
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
STOCHASTIC_SOLVERS = {
    "euler_ancestral": euler_ancestral,
    "dpmpp_2m_sde": dpmpp_2m_sde,
}
# Reference-code spellings.
ALIASES = {"ddim": "euler", "dpm": "dpm2", "dpm_2": "dpm2", "dpm_pp": "dpmpp"}


def get(name: str, **options) -> ODESolver:
    """Solver by name; unknown names or options raise ValueError listing valid ones."""
    key = ALIASES.get(name, name)
    factory = SOLVERS.get(key, STOCHASTIC_SOLVERS.get(key))
    if factory is None:
        raise ValueError(f"unknown solver {name!r}; valid: "
                         f"{sorted(SOLVERS) + sorted(STOCHASTIC_SOLVERS)}")
    params = inspect.signature(factory).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(
            f"solver {key!r} does not take option(s) {unknown}; valid: {sorted(params)}")
    return factory(**options)


__all__ = ["ODESolver", "SOLVERS", "STOCHASTIC_SOLVERS", "get", "euler", "heun", "dpm2",
           "ipndm", "ipndm_v", "deis", "dpmpp", "unipc", "euler_ancestral", "dpmpp_2m_sde"]
