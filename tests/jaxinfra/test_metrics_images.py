"""jaxinfra.metrics and jaxinfra.images: metrics lines, TensorBoard events, image grids."""
import json
import os

import numpy as np
import pytest

from jaxinfra import images as images_lib
from jaxinfra import metrics


def test_metrics_log_rows_and_tensorboard(tmp_path):
    with metrics.MetricsLog(str(tmp_path)) as log:
        row = log.write(3, {"loss": np.float32(0.5), "lr": 1e-3})
        log.write(3, {"accuracy": 0.75}, prefix="eval")
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert rows == [{"step": 3, "train/loss": 0.5, "train/lr": 1e-3},
                    {"step": 3, "eval/accuracy": 0.75}]
    assert row == rows[0]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))


def test_metrics_log_rejects_non_scalars(tmp_path):
    with metrics.MetricsLog(str(tmp_path), tensorboard=False) as log:
        with pytest.raises(ValueError, match="'loss' must be a scalar"):
            log.write(0, {"loss": np.zeros(3)})


def test_image_grid_layout_and_range():
    images = np.stack([np.full((2, 3), -1.0), np.full((2, 3), 1.0), np.zeros((2, 3))])
    g = images_lib.image_grid(images, cols=2)
    assert g.shape == (2 * 3 + 1, 2 * 4 + 1, 1) and g.dtype == np.uint8
    assert (g[1:3, 1:4] == 0).all() and (g[1:3, 5:8] == 255).all()
    assert (g[4:6, 1:4] == 128).all()       # 0 in [-1, 1] -> mid grey
    g01 = images_lib.image_grid(np.ones((1, 2, 2, 3)), value_range=(0, 1))
    assert (g01[1:3, 1:3] == 255).all()
    with pytest.raises(ValueError, match=r"\(N, H, W\[, C\]\)"):
        images_lib.image_grid(np.zeros((2, 3)))


def test_save_image_grid_writes_png(tmp_path):
    from PIL import Image
    path = tmp_path / "sub" / "grid.png"
    images_lib.save_image_grid(np.zeros((4, 8, 8)), str(path), scale=2)
    assert Image.open(path).size == (2 * (2 * 9 + 1), 2 * (2 * 9 + 1))


def test_resumed_run_drops_rows_logged_after_its_checkpoint(tmp_path):
    with metrics.MetricsLog(str(tmp_path), tensorboard=False) as log:
        for step in (2, 4, 6):
            log.write(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "train/lo')                          # cut by a crash
    with metrics.MetricsLog(str(tmp_path), start_step=4, tensorboard=False) as log:
        log.write(6, {"loss": 60.0})
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [(r["step"], r["train/loss"]) for r in rows] == [(2, 2.0), (4, 4.0), (6, 60.0)]
    with metrics.MetricsLog(str(tmp_path), tensorboard=False):    # None: only appends
        pass
    assert len(open(tmp_path / "metrics.jsonl").readlines()) == 3
    with metrics.MetricsLog(str(tmp_path), start_step=0, tensorboard=False):
        pass                                                      # a fresh start
    assert open(tmp_path / "metrics.jsonl").read() == ""
