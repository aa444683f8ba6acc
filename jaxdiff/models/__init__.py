"""Flax models: the EDM U-Net (:mod:`.unet`) and the noise-aware classifier
(:mod:`.noisy_classifier`)."""
