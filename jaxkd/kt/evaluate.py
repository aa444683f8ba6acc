"""KT's evaluation: each held-out network's own frozen Begin/Last sandwich a compressed
block, and its test accuracy is measured (vmapped over networks).

Reference blocks (:func:`baselines`): the network's own BasicBlock (the ceiling), its
directly trained SimpleBlockNoBn (stage 2), a fresh random one ("Random Init", the
paper's baseline), the mean of the training pairs' compressed blocks (a translator that
ignores its input) and a ridge regression from the translator's input to its target
(:mod:`jaxkd.kt.ridge`, a linear translator).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.kt import nets, pairs, ridge

__all__ = ["baselines", "evaluate_blocks", "network_accuracy", "summary"]


def network_accuracy(variables, images, labels, *, middle: str, batch_size: int = 1000):
    """Test accuracy in [0, 1] of one Begin -> ``middle`` -> Last network (eval mode).

    Args:
      variables: {"begin", "middle", "last"} Flax variables of one network.
      images: (N, 28, 28, 1) float32 in [0, 1]; labels: (N,) int32.
      middle: "basic" or "simple".
      batch_size: examples per ``lax.scan`` step (the set is padded, padding masked).
    """
    n = images.shape[0]
    bs = min(int(batch_size), n)
    nb = -(-n // bs)
    pad = nb * bs - n
    x = jnp.pad(images, ((0, pad),) + ((0, 0),) * 3).reshape((nb, bs) + images.shape[1:])
    y = jnp.pad(labels, (0, pad), constant_values=-1).reshape(nb, bs)

    def body(c, xy):
        logits = nets.classifier_apply(variables, xy[0], middle=middle)[0]
        return c + jnp.sum(jnp.argmax(logits, -1) == xy[1], dtype=jnp.int32), None

    correct, _ = jax.lax.scan(body, jnp.zeros((), jnp.int32), (x, y))
    return correct / n


@functools.partial(jax.jit, static_argnames=("middle", "batch_size"))
def evaluate_blocks(begin, last, middle_vars, images, labels, *, middle: str = "simple",
                    batch_size: int = 1000):
    """Accuracies (M,) of M networks, each its own frozen Begin/Last around a middle block.

    Args:
      begin, last: Flax variables with a leading axis M (the held-out networks).
      middle_vars: the middle blocks' variables, leading axis M (for "simple":
        ``{"params": ...}``).
      images, labels: the test set.
    """
    acc = lambda b, m, t: network_accuracy({"begin": b, "middle": m, "last": t}, images,
                                           labels, middle=middle, batch_size=batch_size)
    return jax.vmap(acc)(begin, middle_vars, last)


def summary(acc) -> dict:
    """Mean/min/max/std in percent and the paper's 20-bin (5 %) histogram."""
    a = 100.0 * np.asarray(acc, np.float64)
    hist = np.bincount(np.minimum((a // 5).astype(int), 19), minlength=20)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std()), "hist_5pct": hist.tolist()}


@jax.jit
def _random_simple(keys):
    """Fresh SimpleBlockNoBn params (PyTorch-style init), one per key (leading axis)."""
    return jax.vmap(nets.init_simple)(keys)


def baselines(config, train_pairs, val_pairs, test_images, test_labels) -> dict:
    """Accuracy summaries of the reference blocks on the held-out networks.

    The mean block and the ridge map see the translator's arrays, in the hidden-channel
    order of ``config.canonical`` (:func:`jaxkd.kt.pairs.canonical_pairs`).

    Returns:
      dict: ``large`` (each network's own BasicBlock), ``direct`` (its directly trained
      SimpleBlockNoBn), ``random_init`` (a fresh random SimpleBlockNoBn, keyed by
      ``seed``), ``mean_train_block`` (the mean of the training pairs' compressed blocks),
      ``ridge`` (the blocks a ridge regression fitted on the training pairs predicts from
      each network's BasicBlock; its ``fit`` entry holds the chosen strength and the
      held-out MSEs, see :func:`jaxkd.kt.ridge.select`).
    """
    bsz = int(config.eval_batch_size)
    m = val_pairs["begin"]["params"]["conv"]["kernel"].shape[0]
    ev = functools.partial(evaluate_blocks, val_pairs["begin"], val_pairs["last"],
                           images=test_images, labels=test_labels, batch_size=bsz)
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 3), m)
    rand = {"params": _random_simple(keys)}
    canonical = pairs.canonical_mode(config)
    train_c = pairs.canonical_pairs(train_pairs, canonical)
    mean_block = jax.tree.map(lambda x: np.broadcast_to(np.mean(x, 0), (m,) + x.shape[1:]),
                              train_c["simple"])
    model, fit = ridge.select(*pairs.pair_arrays(train_c))
    pred = ridge.predict(model, pairs.pair_arrays(val_pairs, canonical)[0])
    lin = jax.vmap(nets.simple_from_output)(jnp.asarray(pred.reshape(m, 36, 9)))
    return {"large": summary(ev(val_pairs["basic"], middle="basic")),
            "direct": summary(ev({"params": val_pairs["simple"]})),
            "random_init": summary(ev(rand)),
            "mean_train_block": summary(ev({"params": mean_block})),
            "ridge": dict(summary(ev({"params": lin})), fit=fit)}
