"""KT's training pairs: a large network and a compressed middle block trained inside it.

One "pair" trains a classifier ``Begin -> BasicBlock -> Last`` on 28x28 grey images
(stage 1: SGD with momentum, BatchNorm in training mode, random horizontal flips), then
freezes Begin/Last (BatchNorm on its running statistics) and trains a fresh
``SimpleBlockNoBn`` in the middle (stage 2, same optimiser). Pairs are independent, so
thousands train at once: ``jax.vmap`` over their keys, ``lax.scan`` over SGD steps, and,
with several devices, the pair axis sharded over a 1-D mesh ("nets"). Batches are drawn
with replacement, the indices depending only on (pair key, step) (the paper shuffles
epochs).

A pair set is saved as ``workdir/pairs/<split>_<chunk>.npz`` (one file per chunk, written
atomically); an interrupted generation resumes at the first missing chunk. The settings
that shape the chunks are recorded in ``pairs/settings.json``: chunks of other settings are
refused (listing the differences) rather than reused. A chunk that cannot be read (a bit
flip fails its zip CRC-32, a truncation its directory) is moved to ``pairs/corrupt/`` with
a warning and generated again (pairs depend only on their keys); a chunk whose training
ended in NaN or inf is never saved.

Several processes (:mod:`jaxinfra.distributed`): every process runs the same loop; a
chunk's pairs are split over every device of every process and gathered on each;
process 0 alone writes the chunk files and the settings (and moves unreadable chunks
aside); a chunk is generated again unless every process could read it.

The chunks hold the blocks as trained; ``config.canonical`` reorders their hidden channels
only when they become translator arrays (:func:`pair_arrays`), so it is not a pair setting
and one pair set serves every value.
"""
from __future__ import annotations

import functools
import os
import shutil
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxinfra import checkpoints, distributed, finite
from jaxinfra import mesh as mesh_lib
from jaxkd import guards
from jaxkd.kt import nets

__all__ = ["PairConfig", "canonical_mode", "canonical_pairs", "generate_pairs", "pair_arrays",
           "pair_config", "pair_set", "pair_settings", "train_pair"]


class PairConfig(NamedTuple):
    """Static settings of one pair's training (hashable: a jit static argument).

    Built from ``config.pairs`` by :func:`pair_config` (configs/kd/kt.py holds the
    values; the paper's: batch 128, 4,690 + 4,690 steps, SGD lr 0.01, momentum 0.9,
    flips).
    """
    batch_size: int
    steps_large: int            # stage 1: Begin + BasicBlock + Last
    steps_small: int            # stage 2: SimpleBlockNoBn between the frozen Begin/Last
    lr: float
    momentum: float
    flip: bool


def pair_config(config) -> PairConfig:
    """The :class:`PairConfig` of ``config.pairs``."""
    p = config.pairs
    return PairConfig(batch_size=int(p.batch_size), steps_large=int(p.steps_large),
                      steps_small=int(p.steps_small), lr=float(p.lr),
                      momentum=float(p.momentum), flip=bool(p.flip))


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
    v = nets.init_classifier(k_init, "basic")

    def loss_large(params, stats, x, y):
        variables = {b: {"params": params[b], "batch_stats": stats[b]} for b in params}
        logits, new = nets.classifier_apply(variables, x, middle="basic", train=True)
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
    simple = nets.init_simple(k_simple)

    def loss_small(sp, x, y):
        variables = dict(large, middle={"params": sp})
        return _xent(nets.classifier_apply(variables, x, middle="simple")[0], y)

    def step_small(carry, i):
        sp, opt = carry
        x, y = _batch(jax.random.fold_in(k_data2, i), images, labels, cfg.batch_size,
                      cfg.flip)
        loss, g = jax.value_and_grad(loss_small)(sp, x, y)
        upd, opt = tx.update(g, opt, sp)
        return (optax.apply_updates(sp, upd), opt), loss

    (simple, _), losses2 = jax.lax.scan(step_small, (simple, tx.init(simple)),
                                        jnp.arange(cfg.steps_small))
    last = lambda losses: losses[-1] if losses.shape[0] else jnp.float32(jnp.nan)
    return {"begin": large["begin"], "basic": large["middle"], "last": large["last"],
            "simple": simple, "loss_large": last(losses1), "loss_small": last(losses2)}


@functools.partial(jax.jit, static_argnames=("cfg", "out_sharding"))
def _train_pairs(keys, images, labels, *, cfg, out_sharding=None):
    out = jax.vmap(functools.partial(train_pair, cfg=cfg), in_axes=(0, None, None))(
        keys, images, labels)
    if out_sharding is not None:         # several processes: every one gets every pair
        out = jax.lax.with_sharding_constraint(out, out_sharding)
    return out


def generate_pairs(key, num: int, images, labels, *, cfg: PairConfig) -> dict:
    """``num`` pairs trained at once (vmap); see :func:`train_pair` for the leaves,
    each with a leading axis of size ``num``.

    Pair i uses ``jax.random.fold_in(key, i)``, so a pair depends neither on ``num`` nor
    on the device count. With several devices and ``num`` divisible by their count, the
    pair axis is sharded over a 1-D mesh ("nets"); images are replicated. With several
    processes the mesh spans every device of every process (``num`` is padded with extra
    keys to a multiple of the device count, their pairs dropped) and every process
    receives all ``num`` pairs.
    """
    processes = jax.process_count()
    n_dev = jax.device_count()
    padded = -(-num // n_dev) * n_dev if processes > 1 else num
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(padded))
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    out_sharding = None
    if n_dev > 1 and padded % n_dev == 0:
        mesh = mesh_lib.mesh_1d("nets")          # one process: its local devices
        keys = jax.device_put(keys, mesh_lib.sharded(mesh))
        images = jax.device_put(images, mesh_lib.replicated(mesh))
        labels = jax.device_put(labels, mesh_lib.replicated(mesh))
        out_sharding = mesh_lib.replicated(mesh) if processes > 1 else None
    out = _train_pairs(keys, images, labels, cfg=cfg, out_sharding=out_sharding)
    return out if padded == num else jax.tree.map(lambda x: x[:num], out)


def _save_npz(path, tree):
    flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in flat.items()})
    os.replace(tmp, path)  # Atomic: a chunk file is complete or absent.


def _load_npz(path):
    with np.load(path) as f:
        return traverse_util.unflatten_dict({k: f[k] for k in f.files}, sep="/")


def pair_settings(config) -> dict:
    """What the pair chunks depend on: the pair recipe (``config.pairs`` but the number
    of pairs, which only decides how many chunks there are), the seed and the images."""
    return {"pairs": checkpoints.settings(config.pairs, ignore=("num_train", "num_val")),
            "seed": int(config.seed), "dataset": str(config.dataset),
            "max_train_examples": int(config.max_train_examples)}


def check_pair_settings(config, workdir: str, *, record: bool = True) -> None:
    """Refuses saved pairs of other settings (a SettingsMismatchError listing every
    difference); with ``record``, writes the settings to ``workdir/pairs/settings.json``
    when it does not exist yet."""
    checkpoints.check_settings_file(os.path.join(workdir, "pairs"), pair_settings(config),
                                    holds="pairs generated with", record=record)


def _check_finite(part, split: str, c: int) -> None:
    """NonFiniteError when a pair's training ended in NaN/inf (nothing is saved)."""
    for name in ("loss_large", "loss_small"):
        bad = np.flatnonzero(~np.isfinite(np.asarray(part[name])))
        if bad.size:
            raise finite.NonFiniteError(
                f"pair generation stopped at {split} chunk {c}: {name} of pair(s) "
                f"{bad[:5].tolist()} is {float(np.asarray(part[name])[bad[0]])}; nothing "
                "was saved for this chunk (lower pairs.lr or check the data)")
    for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]:
        if not np.all(np.isfinite(np.asarray(leaf))):
            raise finite.NonFiniteError(
                f"pair generation stopped at {split} chunk {c}: "
                f"{jax.tree_util.keystr(path)} holds NaN or inf; nothing was saved for this "
                "chunk (lower pairs.lr or check the data)")


def _read_chunk(path, n: int):
    """The chunk at ``path``, or None (moved to ``pairs/corrupt/`` by process 0, with a
    warning) when it cannot be read, does not hold ``n`` pairs or holds NaN/inf."""
    try:
        part = _load_npz(path)
        sizes = {np.asarray(x).shape[0] for x in jax.tree.leaves(part)}
        if sizes != {n}:
            raise ValueError(f"holds {sorted(sizes)} pairs, not {n}")
        if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(part)):
            raise ValueError("holds NaN or inf")
        return part
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        if not distributed.is_main_process():
            return None
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        dst = os.path.join(os.path.dirname(path), "corrupt", os.path.basename(path))
        try:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(path, dst)
        except OSError as move_err:  # no raise here: the other processes wait for this one
            dst = f"nowhere ({move_err}); it will be overwritten"
        guards.warn(f"pair chunk {path} is unreadable ({type(err).__name__}: {reason}); "
                    f"moved to {dst}; generating it again")
        return None


def pair_set(config, split: str, images, labels, workdir: str, *, progress=True) -> dict:
    """Generates (or loads the saved chunks of) the ``split`` pairs ("train" or "val").

    Pair i of chunk c uses key fold_in(fold_in(fold_in(PRNGKey(seed), 0 for train or
    1 for val), c), i): ``images``/``labels`` are only read for missing chunks.

    Raises:
      SettingsMismatchError: the saved chunks were generated with other settings.
      NonFiniteError: a pair's training ended in NaN or inf (the chunk is not saved).
    """
    p = config.pairs
    num = int(p.num_train if split == "train" else p.num_val)
    chunk = max(1, min(int(p.chunk_size), num))
    cfg = pair_config(config)
    base = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)),
                              {"train": 0, "val": 1}[split])
    folder = os.path.join(workdir, "pairs")
    check_pair_settings(config, workdir)
    parts = []
    starts = list(range(0, num, chunk))
    for c, lo in enumerate(distributed.progress_bar(starts, desc=f"{split} pairs (x{chunk})",
                                                    unit="chunk", enabled=progress)):
        path = os.path.join(folder, f"{split}_{c:05d}.npz")
        n = min(chunk, num - lo)
        part = _read_chunk(path, n) if os.path.exists(path) else None
        if not distributed.all_true(part is not None):     # generated by every process
            if images is None:
                raise FileNotFoundError(f"pair chunk {path} is missing and no images were "
                                        "given to generate it")
            key = jax.random.fold_in(base, c)
            part = jax.device_get(generate_pairs(key, n, images, labels, cfg=cfg))
            _check_finite(part, split, c)
            if distributed.is_main_process():
                _save_npz(path, part)
        parts.append(part)
    return jax.tree.map(lambda *xs: np.concatenate(xs, axis=0), *parts)


_canonical_basic = jax.jit(jax.vmap(nets.canonical_basic))
_canonical_simple = jax.jit(jax.vmap(nets.canonical_simple))


def canonical_mode(config) -> str:
    """``config.canonical`` ("none" where a config predates the option)."""
    return str(config.get("canonical", "none"))


def canonical_pairs(pairs, canonical: str = "none"):
    """The pair set with each block's hidden channels in canonical order (same functions).

    Args:
      pairs: a pair set (leaves with a leading pair axis P).
      canonical: "none" (returned as is) or "norm" (``basic`` through
        :func:`~jaxkd.kt.nets.canonical_basic`, ``simple`` through
        :func:`~jaxkd.kt.nets.canonical_simple`, vmapped over P).
    """
    if canonical not in nets.CANONICAL:
        raise ValueError(f"unknown canonical {canonical!r}; valid: {', '.join(nets.CANONICAL)}")
    if canonical == "none":
        return pairs
    return dict(pairs, basic=jax.device_get(_canonical_basic(pairs["basic"])),
                simple=jax.device_get(_canonical_simple(pairs["simple"])))


def pair_arrays(pairs, canonical: str = "none"):
    """Translator inputs (P, 72, 9) and targets (P, 36, 9) from a pair set, the blocks'
    hidden channels first put in ``canonical`` order (:func:`canonical_pairs`)."""
    pairs = canonical_pairs(pairs, canonical)
    tokens = jax.vmap(nets.basic_tokens)(pairs["basic"]["params"])
    kernels = jax.vmap(nets.simple_to_kernels)(pairs["simple"])
    targets = jax.vmap(nets.kernels_to_output)(*kernels)
    return np.asarray(tokens, np.float32), np.asarray(targets, np.float32)
