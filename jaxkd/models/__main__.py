"""Prints the model zoo as a markdown table: ``python -m jaxkd.models [--classes=100]``.

Parameter counts (BN running statistics excluded) and the feature taps' shapes on 32x32x3
inputs, computed with ``jax.eval_shape`` (no weights are materialised).
"""
import argparse

import jax
import jax.numpy as jnp

from jaxkd import models


def table(num_classes: int = 100, size: int = 32, channels: int = 3) -> str:
    rows = [f"| name | params | feats[:-1] on {size}x{size}x{channels} (H×C) | pooled D |",
            "|---|---:|---|---:|"]
    for name in models.MODELS:
        model = models.create(name, num_classes)
        (_, feats), variables = jax.eval_shape(lambda m=model: m.init_with_output(
            jax.random.PRNGKey(0), jnp.zeros((1, size, size, channels))))
        maps = ", ".join(f"{f.shape[1]}×{f.shape[3]}" for f in feats[:-1])
        rows.append(f"| `{name}` | {models.count_params(variables):,} | {maps} | "
                    f"{feats[-1].shape[1]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    a = ap.parse_args()
    print(table(a.classes, a.size, a.channels))
