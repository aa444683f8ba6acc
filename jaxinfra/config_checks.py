"""Checks of config values, run before any data are read or anything is compiled.

    batch = config_checks.int_at_least(config, "train.batch_size", 1)
    lr = config_checks.positive(config, "optim.lr")
    kind = config_checks.one_of(config, "model.name", ("gcn", "gat"))

A bad value is a ValueError naming the field, the value and what is accepted; the CLI
(:mod:`jaxinfra.cli`) prints it as one line.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["get", "int_at_least", "positive", "finite_at_least", "number_at_least",
           "one_of"]


def get(config, name: str):
    """``config.a.b`` for ``name = "a.b"`` (ConfigDicts and dicts)."""
    node = config
    for part in name.split("."):
        node = node[part]
    return node


def int_at_least(config, name: str, minimum: int = 1, *, what: str = "") -> int:
    """``config.<name>`` as an int; ValueError unless it is an integer >= ``minimum``.

    ``what`` says what the number counts, shown in the message.
    """
    value = get(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        about = f" ({what})" if what else ""
        raise ValueError(f"config.{name} must be an integer >= {minimum}{about}, got "
                         f"{value!r}")
    return int(value)


def positive(config, name: str) -> float:
    """``config.<name>`` as a float; ValueError when it is <= 0 (NaN passes: training then
    stops at its first step with :class:`jaxinfra.finite.NonFiniteError`, naming it)."""
    value = get(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value <= 0:
        raise ValueError(f"config.{name} must be a number > 0, got {value!r}")
    return float(value)


def finite_at_least(value, label: str, minimum: float = 0.0) -> float:
    """``value`` as a float; ValueError ("<label> must be a finite number >= <minimum>")
    unless it is one. For arguments of library functions as well as config fields."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
            or not np.isfinite(value) or value < minimum:
        raise ValueError(f"{label} must be a finite number >= {minimum}, got {value!r}")
    return float(value)


def number_at_least(config, name: str, minimum: float = 0.0) -> float:
    """``config.<name>`` as a float; ValueError unless it is a finite number >= ``minimum``."""
    return finite_at_least(get(config, name), f"config.{name}", minimum)


def one_of(config, name: str, valid: Sequence) -> str:
    """``config.<name>``; ValueError naming the valid values when it is not one of them."""
    value = get(config, name)
    if value not in tuple(valid):
        raise ValueError(f"unknown config.{name} {value!r}; valid: "
                         f"{', '.join(map(str, valid))}")
    return value
