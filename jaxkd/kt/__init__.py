"""Knowledge Translation (KT; Sun et al., arXiv 2401.05772): learn to map the parameters of
a large block to those of a compressed one.

    python -m jaxkd.kt --config=configs/kd/kt.py:cpu --workdir=runs/kt_cpu

    from jaxkd import kt
    result = kt.run(config, workdir)            # pairs -> translator -> evaluation

One concern per module (the library modules never import the experiment or the CLI):

    nets          the 28x28 classifier blocks (Begin, BasicBlock, SimpleBlockNoBn, Last),
                  the MLP-Mixer translator and the kernel <-> token layouts
    data          the 28x28 train/test images in [0, 1] (jaxinfra.datasets)
    pairs         pair generation: vmapped, scanned SGD of (large, compressed) pairs,
                  saved per chunk
    augmentation  masking / noise augmentation of translator batches
    evaluate      accuracy of held-out networks around a middle block; the baselines
    translator    translator state, optimizer, epoch step, training with checkpoints
    experiment    the whole run (results.json) and its report
    __main__      the CLI (jaxinfra.cli.run_job)
"""
from jaxkd.kt import augmentation, data, evaluate, experiment, nets, pairs, translator
from jaxkd.kt.augmentation import MASK_TARGETS, AugmentConfig, augment
from jaxkd.kt.data import DATASETS, load_data
from jaxkd.kt.evaluate import baselines, evaluate_blocks, network_accuracy, summary
from jaxkd.kt.experiment import check_config, report, run
from jaxkd.kt.pairs import (PairConfig, generate_pairs, pair_arrays, pair_config, pair_set,
                            train_pair)
from jaxkd.kt.translator import (TranslatorState, augment_config, make_optimizer,
                                 make_translator, train_epoch, train_translator, translate,
                                 translator_loss)

__all__ = ["nets", "data", "pairs", "augmentation", "evaluate", "translator", "experiment",
           "PairConfig", "pair_config", "train_pair", "generate_pairs", "pair_set",
           "pair_arrays", "MASK_TARGETS", "AugmentConfig", "augment", "DATASETS",
           "load_data", "network_accuracy", "evaluate_blocks", "summary", "baselines",
           "TranslatorState", "make_translator", "make_optimizer", "augment_config",
           "translator_loss", "train_epoch", "translate", "train_translator",
           "check_config", "run", "report"]
