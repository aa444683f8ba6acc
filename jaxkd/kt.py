"""Knowledge Translation (KT; Sun et al., arXiv 2401.05772): learn to map the parameters of
a large block to those of a compressed one.

    python -m jaxkd.kt --config=configs/kd/kt.py:cpu --workdir=runs/kt_cpu

Three phases, all in this module:

1. **Pair generation** (:func:`train_pair`, :func:`generate_pairs`). One "pair" trains a
   classifier ``Begin -> BasicBlock -> Last`` on 28x28 grey images (stage 1: SGD with
   momentum, BatchNorm in training mode, random horizontal flips), then freezes Begin/Last
   (BatchNorm on its running statistics) and trains a fresh ``SimpleBlockNoBn`` in the
   middle (stage 2, same optimiser). Pairs are independent, so thousands train at once:
   ``jax.vmap`` over their keys, ``lax.scan`` over SGD steps, and, with several devices,
   the network axis sharded over a ``Mesh``. Batches are drawn with replacement, the
   indices depending only on (pair key, step) (the paper shuffles epochs).
2. **Translator training** (:func:`train_translator`): an MLP-Mixer reads the BasicBlock's
   two kernels as 72 tokens x 9 and regresses the SimpleBlock's two kernels (MSE), with
   optional masking/noise augmentation (:func:`augment`) of the input (``t``), the target
   (``s``) or ``both``. Adam, per-epoch cosine annealing (PyTorch ``CosineAnnealingLR``
   stepped each epoch), reshuffled epochs; the last incomplete batch is dropped.
3. **Evaluation** (:func:`evaluate_blocks`): each held-out network's own frozen Begin/Last
   sandwich a compressed block, and its test accuracy is measured (vmapped over networks).
   Compressed blocks compared: translated, directly trained (stage 2), a fresh random one
   ("Random Init", the paper's baseline), and the mean of the training pairs' compressed
   blocks (a translator that ignores its input); the large network's own accuracy is the
   ceiling.

Writes to ``workdir``: ``pairs/{train,val}_<chunk>.npz`` (generated pairs, one file per
chunk; an interrupted generation resumes at the first missing chunk),
``checkpoints/<epoch>/`` (Orbax: translator TrainState + meta; resumed exactly),
``metrics.jsonl`` + ``tb/`` (train loss per epoch, eval accuracies), ``results.json``.
"""
from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct, traverse_util

from jaxdiff import data as data_lib
from jaxdiff import runlog
from jaxkd import kt_nets

__all__ = ["PairConfig", "AugmentConfig", "TranslatorState", "train_pair", "generate_pairs",
           "augment", "translator_loss", "train_translator", "evaluate_blocks",
           "network_accuracy", "load_data", "run", "MASK_TARGETS", "DATASETS"]

MASK_TARGETS = ("t", "s", "both")
DATASETS = ("fashion_mnist", "mnist")
_IMAGE_SHAPE = (28, 28, 1)


# =========================================================================== data
def load_data(config):
    """Train and test images (N, 28, 28, 1) float32 in [0, 1] and labels (N,) int32.

    ``config.dataset``: "fashion_mnist" (offline, Debian IDX files via
    :func:`jaxdiff.data.load_fashion_mnist`) or "mnist" (tensorflow_datasets; needs a
    network). A missing data set raises the loader's error, which says how to get it.
    """
    name = str(config.dataset)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)}")
    out = []
    for split, n in (("train", config.max_train_examples), ("test", config.max_test_examples)):
        images, labels = data_lib.load(name, split=split, max_examples=int(n) or None)
        if tuple(images.shape[1:]) != _IMAGE_SHAPE:
            raise ValueError(f"{name!r} images have shape {images.shape[1:]}; KT's networks "
                             f"need {_IMAGE_SHAPE}")
        # The loaders give [-1, 1]; the paper feeds ToTensor's [0, 1] without normalising.
        out += [np.asarray((images + 1.0) * 0.5, np.float32), np.asarray(labels, np.int32)]
    return tuple(out)


# =========================================================================== pairs
class PairConfig(NamedTuple):
    """Static settings of one pair's training (hashable: a jit static argument).

    Paper: batch 128, 10 epochs per stage (4,690 steps on 60k images), SGD lr 0.01,
    momentum 0.9, horizontal flips.
    """
    batch_size: int = 128
    steps_large: int = 4690     # stage 1: Begin + BasicBlock + Last
    steps_small: int = 4690     # stage 2: SimpleBlockNoBn between the frozen Begin/Last
    lr: float = 0.01
    momentum: float = 0.9
    flip: bool = True


def _batch(key, images, labels, batch_size, flip):
    """A batch drawn with replacement, randomly flipped left-right.

    One ``random.bits`` call gives both the indices (bits mod N; the bias, < N / 2^32,
    is negligible) and the flips: a single PRNG site per step keeps compile time low.
    """
    bits = jax.random.bits(key, (2, batch_size), jnp.uint32)
    idx = (bits[0] % jnp.uint32(images.shape[0])).astype(jnp.int32)
    x, y = images[idx], labels[idx]
    if flip:
        f = (bits[1] & 1).astype(bool)[:, None, None, None]
        x = jnp.where(f, x[:, :, ::-1], x)
    return x, y


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_pair(key, images, labels, *, cfg: PairConfig) -> dict:
    """Trains one (large, compressed) pair; pure, so ``jax.vmap`` over ``key`` trains many.

    Args:
      key: PRNG key of this pair (init, data order, flips).
      images: (N, 28, 28, 1) float32 in [0, 1]; labels: (N,) int32.
      cfg: the pair recipe.

    Returns:
      dict with ``begin``, ``basic``, ``last`` (Flax variables of the trained large
      network: params and batch_stats) and ``simple`` (params of the compressed block
      trained between the frozen Begin/Last), plus the scalar final-step losses
      ``loss_large`` and ``loss_small`` (float32).
    """
    k_init, k_simple, k_data1, k_data2 = jax.random.split(key, 4)
    tx = optax.sgd(cfg.lr, momentum=cfg.momentum)
    v = kt_nets.init_classifier(k_init, "basic")

    def loss_large(params, stats, x, y):
        variables = {b: {"params": params[b], "batch_stats": stats[b]} for b in params}
        logits, new = kt_nets.classifier_apply(variables, x, middle="basic", train=True)
        return _xent(logits, y), {b: new[b]["batch_stats"] for b in new}

    def step_large(carry, i):
        params, stats, opt = carry
        x, y = _batch(jax.random.fold_in(k_data1, i), images, labels, cfg.batch_size,
                      cfg.flip)
        (loss, stats), g = jax.value_and_grad(loss_large, has_aux=True)(params, stats, x, y)
        upd, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, upd), stats, opt), loss

    params = {b: v[b]["params"] for b in v}
    stats = {b: v[b]["batch_stats"] for b in v}
    (params, stats, _), losses1 = jax.lax.scan(
        step_large, (params, stats, tx.init(params)), jnp.arange(cfg.steps_large))
    large = {b: {"params": params[b], "batch_stats": stats[b]} for b in params}
    large = {"begin": large["begin"], "middle": large["middle"], "last": large["last"]}

    # Stage 2: Begin/Last frozen in evaluation mode; only the compressed block learns.
    h = jnp.zeros((1, 14, 14, 6), jnp.float32)
    simple = kt_nets.SimpleBlockNoBn().init(k_simple, h)["params"]

    def loss_small(sp, x, y):
        variables = dict(large, middle={"params": sp})
        return _xent(kt_nets.classifier_apply(variables, x, middle="simple")[0], y)

    def step_small(carry, i):
        sp, opt = carry
        x, y = _batch(jax.random.fold_in(k_data2, i), images, labels, cfg.batch_size,
                      cfg.flip)
        loss, g = jax.value_and_grad(loss_small)(sp, x, y)
        upd, opt = tx.update(g, opt, sp)
        return (optax.apply_updates(sp, upd), opt), loss

    (simple, _), losses2 = jax.lax.scan(step_small, (simple, tx.init(simple)),
                                        jnp.arange(cfg.steps_small))
    last = lambda l: l[-1] if l.shape[0] else jnp.float32(jnp.nan)
    return {"begin": large["begin"], "basic": large["middle"], "last": large["last"],
            "simple": simple, "loss_large": last(losses1), "loss_small": last(losses2)}


@functools.partial(jax.jit, static_argnames=("cfg",))
def _train_pairs(keys, images, labels, *, cfg):
    return jax.vmap(functools.partial(train_pair, cfg=cfg), in_axes=(0, None, None))(
        keys, images, labels)


def generate_pairs(key, num: int, images, labels, *, cfg: PairConfig) -> dict:
    """``num`` pairs trained at once (vmap); see :func:`train_pair` for the leaves,
    each with a leading axis of size ``num``.

    Pair i uses ``jax.random.fold_in(key, i)``, so a pair does not depend on how the
    pairs are chunked. With several devices and ``num`` divisible by their count, the
    pair axis is sharded over a 1-D mesh ("nets"); images are replicated.
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num))
    n_dev = jax.device_count()
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    if n_dev > 1 and num % n_dev == 0:
        from jax.sharding import NamedSharding, PartitionSpec as P
        mesh = jax.make_mesh((n_dev,), ("nets",),
                             axis_types=(jax.sharding.AxisType.Auto,))
        keys = jax.device_put(keys, NamedSharding(mesh, P("nets")))
        images = jax.device_put(images, NamedSharding(mesh, P()))
        labels = jax.device_put(labels, NamedSharding(mesh, P()))
    return _train_pairs(keys, images, labels, cfg=cfg)


def _save_npz(path, tree):
    flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, path)  # Atomic: a chunk file is complete or absent.


def _load_npz(path):
    with np.load(path) as f:
        return traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")


def pair_set(config, split: str, images, labels, workdir: str, *, progress=True) -> dict:
    """Generates (or loads the saved chunks of) the ``split`` pairs ("train" or "val").

    Train pair i of chunk c uses key fold_in(fold_in(seed_key, 0 or 1), c * chunk + i).
    """
    from tqdm import tqdm
    p = config.pairs
    num = int(p.num_train if split == "train" else p.num_val)
    chunk = max(1, min(int(p.chunk_size), num))
    cfg = pair_config(config)
    base = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)),
                              {"train": 0, "val": 1}[split])
    folder = os.path.join(workdir, "pairs")
    os.makedirs(folder, exist_ok=True)
    parts = []
    starts = list(range(0, num, chunk))
    for c, lo in enumerate(tqdm(starts, desc=f"{split} pairs (x{chunk})", unit="chunk",
                                disable=not progress)):
        path = os.path.join(folder, f"{split}_{c:05d}.npz")
        n = min(chunk, num - lo)
        if os.path.exists(path):
            part = _load_npz(path)
        else:
            key = jax.random.fold_in(base, c)
            part = jax.device_get(generate_pairs(key, n, images, labels, cfg=cfg))
            _save_npz(path, part)
        parts.append(part)
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


def pair_config(config) -> PairConfig:
    p = config.pairs
    return PairConfig(batch_size=int(p.batch_size), steps_large=int(p.steps_large),
                      steps_small=int(p.steps_small), lr=float(p.lr),
                      momentum=float(p.momentum), flip=bool(p.flip))


# =========================================================================== translation
class AugmentConfig(NamedTuple):
    """Limited-data augmentation (static). ``*_target``: "t" (the translator's input,
    large-model params), "s" (the target, compressed params) or "both"."""
    mask_prob: float = 0.0
    mask_target: str = "t"
    noise_std: float = 0.0
    noise_target: str = "t"


def _check_target(name, value):
    if value not in MASK_TARGETS:
        raise ValueError(f"{name} must be one of {list(MASK_TARGETS)}, got {value!r}")


def augment(key, tokens, targets, cfg: AugmentConfig):
    """Random masking then Gaussian noise, each on the input, target or both.

    Masking zeroes each entry independently with probability ``mask_prob``; noise adds
    ``noise_std * N(0, 1)``. Independent draws for input and target.

    Args:
      key: PRNG key.
      tokens: (B, 72, 9) translator inputs; targets: (B, 36, 9) translator targets.
      cfg: the augmentation settings.

    Returns:
      (tokens, targets) of the same shapes and dtypes.
    """
    _check_target("mask_target", cfg.mask_target)
    _check_target("noise_target", cfg.noise_target)
    if cfg.mask_prob <= 0 and cfg.noise_std <= 0:
        return tokens, targets
    # One uniform draw for everything (a single PRNG site compiles much faster on CPU):
    # rows = (mask input, mask target, noise input, noise target) over the flattened
    # concatenation of tokens and targets; u is uniform on (-1, 1) (as inside
    # jax.random.normal): masks keep u >= 2p - 1, normals are sqrt(2) erfinv(u).
    nt = tokens[0].size
    flat = jnp.concatenate([tokens.reshape(tokens.shape[0], -1),
                            targets.reshape(targets.shape[0], -1)], axis=1)
    lo = jnp.nextafter(jnp.array(-1.0, flat.dtype), jnp.array(0.0, flat.dtype))
    u = jax.random.uniform(key, (4,) + flat.shape, flat.dtype, minval=lo, maxval=1.0)
    split = lambda a: (a[:, :nt].reshape(tokens.shape), a[:, nt:].reshape(targets.shape))
    on = lambda target, which: target in (which, "both")
    if cfg.mask_prob > 0:
        (m_t, _), (_, m_s) = split(u[0]), split(u[1])
        if on(cfg.mask_target, "t"):
            tokens = jnp.where(m_t < 2 * cfg.mask_prob - 1, jnp.zeros_like(tokens), tokens)
        if on(cfg.mask_target, "s"):
            targets = jnp.where(m_s < 2 * cfg.mask_prob - 1, jnp.zeros_like(targets),
                                targets)
    if cfg.noise_std > 0:
        normal = lambda v: jnp.sqrt(2.0).astype(v.dtype) * jax.scipy.special.erfinv(v)
        (n_t, _), (_, n_s) = split(u[2]), split(u[3])
        if on(cfg.noise_target, "t"):
            tokens = tokens + cfg.noise_std * normal(n_t)
        if on(cfg.noise_target, "s"):
            targets = targets + cfg.noise_std * normal(n_s)
    return tokens, targets


def pair_arrays(pairs):
    """Translator inputs (P, 72, 9) and targets (P, 36, 9) from a pair set."""
    tokens = jax.vmap(kt_nets.basic_tokens)(pairs["basic"]["params"])
    kernels = jax.vmap(kt_nets.simple_to_kernels)(pairs["simple"])
    targets = jax.vmap(kt_nets.kernels_to_output)(*kernels)
    return np.asarray(tokens, np.float32), np.asarray(targets, np.float32)


class TranslatorState(struct.PyTreeNode):
    """Translator training state (Orbax saves it whole).

    Attributes:
      step: () int32 optimizer updates done.
      epoch: () int32 epochs done.
      params: the Mixer's parameters.
      opt_state: the optax state.
    """
    step: jax.Array
    epoch: jax.Array
    params: Any
    opt_state: Any


def make_translator(config) -> kt_nets.MLPMixer:
    t = config.translator
    return kt_nets.MLPMixer(num_layers=int(t.num_layers), s_dim=72, c_dim=int(t.c_dim),
                            hidden_s_dim=int(t.hidden_s_dim),
                            hidden_c_dim=int(t.hidden_c_dim), dropout=float(t.dropout))


@functools.lru_cache(maxsize=8)
def _optimizer(name: str, lr: float, wd: float, grad_clip: float, epochs: int,
               steps_per_epoch: int, schedule: str):
    if schedule == "cosine":  # PyTorch CosineAnnealingLR(T_max=epochs), stepped per epoch.
        lr_fn = lambda s: (lr * 0.5 * (1 + jnp.cos(jnp.pi * (s // steps_per_epoch) / epochs))
                           ).astype(jnp.float32)
    elif schedule == "constant":
        lr_fn = lr
    else:
        raise ValueError(f"unknown translator.schedule {schedule!r}; valid: cosine, "
                         "constant")
    if name == "adam":   # PyTorch Adam's weight_decay is L2 added to the gradient.
        opt = optax.chain(optax.add_decayed_weights(wd), optax.adam(lr_fn))
    elif name == "sgd":
        opt = optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr_fn, momentum=0.9))
    else:
        raise ValueError(f"unknown translator.optimizer {name!r}; valid: adam, sgd")
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    return optax.chain(*parts, opt)


def translator_loss(model, params, tokens, targets, key, train: bool):
    """Mean squared error between predicted and target compressed kernels.

    The paper averages the MSE of conv1 and conv2, which have the same size (162
    entries), so this equals the MSE over the (B, 36, 9) output.
    """
    pred = model.apply({"params": params}, tokens, train=train, rngs={"dropout": key})
    return jnp.mean(jnp.square(pred - targets))


@functools.partial(jax.jit, static_argnames=("model", "tx", "batch_size", "aug"),
                   donate_argnums=(0,))
def train_epoch(state: TranslatorState, tokens, targets, key, *, model, tx, batch_size: int,
                aug: AugmentConfig):
    """One epoch (a reshuffle, then ``P // batch_size`` Adam steps in a ``lax.scan``).

    Args:
      state: donated translator state.
      tokens: (P, 72, 9), targets (P, 36, 9) float32 training pairs.
      key: the run's key; the epoch's key is fold_in(key, state.epoch) (exact resume).

    Returns:
      (state, mean training loss of the epoch).
    """
    k_perm, ek = jax.random.split(jax.random.fold_in(key, state.epoch))
    steps = tokens.shape[0] // batch_size
    perm = jax.random.permutation(k_perm, tokens.shape[0])
    perm = perm[:steps * batch_size].reshape(steps, batch_size)

    def step(st, xs):
        i, idx = xs
        k_aug, k_drop = jax.random.split(jax.random.fold_in(ek, i))
        x, y = augment(k_aug, tokens[idx], targets[idx], aug)
        loss, g = jax.value_and_grad(lambda p: translator_loss(model, p, x, y, k_drop,
                                                               True))(st.params)
        upd, opt = tx.update(g, st.opt_state, st.params)
        return st.replace(step=st.step + 1, params=optax.apply_updates(st.params, upd),
                          opt_state=opt), loss

    state, losses = jax.lax.scan(step, state, (jnp.arange(steps), perm))
    return state.replace(epoch=state.epoch + 1), jnp.mean(losses)


@functools.partial(jax.jit, static_argnames=("model",))
def translate(model, params, tokens):
    """(P, 72, 9) tokens -> SimpleBlockNoBn params with a leading axis P."""
    out = model.apply({"params": params}, tokens, train=False)
    return jax.vmap(kt_nets.simple_from_output)(out)


# =========================================================================== evaluation
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
        logits = kt_nets.classifier_apply(variables, xy[0], middle=middle)[0]
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
    acc = lambda b, m, l: network_accuracy({"begin": b, "middle": m, "last": l}, images,
                                           labels, middle=middle, batch_size=batch_size)
    return jax.vmap(acc)(begin, middle_vars, last)


def _summary(acc) -> dict:
    """Mean/min/max/std in percent and the paper's 20-bin (5 %) histogram."""
    a = 100.0 * np.asarray(acc, np.float64)
    hist = np.bincount(np.minimum((a // 5).astype(int), 19), minlength=20)
    return {"mean": float(a.mean()), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std()), "hist_5pct": hist.tolist()}


# =========================================================================== driver
def check_config(config):
    """Raises a ValueError naming the bad option and the valid ones, before any work."""
    if str(config.dataset) not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; valid: {list(DATASETS)}")
    a = config.augment
    _check_target("augment.mask_target", a.mask_target)
    _check_target("augment.noise_target", a.noise_target)
    if not 0.0 <= float(a.mask_prob) < 1.0:
        raise ValueError(f"augment.mask_prob must be in [0, 1), got {a.mask_prob}")
    if float(a.noise_std) < 0:
        raise ValueError(f"augment.noise_std must be >= 0, got {a.noise_std}")
    t = config.translator
    _optimizer(str(t.optimizer), 1.0, 0.0, 0.0, 1, 1, str(t.schedule))
    for name in ("num_train", "num_val", "batch_size", "chunk_size"):
        if int(config.pairs[name]) < 1:
            raise ValueError(f"pairs.{name} must be >= 1, got {config.pairs[name]}")
    if int(t.batch_size) > int(config.pairs.num_train):
        raise ValueError(f"translator.batch_size ({t.batch_size}) exceeds "
                         f"pairs.num_train ({config.pairs.num_train})")


def _meta(config) -> dict:
    return {"translator": dict(config.translator), "pairs": dict(config.pairs),
            "dataset": str(config.dataset), "seed": int(config.seed)}


def train_translator(config, workdir, train_pairs, val_pairs, test_images, test_labels, *,
                     stop_at_epoch: int | None = None, progress: bool = True):
    """Trains (or resumes) the translator; evaluates every ``eval_every`` epochs.

    Returns:
      (final TranslatorState, list of evaluation rows {"epoch", "translated": summary}).
    """
    import orbax.checkpoint as ocp
    from tqdm import tqdm

    t = config.translator
    model = make_translator(config)
    tokens, targets = map(jnp.asarray, pair_arrays(train_pairs))
    val_tokens = jnp.asarray(pair_arrays(val_pairs)[0])
    bs = int(t.batch_size)
    spe = tokens.shape[0] // bs
    epochs = int(t.epochs)
    tx = _optimizer(str(t.optimizer), float(t.lr), float(t.weight_decay),
                    float(t.grad_clip), epochs, spe, str(t.schedule))
    a = config.augment
    aug = AugmentConfig(float(a.mask_prob), str(a.mask_target), float(a.noise_std),
                        str(a.noise_target))
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 2)
    params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, 72, 9), jnp.float32))[
        "params"]
    state = TranslatorState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                            params=params, opt_state=tx.init(params))
    mngr = runlog.checkpoint_manager(workdir, save_every=int(config.checkpoint_every),
                                     keep=int(config.keep_checkpoints))
    meta = _meta(config)
    state, start = runlog.resume(mngr, state, meta, what="translator", workdir=workdir,
                                 key=lambda m: m["translator"])
    end = epochs if stop_at_epoch is None else min(int(stop_at_epoch), epochs)
    evals = []
    bsz = int(config.eval_batch_size)
    with runlog.MetricsLog(workdir, start_step=start) as log, \
            tqdm(total=end, initial=start, desc="translator", unit="epoch",
                 disable=not progress) as bar:
        for epoch in range(start + 1, end + 1):
            state, loss = train_epoch(state, tokens, targets, key, model=model, tx=tx,
                                      batch_size=bs, aug=aug)
            row = log.write(epoch, {"loss": loss, "step": state.step})
            bar.set_postfix(loss=f"{row['train/loss']:.3e}")
            if (int(config.eval_every) and epoch % int(config.eval_every) == 0) or \
                    epoch == end:
                simple = translate(model, state.params, val_tokens)
                acc = evaluate_blocks(val_pairs["begin"], val_pairs["last"],
                                      {"params": simple}, test_images, test_labels,
                                      batch_size=bsz)
                s = _summary(acc)
                log.write(epoch, {"translated_mean": s["mean"], "translated_min": s["min"],
                                  "translated_max": s["max"]}, prefix="eval")
                evals.append({"epoch": epoch, "translated": s})
            if epoch % int(config.checkpoint_every) == 0 or epoch == end:
                mngr.save(epoch, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    meta=ocp.args.JsonSave(dict(meta, epoch=epoch))), force=epoch == end)
            bar.update(1)
    mngr.wait_until_finished()
    mngr.close()
    return state, evals


@jax.jit
def _random_simple(keys):
    """Fresh SimpleBlockNoBn params (PyTorch-style init), one per key (leading axis)."""
    h = jnp.zeros((1, 14, 14, 6), jnp.float32)
    return jax.vmap(lambda k: kt_nets.SimpleBlockNoBn().init(k, h)["params"])(keys)


def baselines(config, train_pairs, val_pairs, test_images, test_labels) -> dict:
    """Accuracy summaries of the reference blocks on the held-out networks.

    Returns:
      dict: ``large`` (each network's own BasicBlock), ``direct`` (its directly trained
      SimpleBlockNoBn), ``random_init`` (a fresh random SimpleBlockNoBn, keyed by
      ``seed``), ``mean_train_block`` (the mean of the training pairs' compressed blocks).
    """
    bsz = int(config.eval_batch_size)
    m = val_pairs["begin"]["params"]["conv"]["kernel"].shape[0]
    ev = functools.partial(evaluate_blocks, val_pairs["begin"], val_pairs["last"],
                           images=test_images, labels=test_labels, batch_size=bsz)
    keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 3), m)
    rand = {"params": _random_simple(keys)}
    mean_block = jax.tree.map(lambda x: np.broadcast_to(np.mean(x, 0), (m,) + x.shape[1:]),
                              train_pairs["simple"])
    return {"large": _summary(ev(val_pairs["basic"], middle="basic")),
            "direct": _summary(ev({"params": val_pairs["simple"]})),
            "random_init": _summary(ev(rand)),
            "mean_train_block": _summary(ev({"params": mean_block}))}


def run(config, workdir: str, *, stop_at_epoch: int | None = None) -> dict:
    """The whole KT pipeline (pairs -> translator -> evaluation); writes results.json."""
    check_config(config)
    os.makedirs(workdir, exist_ok=True)
    progress = bool(config.progress)
    t0 = time.perf_counter()
    train_x, train_y, test_x, test_y = load_data(config)
    train_x, train_y = jnp.asarray(train_x), jnp.asarray(train_y)
    train_pairs = pair_set(config, "train", train_x, train_y, workdir, progress=progress)
    val_pairs = pair_set(config, "val", train_x, train_y, workdir, progress=progress)
    t_pairs = time.perf_counter() - t0
    test_x, test_y = jnp.asarray(test_x), jnp.asarray(test_y)
    t1 = time.perf_counter()
    state, evals = train_translator(config, workdir, train_pairs, val_pairs, test_x, test_y,
                                    stop_at_epoch=stop_at_epoch, progress=progress)
    t_translator = time.perf_counter() - t1
    base = baselines(config, train_pairs, val_pairs, test_x, test_y)
    result = {
        "dataset": str(config.dataset),
        "num_train_pairs": int(config.pairs.num_train),
        "num_val_networks": int(config.pairs.num_val),
        "test_examples": int(test_x.shape[0]),
        "pair_recipe": dict(config.pairs),
        "translator": dict(config.translator),
        "augment": dict(config.augment),
        "translator_params": kt_nets.count_params(state.params),
        "epochs_done": int(state.epoch),
        "final_train_loss_large": float(np.mean(train_pairs["loss_large"])),
        "final_train_loss_small": float(np.mean(train_pairs["loss_small"])),
        "accuracy": dict(base, translated_final=evals[-1]["translated"] if evals else None,
                         translated_best=max(evals, key=lambda e: e["translated"]["mean"])
                         if evals else None),
        "evals": evals,
        "wall_seconds": {"pairs": t_pairs, "translator": t_translator,
                         "total": time.perf_counter() - t0},
        "devices": [str(d) for d in jax.devices()],
    }
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def _report(result, workdir):
    acc = result["accuracy"]
    print(f"KT on {result['dataset']}: {result['num_train_pairs']} training pairs, "
          f"{result['num_val_networks']} held-out networks, "
          f"{result['test_examples']} test images (results in {workdir}/results.json)")
    rows = [("large (BasicBlock)", acc["large"]), ("direct (trained compressed)",
                                                    acc["direct"]),
            ("translated (final)", acc["translated_final"]),
            ("random init", acc["random_init"]), ("mean train block",
                                                  acc["mean_train_block"])]
    for name, s in rows:
        if s is not None:
            print(f"  {name:30s} mean {s['mean']:6.2f}%  min {s['min']:6.2f}%  "
                  f"max {s['max']:6.2f}%")


if __name__ == "__main__":
    from jaxdiff.cli import run_job
    run_job(run, _report, what="KT config file (configs/kd/kt.py)")
