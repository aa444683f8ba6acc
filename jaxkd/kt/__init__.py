"""Knowledge Translation (KT; Sun et al., arXiv 2401.05772): learn to map the parameters of
a large block to those of a compressed one.

    python -m jaxkd.kt --config=configs/kd/kt.py:cpu --workdir=runs/kt_cpu

    from jaxkd import kt
    result = kt.run(config, workdir)            # pairs -> translator -> evaluation

One concern per module; the library modules never import the experiment or the CLI, and
importing this package does not load the experiment either (``run``, ``report`` and
``check_config`` are fetched from :mod:`jaxkd.kt.experiment` on first use):

    nets          the 28x28 classifier blocks (Begin, BasicBlock, SimpleBlockNoBn, Last),
                  the MLP-Mixer translator and the kernel <-> token layouts
    data          the 28x28 train/test images in [0, 1] (jaxinfra.datasets)
    pairs         pair generation: vmapped, scanned SGD of (large, compressed) pairs,
                  saved per chunk
    augmentation  masking / noise augmentation of translator batches
    evaluate      accuracy of held-out networks around a middle block; the baselines
    ridge         the ridge-regression (linear translator) baseline, closed form
    translator    translator state, optimizer, epoch step, training with checkpoints
    experiment    the whole run (results.json) and its report
    __main__      the CLI (jaxinfra.cli.run_job)
"""
import importlib

from jaxkd.kt import augmentation, data, evaluate, nets, pairs, ridge, translator
from jaxkd.kt.augmentation import MASK_TARGETS, AugmentConfig, augment
from jaxkd.kt.data import DATASETS, load_data
from jaxkd.kt.evaluate import baselines, evaluate_blocks, network_accuracy, summary
from jaxkd.kt.pairs import (
    PairConfig,
    canonical_pairs,
    generate_pairs,
    pair_arrays,
    pair_config,
    pair_set,
    train_pair,
)
from jaxkd.kt.translator import (
    TranslatorState,
    augment_config,
    make_optimizer,
    make_translator,
    train_epoch,
    train_translator,
    translate,
    translator_loss,
)

__all__ = ["DATASETS", "MASK_TARGETS", "AugmentConfig", "PairConfig", "TranslatorState", "augment",
           "augment_config", "augmentation", "baselines", "canonical_pairs", "check_config",
           "data", "evaluate", "evaluate_blocks", "experiment", "generate_pairs", "load_data",
           "make_optimizer", "make_translator", "nets", "network_accuracy", "pair_arrays",
           "pair_config", "pair_set", "pairs", "report", "ridge", "run", "summary",
           "train_epoch", "train_pair", "train_translator", "translate", "translator",
           "translator_loss"]

_EXPERIMENT_NAMES = ("experiment", "run", "report", "check_config")


def __getattr__(name):
    """``experiment``, ``run``, ``report`` and ``check_config``, imported on first use."""
    if name in _EXPERIMENT_NAMES:
        module = importlib.import_module("jaxkd.kt.experiment")
        return module if name == "experiment" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
