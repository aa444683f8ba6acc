"""``python distributed_job.py --config=distributed_config.py --workdir=W --out=O
[--jobs=kd,edm,kge,gnn,oad,kt,nc] [--cut_workdir=C] [--coordinator_address=...
--num_processes=... --process_id=...]``: the tiny trainings of distributed_config.py
(jaxkd.train, jaxdiff.train, jaxgraph.kge, jaxgraph.train, jaxgraph.oad, jaxkd.kt,
jaxdiff.noisy_classifier), one after the other in the same processes (one start-up and one
set of imports), through the shared entry point (:func:`jaxinfra.cli.run_job` with
``multi_process=True``, whose flags start jax.distributed).

Job J trains into ``W/J``. With ``--cut_workdir``, kd and edm are also started in ``C/J``
and stopped after update ``config.cut.J`` (a checkpoint there); edm is then resumed from
that checkpoint by a second call in the same processes (output ``edm_resumed``), kd is
left for a later launch with ``--workdir=C --jobs=kd`` to resume in new processes.

Every process then reads the trained parameters back from the checkpoint (a restore on
every process) and writes, outside the workdir, ``O/<output>/p<process>.npz`` (the leaves)
and ``O/<output>/p<process>.json`` (the result, the process layout and which batch rows
and entity-table rows this process holds)."""
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent / "jaxkd")]   # configs/, kd_testnet

from jaxinfra.cli import run_job  # noqa: E402

JOBS = ("kd", "edm", "kge", "gnn", "oad", "kt", "nc")


def define_flags(flags):
    flags.DEFINE_list("jobs", list(JOBS), f"the trainings to run, of {', '.join(JOBS)}")
    flags.DEFINE_string("cut_workdir", None, "also run kd and edm there, stopped after "
                        "config.cut.<job>")
    flags.DEFINE_string("out", None, "folder for this process's results")


def _batch_rows(batch_size: int) -> list:
    """The rows of a global batch this process loads (the "data" mesh of all devices)."""
    from jaxinfra import mesh as mesh_lib
    sharding = mesh_lib.sharded(mesh_lib.mesh_1d("data"))
    return mesh_lib.local_rows(sharding, batch_size).tolist()


def _kd(config, workdir, cut_workdir, cut):
    from kd_testnet import ZOO

    from jaxkd import train

    train._models = lambda: ZOO
    result = train.train_and_evaluate(config, workdir)
    if cut_workdir:
        train.train_and_evaluate(config, cut_workdir, stop_at_step=cut)
    variables, _ = train.load_student(workdir, "last")
    yield "kd", result, variables, {"rows": _batch_rows(int(config.batch_size))}


def _edm_state(workdir, what="EDM"):
    """The last checkpoint's state (EDM: step, params, EMA, Adam) as saved."""
    from jaxinfra import checkpoints

    mngr, step = checkpoints.open_latest(workdir, what=what, hint="")
    try:
        return checkpoints.read(mngr, step, state=None)["state"]
    finally:
        mngr.close()


def _edm(config, workdir, cut_workdir, cut):
    from jaxdiff.training import edm

    result = edm.train_and_evaluate(config, workdir)
    yield "edm", result, _edm_state(workdir), {"rows": _batch_rows(int(config.batch_size))}
    if cut_workdir:
        edm.train_and_evaluate(config, cut_workdir, stop_at_step=cut)
        stopped = sorted(os.listdir(os.path.join(cut_workdir, "checkpoints")))
        resumed = edm.train_and_evaluate(config, cut_workdir)
        yield "edm_resumed", resumed, _edm_state(cut_workdir), {"stopped_with": stopped}


def _kge(config, workdir, cut_workdir, cut):
    import jax

    from jaxgraph.kge import evaluation, experiment, sharded

    del cut_workdir, cut
    result = experiment.train_and_evaluate(config, workdir)
    _, params, meta = evaluation.load_checkpoint(workdir)
    # Where the entity table lives: this process's row blocks of a sharded state built as
    # the run builds it (the same cached, compiled initialisation).
    mesh = experiment.make_mesh(config)
    cfg = experiment.step_config(config, int(meta["num_entities"]))
    steps = meta["data"]["triples"][0] // int(config.train.batch_size)
    tx = experiment.make_optimizer(config, steps)
    state = sharded.init_state(cfg, int(meta["num_relations"]), tx, jax.random.PRNGKey(0),
                               mesh, float(config.model.init_range))
    blocks = sorted([s.index[0].start, s.index[0].stop]
                    for s in state.params["kge"]["entity"].addressable_shards)
    yield "kge", result, params, {"entity_rows": blocks,
                                  "mesh_processes": [d.process_index
                                                     for d in mesh.devices.flat]}


def _gnn(config, workdir, cut_workdir, cut):
    from jaxgraph import train

    del cut_workdir, cut
    result = train.train_and_evaluate(config, workdir)
    yield "gnn", result, _edm_state(workdir, "GNN"), {}


def _oad(config, workdir, cut_workdir, cut):
    from jaxgraph import oad

    del cut_workdir, cut
    result = oad.run_oad(config, workdir)
    yield "oad", result, _edm_state(workdir, "GNN OAD"), {}


def _kt(config, workdir, cut_workdir, cut):
    from jaxkd.kt import experiment, pairs

    del cut_workdir, cut
    result = experiment.run(config, workdir)
    saved = {split: pairs.pair_set(config, split, None, None, workdir, progress=False)
             for split in ("train", "val")}
    yield "kt", result, {"pairs": saved, "translator": _edm_state(workdir, "translator")}, {}


def _nc(config, workdir, cut_workdir, cut):
    from jaxdiff.experiments import noisy_classifier

    del cut_workdir, cut
    result = noisy_classifier.run(config, workdir)
    yield "nc", result, _edm_state(os.path.join(workdir, noisy_classifier.SUBDIR),
                                   "noisy classifier"), {}


def _write(out, me, result, tree, extra):
    import jax
    import numpy as np

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, f"p{me}.npz"),
             **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    info = dict(extra, result=result, process_count=jax.process_count(),
                device_count=jax.device_count(), local_device_count=jax.local_device_count())
    with open(os.path.join(out, f"p{me}.json"), "w") as f:
        json.dump(info, f)


def run(config, workdir):
    import jax
    from absl import flags

    fl = flags.FLAGS
    runners = {"kd": _kd, "edm": _edm, "kge": _kge, "gnn": _gnn, "oad": _oad,
               "kt": _kt, "nc": _nc}
    for job in fl.jobs:
        cut = int(config.cut.get(job, 0))
        cut_dir = os.path.join(fl.cut_workdir, job) if fl.cut_workdir and cut else None
        t0 = time.perf_counter()
        for name, result, tree, extra in runners[job](config[job],
                                                      os.path.join(workdir, job),
                                                      cut_dir, cut):
            _write(os.path.join(fl.out, name), jax.process_index(), result, tree, extra)
            print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    run_job(run, what="test config", define_flags=define_flags, multi_process=True)
