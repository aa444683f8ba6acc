"""Device meshes over every device of every process, their shardings, and global batches
(``jax.sharding``; never pmap).

A data-parallel trainer shards the batch axis over ``mesh_1d(axis="data")`` and replicates
its state; jit inserts the collectives. A trainer that also shards parameters uses
``mesh_2d(data=..., model=...)``: the batch is split over "data" and replicated over
"model". Tests run on 4 fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4``).

Several processes (:mod:`jaxinfra.distributed`): a mesh spans ``jax.devices()`` (all
processes), handed to ``jax.make_mesh`` process-major (process 0's devices first; on CPU
and GPU that is the mesh order, so each process holds a contiguous block of the "data"
axis; on TPU ``make_mesh`` may reorder them by the physical
topology). Which rows a process feeds is read from the sharding itself
(:func:`local_rows`), so any order works. Batches are made so that results do not
depend on the number of processes:

    perm = epoch_permutation(seed, epoch, n)                        # same on every process
    idx = batch_indices(perm, step_in_epoch, batch_size)            # the global batch
    x, y = global_batch(mesh_lib.sharded(mesh), (images, labels), idx)

or, for updates ``start`` .. ``end - 1`` of a run (epochs of ``n // batch_size`` updates),
``for i, idx in step_batches(seed, n, batch_size, start, end): ...``.

:func:`global_batch` reads only this process's rows of ``idx`` (:func:`local_rows`) and
assembles the global array with ``jax.make_array_from_process_local_data``; on one
process it is ``jax.device_put(data[idx], sharding)``. Since the global batch of a step is
a function of (seed, epoch, step) only, a resumed run sees the batches an uninterrupted
one sees, on any number of processes.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["mesh_1d", "mesh_2d", "mesh_devices", "replicated", "sharded", "process_mesh",
           "replicated_per_process", "check_batch_split", "local_rows", "epoch_permutation",
           "batch_indices", "steps_per_epoch", "step_batches", "global_batch"]


def mesh_devices(num_devices: int = 0) -> list:
    """The devices of a mesh, process-major.

    One process: its first ``num_devices`` local devices (0: all). Several processes:
    the first ``num_devices / process_count`` local devices of each process (0: all
    devices), process 0's first.

    Raises:
      ValueError: more devices asked for than there are, or a count that does not
        split evenly over the processes.
    """
    n_proc = jax.process_count()
    if n_proc == 1:
        devices = jax.local_devices()
        n = len(devices) if not num_devices else int(num_devices)
        if not 1 <= n <= len(devices):
            raise ValueError(f"num_devices={num_devices} but {len(devices)} local devices "
                             "are available")
        return devices[:n]
    per = {}
    for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
        per.setdefault(d.process_index, []).append(d)
    total = sum(len(v) for v in per.values())
    n = total if not num_devices else int(num_devices)
    local = min(len(v) for v in per.values())
    if n % n_proc or not 1 <= n // n_proc <= local:
        raise ValueError(f"num_devices={num_devices} does not split over {n_proc} processes "
                         f"of {local} devices; accepted: 0 (all {total}) or a multiple of "
                         f"{n_proc} up to {n_proc * local}")
    return [d for p in sorted(per) for d in per[p][:n // n_proc]]


def mesh_1d(axis: str = "data", num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh named ``axis`` over :func:`mesh_devices` (one process: its first
    ``num_devices`` local devices, 0: all; several: all processes' devices).

    Raises:
      ValueError: more devices asked for than there are.
    """
    devices = mesh_devices(num_devices)
    return jax.make_mesh((len(devices),), (axis,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)


def mesh_2d(data: int = 0, model: int = 1, axes=("data", "model")) -> jax.sharding.Mesh:
    """A (data, model) mesh over all devices of all processes, process-major: the
    devices of a process lie in consecutive rows (``model`` consecutive devices a row).

    Args:
      data: the size of the data axis (0: all devices / model).
      model: the size of the model axis (parameters sharded over it).
      axes: the two axis names.

    Raises:
      ValueError: ``data * model`` is not the device count, or ``model`` does not divide
        it.
    """
    devices = mesh_devices(0)
    n, model = len(devices), int(model)
    if model < 1 or n % model:
        raise ValueError(f"model={model} does not divide the {n} devices; accepted: a "
                         f"divisor of {n}")
    data = int(data) or n // model
    if data * model != n:
        raise ValueError(f"data={data} x model={model} is not the {n} devices; accepted: "
                         f"data={n // model} (or 0)")
    auto = jax.sharding.AxisType.Auto
    return jax.make_mesh((data, model), tuple(axes), axis_types=(auto, auto),
                         devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def sharded(mesh: jax.sharding.Mesh) -> NamedSharding:
    """The leading axis is split over the mesh's first axis ("data"), the array is
    replicated over the others."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def process_mesh(axis: str = "data") -> jax.sharding.Mesh | None:
    """None on one process; else a 1-D mesh of the first device of every process, for
    jobs whose work is small enough to replicate on each process (or to split by whole
    runs, such as seeds, over the processes) rather than over every local device."""
    n = jax.process_count()
    return None if n == 1 else mesh_1d(axis, n)


def replicated_per_process(tree):
    """``tree`` as it is on one process; with several, replicated over
    :func:`process_mesh`, so that every process runs the same (small) work on its first
    device and the results are global arrays that Orbax checkpoints."""
    mesh = process_mesh()
    return tree if mesh is None else jax.device_put(tree, replicated(mesh))


def check_batch_split(batch_size: int, mesh: jax.sharding.Mesh,
                      name: str = "config.batch_size", hint: str = "") -> None:
    """Raises a one-line ValueError naming ``name`` when ``batch_size`` is not a multiple
    of the mesh's devices (``hint``: what else the user may change)."""
    if int(batch_size) % mesh.size:
        raise ValueError(f"{name}={batch_size} does not split over the {mesh.size} devices "
                         f"of the mesh; accepted: a multiple of {mesh.size}{hint}")


def local_rows(sharding: jax.sharding.Sharding, global_batch: int) -> np.ndarray:
    """The rows of a (global_batch, ...) array sharded by ``sharding`` that this process's
    devices hold, ascending: the order ``jax.make_array_from_process_local_data`` expects.

    Returns:
      (R,) int64 row indices (all B rows on one process).
    """
    rows = set()
    for index in sharding.addressable_devices_indices_map((int(global_batch),)).values():
        rows.update(range(global_batch)[index[0]])
    return np.array(sorted(rows), np.int64)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training examples in (0-indexed) ``epoch``.

    Returns:
      (n,) int64, a permutation of 0..n-1 that is a function of (seed, epoch) only (numpy's
      PCG64 seeded with ``[seed, epoch]``): every process draws the same one, and a
      resumed run sees the batches of an uninterrupted one.
    """
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))


def batch_indices(perm, step_in_epoch: int, batch_size: int) -> np.ndarray:
    """The example indices of batch ``step_in_epoch`` of an epoch ordered by ``perm``.

    Args:
      perm: (n,) the epoch's example order (one per (seed, epoch), the same everywhere).
      step_in_epoch: s, 0-indexed.
      batch_size: B.

    Returns:
      (B,) ``perm[s * B:(s + 1) * B]``.

    Raises:
      ValueError: the epoch has fewer than ``(s + 1) * B`` examples.
    """
    lo, hi = int(step_in_epoch) * int(batch_size), (int(step_in_epoch) + 1) * int(batch_size)
    if hi > len(perm):
        raise ValueError(f"batch {step_in_epoch} of size {batch_size} needs {hi} examples; "
                         f"the epoch has {len(perm)}")
    return np.asarray(perm[lo:hi])


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """S = N // B: the updates of an epoch (the incomplete last batch is dropped).

    Raises:
      ValueError: B > N (an epoch would have no batch).
    """
    n, b = int(num_examples), int(batch_size)
    if not 1 <= b <= n:
        raise ValueError(f"batch size {b} does not fit the {n} training examples (an epoch "
                         f"would have no batch); accepted: 1 to {n}")
    return n // b


def step_batches(seed: int, num_examples: int, batch_size: int, start: int, end: int):
    """The global batches of updates ``start`` .. ``end - 1`` (0-indexed) of a run.

    Update i trains on batch ``i mod S`` of epoch ``i // S`` (S = :func:`steps_per_epoch`),
    cut from that epoch's :func:`epoch_permutation`: a function of (seed, i) only.

    Yields:
      ``(i, idx)`` with idx (B,) int64 example indices.
    """
    spe = steps_per_epoch(num_examples, batch_size)
    epoch, perm = -1, None
    for i in range(int(start), int(end)):
        if i // spe != epoch:
            epoch = i // spe
            perm = epoch_permutation(seed, epoch, num_examples)
        yield i, batch_indices(perm, i % spe, batch_size)


def global_batch(sharding: jax.sharding.Sharding, data, indices):
    """The global batch ``data[indices]`` (a pytree of host arrays with a leading example
    axis), each process reading only its rows (:func:`local_rows`).

    Args:
      sharding: the batch sharding (e.g. :func:`sharded`).
      data: pytree of (n, ...) host arrays (numpy or memory-mapped), the same on every
        process.
      indices: (B,) example indices of the batch (the same on every process).

    Returns:
      The pytree of (B, ...) ``jax.Array`` s sharded by ``sharding``.
    """
    indices = np.asarray(indices)
    b = len(indices)
    if jax.process_count() == 1:
        return jax.device_put(jax.tree.map(lambda a: a[indices], data), sharding)
    mine = indices[local_rows(sharding, b)]
    local = jax.tree.map(lambda a: np.asarray(a[mine]), data)
    return jax.tree.map(
        lambda a: jax.make_array_from_process_local_data(sharding, a, (b,) + a.shape[1:]),
        local)
