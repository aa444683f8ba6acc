"""jaxinfra: the run infrastructure shared by jaxdiff, jaxkd and jaxgraph.

Nothing here knows about diffusion, distillation or graphs; the three domain packages
import it and never each other.

    jaxinfra.metrics      MetricsLog: JSON lines + TensorBoard scalars per logged step
    jaxinfra.images       image grids as uint8 arrays and PNG files
    jaxinfra.checkpoints  one Orbax checkpoint API: manager, save, read, checked resume
    jaxinfra.cli          the ``python -m pkg.job --config=... --workdir=...`` entry point
    jaxinfra.config_args  parsing of the ``config.py:opt1,key=value`` argument
    jaxinfra.config_checks  config values checked before any work
    jaxinfra.finite       NaN/inf guards naming the step and the metric
    jaxinfra.workdir      one run per workdir (a lock file)
    jaxinfra.mesh         device meshes over all processes, their NamedShardings, global
                          batches from each process's rows
    jaxinfra.distributed  JAX's multi-process runtime: flags, start-up, who writes
    jaxinfra.datasets     offline image data (digits, Fashion-MNIST IDX files, tfds)
    jaxinfra.digests      SHA-256 of files

Submodules are imported on use (``from jaxinfra import checkpoints``), so importing the
package itself loads nothing heavy.
"""
__all__ = ["metrics", "images", "checkpoints", "cli", "config_args", "config_checks", "finite",
           "workdir", "mesh", "distributed", "datasets", "digests"]
