"""The one summary of a table cell run over seeds: mean, sample std (ddof 1) and values."""
from __future__ import annotations

import numpy as np

__all__ = ["mean_std"]


def mean_std(values, scale: float = 1.0) -> dict:
    """``{"mean", "std", "values"}`` of ``scale * values`` (std 0.0 for a single value).

    Args:
      values: the per-seed numbers (a sequence of floats).
      scale: a unit factor (100 for fractions shown in percent).
    """
    v = float(scale) * np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "values": v.tolist()}
