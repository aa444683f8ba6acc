"""Training and evaluation of KGE backbones, optionally with CSD-like self-distillation.

    python -m jaxgraph.kge --config=configs/kge/kge.py:rotate,wn18rr,dim=32 --workdir=W
    python -m jaxgraph.kge --config=configs/kge/rotate_wn18rr_csd.py --workdir=W
    python -m jaxgraph.kge --config=configs/kge/kge.py:distmult --config.mesh.model=4 --workdir=W

Modules (imported on use: ``from jaxgraph.kge import step``):

    step        training state, losses and the jitted epoch (``lax.scan`` of steps)
    sharded     the same on entity tables split by rows over a ``model`` mesh axis
                (``shard_map``: lookups, negatives, 1-vs-all, filtered ranking)
    trainer     the epoch loop: batches, teacher refreshes, metrics, validation, checkpoints
    evaluation  filtered evaluation of a split; a trained backbone from a workdir
    experiment  a config (configs/kge/kge.py) to a run: data, settings, optimizer, resume,
                final test, ``results.json``; the command line

Only ``experiment`` reads configs; no other module imports it.

A run writes to ``workdir``: ``checkpoints/<epoch>/`` (items ``state`` and ``meta``,
:mod:`jaxinfra.checkpoints`), ``metrics.jsonl`` (per epoch ``train/*``, validation
``valid/*``, final ``test/*``), ``tb/``, and ``results.json`` (final filtered metrics,
timings, settings).
"""
