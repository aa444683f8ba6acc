"""jaxdiff: probability-flow ODE sampling of diffusion models in the EDM convention.

    import jaxdiff
    sigmas = jaxdiff.schedules.get("polynomial", num_steps=6)
    x0 = jaxdiff.sample(denoise_fn, sigmas[0] * z, sigmas, solver="ipndm")
"""
from jaxdiff import (amed, conditioning, data, denoisers, detect, geometry, gits, guidance,
                     noisy_classifier, schedules, solvers)
from jaxdiff.sampling import Trajectory, nfe, sample, steps_for_nfe, validate_sigmas

__all__ = ["sample", "nfe", "steps_for_nfe", "Trajectory", "validate_sigmas", "schedules",
           "solvers", "gits", "geometry", "amed", "data", "denoisers", "guidance",
           "conditioning", "noisy_classifier", "detect"]
__version__ = "0.1.0"
