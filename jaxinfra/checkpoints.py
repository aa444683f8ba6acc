"""The one checkpoint API of the three packages: Orbax ``CheckpointManager`` folders whose
steps hold pytree items (``StandardSave``) and one JSON item ``meta``.

    mngr = checkpoints.manager(workdir, save_every=100, keep=2)
    state, start = checkpoints.resume(mngr, state, meta, what="model", workdir=workdir)
    ...
    checkpoints.save(mngr, step, meta=dict(meta, step=step), state=state)

    mngr, step = checkpoints.open_latest(workdir, what="EDM", hint="train it first ...")
    meta = checkpoints.read_meta(mngr, step)
    params = checkpoints.read(mngr, step, params=template)["params"]

What it guarantees (tests/jaxinfra/test_checkpoints.py injects each fault):

- Saves are synchronous (the next jitted step usually donates the saved buffers) and each
  is written to a temporary folder and renamed (Orbax), so an interrupted run never leaves
  a half-written step behind.
- A state with a NaN or inf is never saved: :func:`save` raises :class:`NonFiniteError`.
- Each saved step records the SHA-256 of every file it wrote (``integrity.json`` in the
  step folder). Restoring verifies them; a step that fails (bit flip, truncation, missing
  file, unreadable data) is moved to ``<checkpoints>/corrupt/<step>`` with a warning naming
  it, and the newest good step is used instead. Moving it aside also keeps retention
  (``keep``) from deleting the good steps in its favour.
- Resuming compares the saved settings with the asked ones and refuses a mismatch with a
  message listing every difference (:func:`resume`).

Several processes (:mod:`jaxinfra.distributed`; the workdir on a file system every process
sees): every process calls every function here, as SPMD code does. Orbax saves and
restores with all of them (each shard of a sharded array is written once, by a process
that holds it); this module's own writes (the integrity record, moving a corrupt step
aside) are process 0's, followed by a barrier. Every process verifies, but process 0's
verdict on a step is the one all follow, and a step that fails to restore on any process
is moved aside on all of them, so the processes never disagree on the step they resume.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import jax
import numpy as np

from jaxinfra import distributed
from jaxinfra.digests import file_sha256
from jaxinfra.finite import NonFiniteError

__all__ = ["manager", "save", "read_meta", "read", "resume", "open_latest", "verify",
           "latest_good", "NonFiniteError", "SettingsMismatchError", "differences", "settings",
           "check_settings", "check_settings_file", "flatten", "RUN_ONLY_FIELDS"]

DEFAULT_SUBDIR = "checkpoints"
INTEGRITY_FILE = "integrity.json"
CORRUPT_SUBDIR = "corrupt"
_log = logging.getLogger(__name__)


class SettingsMismatchError(ValueError):
    """A checkpoint was written with other settings than the ones asked for."""


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


def _finite_here(leaf) -> bool:
    """Whether the part of ``leaf`` this process checks is free of NaN and inf: every
    shard it holds as replica 0 (each shard of a sharded or replicated ``jax.Array`` is
    checked once, by one process, and never gathered); a host array whole."""
    shards = getattr(leaf, "addressable_shards", None)
    parts = [leaf] if shards is None else [s.data for s in shards if s.replica_id == 0]
    for part in parts:
        arr = np.asarray(part)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            return False
    return True


def _non_finite_leaf(tree):
    """The path of the first floating leaf holding NaN or inf, else None. With several
    processes each checks its shards and all agree (every process must call it): a leaf
    found on another process is named " (a leaf on another process)"."""
    bad = None
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not _finite_here(leaf):
            bad = jax.tree_util.keystr(path) or "<root>"
            break
    if distributed.all_true(bad is None):
        return None
    return bad or " (a leaf on another process)"


def _step_dir(mngr, step: int) -> str:
    return os.path.join(os.fspath(mngr.directory), str(int(step)))


def _file_digests(directory: str) -> dict:
    digests = {}
    for root, _, files in os.walk(directory):
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if rel == INTEGRITY_FILE:
                continue
            digests[rel] = file_sha256(path)
    return digests


def save(mngr, step: int, *, meta: dict, force: bool = False, **items) -> bool:
    """Saves the pytrees ``items`` and the JSON-able ``meta`` as ``step``.

    The items are checked first: a NaN or inf anywhere raises :class:`NonFiniteError`
    and nothing is written. After the save, the SHA-256 of every file of the step is
    recorded for :func:`verify` (by process 0; every process must call ``save``).

    Returns:
      Whether a checkpoint was written (``save_every`` may skip the step unless
      ``force``).
    """
    import orbax.checkpoint as ocp
    if not force and not mngr.should_save(int(step)):
        return False
    for name, tree in items.items():
        bad = _non_finite_leaf(tree)
        if bad is not None:
            raise NonFiniteError(f"step {int(step)}: {name}{bad} holds NaN or inf; not "
                                 f"saved (the last good checkpoint is kept)")
    args = {name: ocp.args.StandardSave(tree) for name, tree in items.items()}
    written = mngr.save(int(step), args=ocp.args.Composite(meta=ocp.args.JsonSave(meta),
                                                           **args), force=force)
    if written:
        mngr.wait_until_finished()
        if distributed.is_main_process():
            directory = _step_dir(mngr, step)
            record = {"sha256": _file_digests(directory), "finite": True}
            tmp = os.path.join(directory, INTEGRITY_FILE + ".tmp")
            with open(tmp, "w") as f:
                json.dump(record, f, indent=0, sort_keys=True)
            os.replace(tmp, os.path.join(directory, INTEGRITY_FILE))
        distributed.barrier(f"jaxinfra.checkpoints.save:{int(step)}")
    return written


def verify(mngr, step: int) -> str | None:
    """Checks ``step`` against its integrity record.

    Returns:
      None when every recorded file is present with its recorded SHA-256 (or when the
      step predates integrity records), else the reason it is bad.
    """
    directory = _step_dir(mngr, step)
    path = os.path.join(directory, INTEGRITY_FILE)
    if not os.path.isdir(directory):
        return "the step folder is missing"
    if not os.path.exists(path):
        return None                                  # written before integrity records
    try:
        with open(path) as f:
            recorded = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError) as err:
        return f"unreadable {INTEGRITY_FILE} ({err})"
    actual = _file_digests(directory)
    for rel, digest in sorted(recorded.items()):
        if rel not in actual:
            return f"file {rel} is missing"
        if actual[rel] != digest:
            return f"file {rel} does not match its recorded SHA-256"
    return None


def _quarantine(mngr, step: int, reason: str, fallback) -> None:
    """Moves a bad step to ``<checkpoints>/corrupt/<step>`` and warns (process 0 moves
    and warns; every process waits for the move and reloads)."""
    dst = os.path.join(os.fspath(mngr.directory), CORRUPT_SUBDIR, str(int(step)))
    if distributed.is_main_process():
        src = _step_dir(mngr, step)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        shutil.move(src, dst)
    distributed.barrier(f"jaxinfra.checkpoints.quarantine:{int(step)}")
    mngr.reload()
    if not distributed.is_main_process():
        return
    then = f"using step {fallback}" if fallback is not None else "no good checkpoint left"
    _log.warning("checkpoint step %d in %s is corrupt (%s); moved to %s; %s", int(step),
                 os.fspath(mngr.directory), reason, dst, then)
    import warnings
    warnings.warn(f"checkpoint step {int(step)} in {os.fspath(mngr.directory)} is corrupt "
                  f"({reason}); moved to {dst}; {then}", RuntimeWarning, stacklevel=3)


def latest_good(mngr) -> int | None:
    """The newest step that passes :func:`verify`; bad newer steps are moved aside (with
    several processes, process 0's verdict counts)."""
    while True:
        steps = sorted(mngr.all_steps(), reverse=True)
        if not steps:
            return None
        reason = verify(mngr, steps[0])
        if distributed.broadcast_flag(reason is None):
            return int(steps[0])
        if reason is None:                 # bad on process 0, not read as bad here
            reason = "corrupt (found by process 0)"
        _quarantine(mngr, steps[0], reason, steps[1] if len(steps) > 1 else None)


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
        ``None`` restores the item with its saved shapes and dtypes on this process's
        first device (also when it was written sharded over other devices).

    Returns:
      ``{name: restored tree}``.
    """
    import orbax.checkpoint as ocp

    def target(name, tree):
        if tree is None:          # as saved, on this process's first device
            tree = _saved_shapes(os.path.join(_step_dir(mngr, step), name))
        return ocp.args.StandardRestore(jax.tree.map(_abstract, tree))

    restored = mngr.restore(int(step), args=ocp.args.Composite(
        **{name: target(name, tree) for name, tree in templates.items()}))
    return {name: restored[name] for name in templates}


def _saved_shapes(item_dir: str):
    """The ShapeDtypeStruct tree of a saved item (from its metadata, no array read)."""
    import absl.logging
    import orbax.checkpoint as ocp
    level = absl.logging.get_verbosity()
    absl.logging.set_verbosity(absl.logging.ERROR)     # "no _CHECKPOINT_METADATA" noise
    try:
        with ocp.StandardCheckpointer() as ckpt:
            md = ckpt.metadata(item_dir)
    finally:
        absl.logging.set_verbosity(level)
    md = getattr(md, "item_metadata", md)
    md = getattr(md, "tree", md)
    return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), md,
                        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))


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


def flatten(tree, prefix=""):
    """``{"a.b": leaf}`` of a nested dict (a non-dict ``tree``: ``{"settings": tree}``)."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1] or "settings": tree}


#: Config fields that never change a run's results (how often it logs or saves, how it
#: shows progress, whether it may be extended); :func:`settings` leaves them out.
RUN_ONLY_FIELDS = ("log_every", "checkpoint_every", "keep_checkpoints", "progress",
                   "extend", "eval_every", "verbose")


def settings(config, *, ignore=()) -> dict:
    """The settings of ``config`` that change results, as a JSON-able nested dict.

    Args:
      config: a ConfigDict (or dict).
      ignore: dotted names (or name prefixes) to leave out, besides
        :data:`RUN_ONLY_FIELDS` at any depth.
    """
    tree = _plain(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    drop = tuple(ignore)

    def keep(path):
        name = path.rsplit(".", 1)[-1]
        return name not in RUN_ONLY_FIELDS and not any(
            path == d or path.startswith(d + ".") for d in drop)

    def walk(node, prefix):
        if not isinstance(node, dict):
            return node
        return {k: walk(v, f"{prefix}{k}.") for k, v in node.items() if keep(prefix + k)}

    return walk(tree, "")


def differences(saved, asked) -> list:
    """``["name: saved -> asked", ...]`` for every setting that differs (dotted names)."""
    a, b = flatten(_plain(saved)), flatten(_plain(asked))
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            out.append(f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}")
    return out


def check_settings(saved, asked, *, step: int, what: str = "run", workdir: str = "",
                   extend_keys=(), extend: bool = False) -> None:
    """Raises :class:`SettingsMismatchError` unless ``saved`` and ``asked`` settings agree.

    ``extend_keys`` (dotted names of the run's length) may differ only with ``extend``;
    the message then says how to continue the run. Used by :func:`resume`, and by
    trainers that must compare before building anything.
    """
    diffs = differences(saved, asked)
    length = [d for d in diffs if d.split(":")[0] in extend_keys]
    if length and len(length) == len(diffs) and not extend:
        raise SettingsMismatchError(
            f"{workdir!r} holds a {what} run (checkpoint at step {step}) of another "
            f"length: {'; '.join(length)}. To continue it to the new length add "
            "--config.extend=True; otherwise use a new --workdir")
    if extend:
        diffs = [d for d in diffs if d not in length]
    if diffs:
        raise SettingsMismatchError(
            f"{workdir!r} holds a {what} checkpoint (step {step}) with other settings: "
            f"{'; '.join(diffs)}. Use a new --workdir, or the saved settings")


def check_settings_file(folder: str, asked: dict, *, holds: str,
                        record: bool = True) -> None:
    """For outputs kept outside checkpoints (pair chunks, comparison rows): refuses a
    ``folder`` whose ``settings.json`` differs from ``asked``, and records ``asked`` there
    when it has none yet.

    Args:
      folder: where the outputs and their ``settings.json`` live.
      asked: this call's settings (e.g. from :func:`settings`).
      holds: what the folder holds, for the message ("'F' holds <holds> other settings").
      record: write ``asked`` when the file is missing (process 0 only, atomically).

    Raises:
      SettingsMismatchError: every difference listed, and how to go on.
    """
    path = os.path.join(folder, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            diffs = differences(json.load(f), asked)
        if diffs:
            raise SettingsMismatchError(
                f"{folder!r} holds {holds} other settings: {'; '.join(diffs)}. Use a new "
                "--workdir, or the saved settings")
        return
    if not record or not distributed.is_main_process():
        return
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(asked, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _restore_good(mngr, restore):
    """``restore(step)`` on the newest good step, moving aside steps that fail to read.

    Returns ``(step, restore(step))`` or ``(None, None)`` without a good step.
    """
    while True:
        step = latest_good(mngr)
        if step is None:
            return None, None
        error = None
        try:
            result = restore(step)
        except SettingsMismatchError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            error = err
        if distributed.all_true(error is None):
            return step, result
        steps = sorted(mngr.all_steps(), reverse=True)
        if error is None:
            reason = "unreadable on another process"
        else:
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            reason = f"unreadable: {type(error).__name__}: {first[:200]}"
        _quarantine(mngr, step, reason, steps[1] if len(steps) > 1 else None)


def resume(mngr, state, meta: dict, *, key=None, what: str = "run", workdir: str = "",
           extend_keys=(), extend: bool = False):
    """Restores the newest good checkpoint of ``mngr`` into ``state``'s structure.

    Args:
      mngr: a manager whose steps hold the items ``state`` and ``meta``.
      state: a pytree with the structure, shapes, dtypes and shardings to restore into;
        returned unchanged when there is no checkpoint.
      meta: this run's metadata; ``key(meta)`` must equal ``key(saved meta)``.
      key: what must agree (default: the whole metadata).
      what: named in the error ("model", "translator", ...).
      workdir: named in the error.
      extend_keys: dotted names of the run's length (``num_steps``, ``epochs``): they may
        differ only with ``extend=True`` (continue a run to a new length; the step
        counter goes on from the checkpoint).
      extend: allow ``extend_keys`` to differ.

    Returns:
      ``(state, start_step)``; start_step is 0 without a checkpoint.

    Raises:
      SettingsMismatchError: the checkpoint was written with other settings; the message
        lists each difference (``mngr`` is closed first).
    """
    key = key or (lambda m: m)

    def restore(step):
        try:
            check_settings(key(read_meta(mngr, step)), key(meta), step=step, what=what,
                           workdir=workdir, extend_keys=extend_keys, extend=extend)
        except SettingsMismatchError:
            mngr.close()
            raise
        return read(mngr, step, state=state)["state"]

    step, restored = _restore_good(mngr, restore)
    if step is None:
        return state, 0
    return restored, int(step)


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
    mngr = manager(workdir, subdir=subdir)
    if step is None:
        chosen = latest_good(mngr)
    else:
        chosen = step if step in mngr.all_steps() else None
        reason = verify(mngr, step) if chosen is not None else None
        if not distributed.broadcast_flag(reason is None):
            reason = reason or "corrupt (found by process 0)"
        if reason is not None:
            mngr.close()
            raise ValueError(f"{what} checkpoint step {step} in {directory!r} is corrupt "
                             f"({reason})")
    if chosen is None:
        steps = sorted(mngr.all_steps())
        mngr.close()
        raise FileNotFoundError(f"no {what} checkpoint{'' if step is None else f' at step {step}'}"
                                f" in {directory!r} (steps: {steps}); {hint}")
    return mngr, int(chosen)
