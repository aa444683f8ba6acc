"""KT's translator training: an MLP-Mixer reads a BasicBlock's two kernels as 72 tokens
x 9 and regresses the SimpleBlockNoBn's two kernels (MSE), with optional masking/noise
augmentation (:mod:`jaxkd.kt.augmentation`). With ``config.canonical="norm"`` both
blocks' hidden channels are sorted first (:func:`jaxkd.kt.pairs.pair_arrays`), so the
targets no longer depend on the arbitrary order SGD left them in.

Adam (or SGD), per-epoch cosine annealing (PyTorch ``CosineAnnealingLR`` stepped each
epoch), reshuffled epochs; the last incomplete batch is dropped. :func:`train_translator`
checkpoints the :class:`TranslatorState` with :mod:`jaxinfra.checkpoints` (resumed
exactly from the newest good checkpoint; one of other settings is refused, listing the
differences; ``config.extend=True`` continues a finished run to more epochs), stops at
the first NaN/inf loss or parameter, and logs to ``metrics.jsonl`` + ``tb/``.

Several processes: the translator is small, so every process trains the same one, its
state and arrays replicated over one device per process
(:func:`jaxinfra.mesh.replicated_per_process`; Orbax saves it with every process taking
part); each process evaluates the translated blocks on its own, and process 0 writes the
logs.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from jaxinfra import checkpoints, distributed, finite
from jaxinfra import mesh as mesh_lib
from jaxinfra.metrics import MetricsLog
from jaxkd import guards
from jaxkd.kt import evaluate, nets
from jaxkd.kt.augmentation import AugmentConfig, augment
from jaxkd.kt.pairs import canonical_mode, pair_arrays

__all__ = ["TranslatorState", "augment_config", "check_resumable", "make_optimizer",
           "make_translator", "settings", "train_epoch", "train_translator", "translate",
           "translator_loss"]


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


def make_translator(config) -> nets.MLPMixer:
    """The :class:`~jaxkd.kt.nets.MLPMixer` of ``config.translator``."""
    t = config.translator
    return nets.MLPMixer(num_layers=int(t.num_layers), s_dim=72, c_dim=int(t.c_dim),
                         hidden_s_dim=int(t.hidden_s_dim),
                         hidden_c_dim=int(t.hidden_c_dim), dropout=float(t.dropout))


@functools.lru_cache(maxsize=8)
def make_optimizer(name: str, lr: float, wd: float, grad_clip: float, epochs: int,
                   steps_per_epoch: int, schedule: str):
    """The translator's optax optimizer (cached on its settings).

    Args:
      name: "adam" (PyTorch Adam: weight decay as L2 added to the gradient) or "sgd"
        (momentum 0.9).
      lr, wd: learning rate and weight decay.
      grad_clip: global-norm clipping (<= 0: none).
      epochs, steps_per_epoch: the length of the cosine schedule.
      schedule: "cosine" (per epoch) or "constant".

    Raises:
      ValueError: an unknown name or schedule (naming the valid ones).
    """
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


def augment_config(config) -> AugmentConfig:
    """The :class:`~jaxkd.kt.augmentation.AugmentConfig` of ``config.augment``."""
    a = config.augment
    return AugmentConfig(float(a.mask_prob), str(a.mask_target), float(a.noise_std),
                         str(a.noise_target))


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


@jax.jit
def _norm(tree):
    """The global L2 norm of a pytree (NaN/inf when any entry is)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


@functools.partial(jax.jit, static_argnames=("model",))
def translate(model, params, tokens):
    """(P, 72, 9) tokens -> SimpleBlockNoBn params with a leading axis P."""
    out = model.apply({"params": params}, tokens, train=False)
    return jax.vmap(nets.simple_from_output)(out)


#: Config fields that do not change results besides
#: :data:`jaxinfra.checkpoints.RUN_ONLY_FIELDS` (the evaluation's batching).
SETTINGS_IGNORE = ("eval_batch_size",)


def settings(config) -> dict:
    """The settings of ``config`` that change results (compared on resume)."""
    return checkpoints.settings(config, ignore=SETTINGS_IGNORE)


def _meta(config) -> dict:
    """What a translator checkpoint records; a resume must match its ``settings``."""
    return {"translator": dict(config.translator), "pairs": dict(config.pairs),
            "dataset": str(config.dataset), "seed": int(config.seed),
            "settings": settings(config)}


def check_resumable(config, workdir: str) -> None:
    """Refuses, before any pair is generated, a ``workdir`` whose newest good translator
    checkpoint has other settings (see :func:`jaxkd.guards.check_resumable`)."""
    if not os.path.isdir(os.path.join(workdir, checkpoints.DEFAULT_SUBDIR)):
        return
    mngr = checkpoints.manager(workdir)
    try:
        guards.check_resumable(mngr, settings(config), length_key="translator.epochs",
                               extend=bool(config.get("extend", False)),
                               what="translator", workdir=workdir,
                               legacy={k: v for k, v in _meta(config).items()
                                       if k != "settings"})
    finally:
        mngr.close()


def train_translator(config, workdir, train_pairs, val_pairs, test_images, test_labels, *,
                     stop_at_epoch: int | None = None, progress: bool = True):
    """Trains (or resumes) the translator; evaluates every ``eval_every`` epochs.

    Writes ``workdir/checkpoints/<epoch>/`` (items ``state`` and ``meta``) every
    ``checkpoint_every`` epochs and at the end, and ``metrics.jsonl`` + ``tb/``.

    Returns:
      (final TranslatorState, list of evaluation rows {"epoch", "translated": summary},
      those of a resumed run's earlier epochs included).

    Raises:
      SettingsMismatchError: ``workdir`` holds a checkpoint of other settings (every
        difference listed); ``config.extend=True`` lets ``translator.epochs`` grow.
      NonFiniteError: the loss or the parameters became NaN or inf (nothing saved).
    """
    check_resumable(config, workdir)
    t = config.translator
    model = make_translator(config)
    canonical = canonical_mode(config)        # the hidden-channel order of the arrays
    tokens, targets = map(jnp.asarray, pair_arrays(train_pairs, canonical))
    val_tokens = jnp.asarray(pair_arrays(val_pairs, canonical)[0])
    bs = int(t.batch_size)
    spe = tokens.shape[0] // bs
    epochs = int(t.epochs)
    tx = make_optimizer(str(t.optimizer), float(t.lr), float(t.weight_decay),
                        float(t.grad_clip), epochs, spe, str(t.schedule))
    aug = augment_config(config)
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 2)
    params = model.init(jax.random.fold_in(key, 0), jnp.zeros((1, 72, 9), jnp.float32))[
        "params"]
    state = TranslatorState(step=jnp.zeros((), jnp.int32), epoch=jnp.zeros((), jnp.int32),
                            params=params, opt_state=tx.init(params))
    state, tokens, targets, val_tokens, key = mesh_lib.replicated_per_process(
        (state, tokens, targets, val_tokens, key))
    mngr = checkpoints.manager(workdir, save_every=int(config.checkpoint_every),
                               keep=int(config.keep_checkpoints))
    meta = _meta(config)
    asked = meta["settings"]            # legacy meta (no settings): see check_resumable
    state, start = checkpoints.resume(mngr, state, meta, what="translator", workdir=workdir,
                                      key=lambda m: m.get("settings", asked),
                                      extend_keys=("translator.epochs",),
                                      extend=bool(config.get("extend", False)))
    evals = []
    if start:
        saved = checkpoints.read_meta(mngr, start)
        if int(state.epoch) != start or int(state.step) != start * spe:
            mngr.close()
            raise ValueError(f"{workdir!r}: translator checkpoint {start} holds epoch "
                             f"{int(state.epoch)}, step {int(state.step)}; expected step "
                             f"{start * spe}. Use a new --workdir")
        if start > epochs:
            mngr.close()
            raise ValueError(f"{workdir!r} holds a translator trained for {start} epochs; "
                             f"translator.epochs={epochs} would shorten it; accepted: "
                             f"translator.epochs >= {start}, or a new --workdir")
        evals = list(saved.get("evals", []))
    end = epochs if stop_at_epoch is None else min(int(stop_at_epoch), epochs)
    bsz = int(config.eval_batch_size)
    try:
        with MetricsLog(workdir, start_step=start) as log, \
                distributed.progress_bar(total=end, initial=start, desc="translator",
                                         unit="epoch", enabled=progress) as bar:
            for epoch in range(start + 1, end + 1):
                state, loss = train_epoch(state, tokens, targets, key, model=model, tx=tx,
                                          batch_size=bs, aug=aug)
                finite.check(int(state.step), {"loss": loss,
                                               "params_norm": _norm(state.params)},
                             what=f"translator training (epoch {epoch})")
                row = log.write(epoch, {"loss": loss, "step": state.step})
                bar.set_postfix(loss=f"{row['train/loss']:.3e}")
                if (int(config.eval_every) and epoch % int(config.eval_every) == 0) or \
                        epoch == end:
                    simple = jax.device_get(translate(model, state.params, val_tokens))
                    acc = evaluate.evaluate_blocks(val_pairs["begin"], val_pairs["last"],
                                                   {"params": simple}, test_images,
                                                   test_labels, batch_size=bsz)
                    s = evaluate.summary(acc)
                    log.write(epoch, {"translated_mean": s["mean"], "translated_min": s["min"],
                                      "translated_max": s["max"]}, prefix="eval")
                    evals.append({"epoch": epoch, "translated": s})
                if epoch % int(config.checkpoint_every) == 0 or epoch == end:
                    checkpoints.save(mngr, epoch, meta=dict(meta, epoch=epoch, evals=evals),
                                     force=epoch == end, state=state)
                bar.update(1)
    finally:
        mngr.wait_until_finished()
        mngr.close()
    return state, evals
