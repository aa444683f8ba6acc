"""jaxdiff: probability-flow ODE sampling of diffusion models in the EDM convention.

    import jaxdiff
    sigmas = jaxdiff.schedules.get("polynomial", num_steps=6)
    x0 = jaxdiff.sample(denoise_fn, sigmas[0] * z, sigmas, solver="ipndm")

The library is the top level (sampling, solvers, schedules, denoisers, model wrappers,
geometry, gits, amed, guidance, conditioning, detection, Inception FID/KID, diffusers
weight import); ``jaxdiff.models`` holds the
Flax networks, ``jaxdiff.training`` their trainers and ``jaxdiff.experiments`` the jobs
behind ``python -m jaxdiff.<job>``. Run infrastructure (logs, checkpoints, data) is ``jaxinfra``.
"""
from jaxdiff import (
                     amed,
                     callables,
                     conditioning,
                     denoisers,
                     detectors,
                     geometry,
                     gits,
                     guidance,
                     hub,
                     metrics,
                     schedules,
                     solvers,
                     wrappers,
)
from jaxdiff.sampling import Trajectory, draw_noise, nfe, sample, steps_for_nfe, validate_sigmas

__all__ = ["sample", "draw_noise", "nfe", "steps_for_nfe", "Trajectory", "validate_sigmas",
           "schedules", "solvers", "gits", "geometry", "amed", "callables", "denoisers",
           "guidance", "conditioning", "detectors", "wrappers", "hub", "metrics"]
__version__ = "0.1.0"
