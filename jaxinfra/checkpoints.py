"""The one checkpoint API of the three packages: Orbax ``CheckpointManager`` folders whose
steps hold pytree items (``StandardSave``) and one JSON item ``meta``.

    mngr = checkpoints.manager(workdir, save_every=100, keep=2)
    state, start = checkpoints.resume(mngr, state, meta, what="model", workdir=workdir)
    ...
    checkpoints.save(mngr, step, meta=dict(meta, step=step), state=state)

    mngr, step = checkpoints.open_latest(workdir, what="EDM", hint="train it first ...")
    meta = checkpoints.read_meta(mngr, step)
    params = checkpoints.read(mngr, step, params=template)["params"]

Saves are synchronous (the next jitted step usually donates the saved buffers) and each
is written to a temporary folder and renamed, so an interrupted run never leaves a
half-written step behind.
"""
from __future__ import annotations

import json
import os

import jax

__all__ = ["manager", "save", "read_meta", "read", "resume", "open_latest"]

DEFAULT_SUBDIR = "checkpoints"


def manager(workdir: str, *, subdir: str = DEFAULT_SUBDIR, save_every: int = 0,
            keep: int | None = None, read_only: bool = False):
    """A synchronous Orbax CheckpointManager on ``workdir/subdir``.

    Args:
      workdir: the run folder.
      subdir: the checkpoint folder inside it ("" for ``workdir`` itself).
      save_every: ``save_interval_steps`` (0: save whenever asked).
      keep: checkpoints to keep (None: all).
      read_only: open for reading only (the folder is not created).
    """
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(int(save_every), 1), max_to_keep=keep,
        enable_async_checkpointing=False, read_only=read_only, create=not read_only)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, subdir)),
                                 options=options)


def save(mngr, step: int, *, meta: dict, force: bool = False, **items) -> bool:
    """Saves the pytrees ``items`` and the JSON-able ``meta`` as ``step``.

    Returns:
      Whether a checkpoint was written (``save_every`` may skip the step unless
      ``force``).
    """
    import orbax.checkpoint as ocp
    args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
    return mngr.save(int(step), args=ocp.args.Composite(meta=ocp.args.JsonSave(meta), **args),
                     force=force)


def read_meta(mngr, step: int) -> dict:
    """The ``meta`` item of ``step``."""
    import orbax.checkpoint as ocp
    return mngr.restore(int(step), args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))["meta"]


def read(mngr, step: int, **templates) -> dict:
    """Restores the named pytree items of ``step``.

    Args:
      templates: ``name=tree`` with the structure, shapes, dtypes (and shardings) to
        restore into: arrays, ``jax.ShapeDtypeStruct`` s or ``jax.eval_shape`` output.
        ``None`` restores the item as saved (numpy arrays on the default device).

    Returns:
      ``{name: restored tree}``.
    """
    import orbax.checkpoint as ocp

    def target(tree):
        if tree is None:
            return ocp.args.StandardRestore()
        return ocp.args.StandardRestore(jax.tree.map(_abstract, tree))

    restored = mngr.restore(int(step), args=ocp.args.Composite(
        **{name: target(tree) for name, tree in templates.items()}))
    return {name: restored[name] for name in templates}


def _abstract(leaf):
    """A ShapeDtypeStruct with a sharding (the first local device when the leaf has none,
    e.g. ``jax.eval_shape`` output)."""
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


def _plain(tree):
    """JSON round trip: tuples become lists, so saved and fresh metadata compare equal."""
    return json.loads(json.dumps(tree))


def resume(mngr, state, meta: dict, *, key=None, what: str = "run", workdir: str = ""):
    """Restores the latest checkpoint of ``mngr`` into ``state``'s structure.

    Args:
      mngr: a manager whose steps hold the items ``state`` and ``meta``.
      state: a pytree with the structure, shapes, dtypes and shardings to restore into;
        returned unchanged when there is no checkpoint.
      meta: this run's metadata; ``key(meta)`` must equal ``key(saved meta)``.
      key: what must agree (default: the whole metadata).
      what: named in the error ("model", "translator", ...).
      workdir: named in the error.

    Returns:
      ``(state, start_step)``; start_step is 0 without a checkpoint.

    Raises:
      ValueError: the checkpoint belongs to another run (``mngr`` is closed first).
    """
    step = mngr.latest_step()
    if step is None:
        return state, 0
    key = key or (lambda m: m)
    saved = read_meta(mngr, step)
    if _plain(key(saved)) != _plain(key(meta)):
        mngr.close()
        raise ValueError(f"{workdir!r} holds a checkpoint of a different {what} "
                         f"({_plain(key(saved))}, asked for {_plain(key(meta))}); use a new "
                         "workdir")
    return read(mngr, step, state=state)["state"], int(step)


def open_latest(workdir: str, *, what: str, hint: str, subdir: str = DEFAULT_SUBDIR,
                step: int | None = None):
    """Opens ``workdir``'s checkpoints for reading.

    Args:
      workdir: the run folder.
      what: what the checkpoints hold, for the error ("EDM model", "student", ...).
      hint: how to make one, appended to the error.
      subdir: the checkpoint folder inside ``workdir``.
      step: the step wanted (None: the latest).

    Returns:
      ``(mngr, step)``; close ``mngr`` when done.

    Raises:
      FileNotFoundError: no such checkpoint.
    """
    directory = os.path.join(workdir, subdir)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no {what} checkpoints in {workdir!r}; {hint}")
    mngr = manager(workdir, subdir=subdir, read_only=True)
    steps = mngr.all_steps()
    chosen = max(steps) if (step is None and steps) else step
    if chosen is None or chosen not in steps:
        mngr.close()
        raise FileNotFoundError(f"no {what} checkpoint{'' if step is None else f' at step {step}'}"
                                f" in {directory!r} (steps: {sorted(steps)}); {hint}")
    return mngr, int(chosen)
