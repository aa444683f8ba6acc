"""Distillation methods, one module each, registered by name in :data:`METHODS`.

==========  ========  ==========================================================
name        teachers  loss
==========  ========  ==========================================================
ce          0         cross-entropy only (teachers and the "student" baseline)
kd          1         gamma CE + alpha T^2 KL (Hinton et al.)
fitnet      1         gamma CE + alpha KD + beta MSE(ConvReg(f_s[hint]), f_t[hint])
dskd        1         deep supervision: shallow student stages through the teacher's
                      remaining layers, loss-based layer weights (reconstruction)
camkd       K >= 2    confidence-aware weighted KD + weighted intermediate loss
aver        K >= 2    CE + mean over teachers of KD
fitnet_mkd  K >= 2    AVER + beta mean_k MSE(ConvReg_k(f_s[hint]), f_t_k[hint])
ebkd        K >= 2    CE + entropy-weighted KD
aekd        K >= 2    CE + KD weighted by a one-class SVM on the teachers' KD gradients
==========  ========  ==========================================================
"""
from __future__ import annotations

from jaxkd.methods import aekd, aver, camkd, ce, dskd, ebkd, fitnet, fitnet_mkd, kd
from jaxkd.methods.base import Context, Method

__all__ = ["METHODS", "get", "Context", "Method"]

METHODS: dict[str, Method] = {m.METHOD.name: m.METHOD
                              for m in (ce, kd, fitnet, dskd, camkd, aver, fitnet_mkd,
                                        ebkd, aekd)}


def get(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
      ValueError: unknown name (the message lists the valid ones).
    """
    if name not in METHODS:
        raise ValueError(f"unknown distillation method {name!r}; valid: "
                         f"{', '.join(sorted(METHODS))}")
    return METHODS[name]
