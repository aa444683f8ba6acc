"""Trainers on Optax train states: the EDM denoiser (:mod:`.edm`), AMED predictors
(:mod:`.amed`) and the noise-aware classifier (:mod:`.noisy_classifier`)."""
