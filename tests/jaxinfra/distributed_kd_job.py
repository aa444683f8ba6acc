"""``python distributed_kd_job.py --config=distributed_kd_config.py --workdir=W --out=O
[--cut_workdir=C --cut_at=N] [--coordinator_address=... --num_processes=...
--process_id=...]``: jaxkd.train through the shared entry point
(:func:`jaxinfra.cli.run_job`, whose flags start jax.distributed) with the tiny test CNN.
Every process then reads the student back (``load_student``: a restore on every process)
and writes, outside the workdir, ``O/p<process>.npz`` (its leaves) and
``O/p<process>.json`` (the result, the process layout and the batch rows this process
feeds). With ``--cut_workdir``, the same run is also started in C and stopped after
update N (a checkpoint there); the processes then exit, and a later job resumes C."""
import json
import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent / "jaxkd")]   # configs/, kd_testnet

from jaxinfra.cli import run_job  # noqa: E402


def define_flags(flags):
    flags.DEFINE_string("cut_workdir", None, "also run in this workdir, stopped at --cut_at")
    flags.DEFINE_integer("cut_at", 0, "the update the --cut_workdir run stops after")
    flags.DEFINE_string("out", None, "folder for this process's results")


def run(config, workdir):
    import jax
    import numpy as np
    from absl import flags
    from kd_testnet import ZOO

    from jaxinfra import mesh as mesh_lib
    from jaxkd import train

    train._models = lambda: ZOO
    fl = flags.FLAGS
    result = train.train_and_evaluate(config, workdir)
    if fl.cut_workdir:
        train.train_and_evaluate(config, fl.cut_workdir, stop_at_step=fl.cut_at)
    variables, _ = train.load_student(workdir, "last")
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    me = jax.process_index()
    os.makedirs(fl.out, exist_ok=True)
    np.savez(os.path.join(fl.out, f"p{me}.npz"),
             **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    sharding = mesh_lib.sharded(mesh_lib.mesh_1d("data"))
    info = {"result": result, "process_count": jax.process_count(),
            "device_count": jax.device_count(),
            "local_device_count": jax.local_device_count(),
            "rows": mesh_lib.local_rows(sharding, int(config.batch_size)).tolist()}
    with open(os.path.join(fl.out, f"p{me}.json"), "w") as f:
        json.dump(info, f)
    return result


if __name__ == "__main__":
    run_job(run, what="test config", define_flags=define_flags, multi_process=True)
