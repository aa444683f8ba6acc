"""A noise-aware classifier p(y | x_sigma, sigma) for classifier guidance.

Classifier guidance (:func:`jaxdiff.guidance.classifier`) needs the gradient of
``log p(y | x; sigma)`` at the *noisy* state x = x_0 + sigma * eps, for every sigma the
sampler visits (up to sigma_max = 80 in data units). A classifier trained on clean images
is useless there, so this one is trained on noised data and told the noise level:

* the input is scaled by EDM's ``c_in = 1 / sqrt(sigma^2 + sigma_data^2)`` (unit
  variance at every sigma, :func:`jaxdiff.models.unet.edm_scalings`) and a constant channel
  holding ``c_noise = log(sigma) / 4`` is appended;
* the convolutional trunk is :class:`jaxdiff.frechet.Classifier` (its penultimate features);
* those features are modulated (FiLM: ``h * (1 + a) + b``) by an MLP of the sinusoidal
  embedding of ``c_noise`` (the U-Net's noise embedding), then mapped to logits.

Training (:func:`jaxdiff.training.noisy_classifier.train`): Adam on softmax cross-entropy
of noised images, with exact resume. :func:`log_prob_fn` returns the
``log_prob_fn(x (B, H, W, C), sigma (B,)) -> (B, num_classes)`` that
:func:`jaxdiff.guidance.classifier` expects, as a ``Partial`` whose leaves are the
parameters (new parameters reuse the compiled sampler).

Units: images in [-1, 1] (data units), sigma in data units, log-probabilities in nats.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.tree_util import Partial

from jaxdiff import frechet
from jaxdiff.models import unet

__all__ = ["NoisyClassifier", "NoisyClassifierState", "log_prob_fn", "logits",
           "accuracy_vs_sigma"]

class NoisyClassifier(nn.Module):
    """Logits of p(y | x_sigma, sigma).

    Attributes:
      num_classes: number of classes.
      width: channels of the trunk's first conv (:class:`jaxdiff.frechet.Classifier`).
      features: width of the trunk's penultimate layer and of the FiLM-modulated layer.
      emb_channels: width of the sinusoidal noise embedding.
      sigma_data: data standard deviation of the EDM input scaling.
    """
    num_classes: int = 10
    width: int = 32
    features: int = 64
    emb_channels: int = 32
    sigma_data: float = 0.5

    @nn.compact
    def __call__(self, x, sigma):
        """(B, H, W, C) noisy images, (B,) noise levels -> (B, num_classes) float32 logits."""
        if x.ndim != 4:
            raise ValueError(f"x must have shape (B, H, W, C), got {tuple(x.shape)}")
        if jnp.shape(sigma) != (x.shape[0],):
            raise ValueError(f"sigma must have shape ({x.shape[0]},), got {jnp.shape(sigma)}")
        _, _, c_in, c_noise = unet.edm_scalings(sigma.astype(jnp.float32), self.sigma_data)
        h = x.astype(jnp.float32) * c_in[:, None, None, None]
        noise_map = jnp.broadcast_to(c_noise[:, None, None, None], h.shape[:3] + (1,))
        f = frechet.Classifier(num_classes=self.num_classes, width=self.width,
                           features=self.features, name="trunk")(
            jnp.concatenate([h, noise_map], axis=-1), return_features=True)
        emb = unet._noise_embedding(c_noise, self.emb_channels, "positional", 1.0)
        emb = nn.silu(nn.Dense(self.features, name="map_noise")(emb))
        film = nn.Dense(2 * self.features, kernel_init=nn.initializers.zeros,
                        name="film")(emb)
        a, b = jnp.split(film, 2, axis=-1)
        h = nn.relu(nn.Dense(self.features, name="hidden")(f) * (1.0 + a) + b)
        return nn.Dense(self.num_classes, name="logits")(h)


@struct.dataclass
class NoisyClassifierState:
    """A trained noise-aware classifier.

    Attributes:
      model: the :class:`NoisyClassifier` (static).
      params: its parameters (a pytree).
      image_shape: (H, W, C) it was trained on (static).
    """
    model: NoisyClassifier = struct.field(pytree_node=False)
    params: Any = None
    image_shape: tuple = struct.field(pytree_node=False, default=())


# --------------------------------------------------------------------------- inference
@functools.partial(jax.jit, static_argnames=("model",))
def _apply(model, params, x, sigma):
    return model.apply({"params": params}, x, sigma)


def _sigma_b(x, sigma):
    return jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (x.shape[0],))


def _check_x(state: NoisyClassifierState, x):
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(state.image_shape):
        raise ValueError(f"x must have shape (B, {', '.join(map(str, state.image_shape))}) "
                         f"for this classifier, got {tuple(x.shape)}")


def logits(state: NoisyClassifierState, x, sigma):
    """(B, num_classes) float32 logits of (B, H, W, C) images at noise level(s) sigma."""
    x = jnp.asarray(x)
    _check_x(state, x)
    return _apply(state.model, state.params, x, _sigma_b(x, sigma))


@dataclasses.dataclass(frozen=True)
class _LogProb:
    """Static part of :func:`log_prob_fn` (hashable; equal for equal models)."""
    model: NoisyClassifier
    image_shape: tuple

    def __call__(self, params, x, sigma):
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.image_shape))})"
                             f" for this classifier, got {tuple(x.shape)}")
        lg = _apply(self.model, params, x, _sigma_b(x, sigma))
        return jax.nn.log_softmax(lg, axis=-1).astype(x.dtype)


def log_prob_fn(state: NoisyClassifierState) -> Partial:
    """``log_prob_fn(x (B, H, W, C), sigma (B,) or scalar) -> (B, num_classes)`` log p(y | x).

    Differentiable in x; the parameters are the leaves of the returned ``Partial``. Pass
    it to :func:`jaxdiff.guidance.classifier`.
    """
    return Partial(_LogProb(state.model, tuple(state.image_shape)), state.params)


def accuracy_vs_sigma(state: NoisyClassifierState, images, labels, sigmas, *, key,
                      batch_size: int = 512) -> list:
    """Accuracy of argmax p(y | x0 + sigma z, sigma) for each sigma in ``sigmas``.

    Args:
      images: (N, H, W, C) clean images; labels: (N,) ints; sigmas: noise levels.
      key: PRNG key of the noise (``fold_in(key, i)`` for the i-th sigma).

    Returns:
      list of floats, one accuracy per sigma.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    _check_x(state, images)
    out = []
    for i, s in enumerate(np.asarray(sigmas, np.float64).reshape(-1)):
        z = np.asarray(jax.random.normal(jax.random.fold_in(key, i), images.shape,
                                         jnp.float32))
        x = images + np.float32(s) * z
        pred = np.concatenate([np.argmax(np.asarray(logits(state, x[lo:lo + batch_size], s)),
                                         axis=1)
                               for lo in range(0, x.shape[0], batch_size)])
        out.append(float(np.mean(pred == labels)))
    return out
