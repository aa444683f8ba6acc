"""jaxkd: knowledge-distillation trainers on Optax train states.

    from jaxkd import models, methods
    student = models.create("resnet8x4", num_classes=100)
    method = methods.get("camkd")

Entry points: ``python -m jaxkd.train --config=configs/kd/<method>.py --workdir=W`` and
``python -m jaxkd.kt --config=configs/kd/kt.py --workdir=W`` (Knowledge Translation,
the subpackage :mod:`jaxkd.kt`). Checkpoints, metrics, device meshes, data sets and the CLI
come from :mod:`jaxinfra`; jaxkd never imports jaxdiff or jaxgraph.
"""
from jaxkd import connectors, data, losses, methods, models

__all__ = ["connectors", "data", "losses", "methods", "models"]
__version__ = "0.1.0"
