"""jaxdiff.guide: option validation, masks, and the CLI end to end on the tiny config."""
import json
import os

import numpy as np
import pytest

from configs import guide_digits
from jaxdiff.experiments import guide


def test_parse_tasks_and_masks():
    assert guide.parse_tasks("all") == guide.TASKS
    assert guide.parse_tasks("invert, inpaint,invert") == ("invert", "inpaint")
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['guidance'\]"):
        guide.parse_tasks("guidance,invert")
    m = guide.make_mask("bottom_half", (8, 8, 1))
    assert m.shape == (8, 8, 1) and m[:4].min() == 1 and m[4:].max() == 0
    c = guide.make_mask("center", (8, 8, 1))
    assert c.sum() == 64 - 16 and c[2:6, 2:6].max() == 0
    np.testing.assert_array_equal(guide.make_mask("right_half", (8, 8, 1))[:, :, 0],
                                  guide.make_mask("bottom_half", (8, 8, 1))[:, :, 0].T)
    with pytest.raises(ValueError, match="unknown mask 'ring'"):
        guide.make_mask("ring", (8, 8, 1))


@pytest.mark.parametrize("path,value,match", [
    ("task", "all,cfg", r"unknown task"),
    ("inpaint.masks", ("ring",), "unknown mask 'ring'"),
    ("invert.solvers", ("euler", "ipndm"), "'ipndm' is not one of"),
    ("inpaint.solver", "dpmpp", "inpaint.solver must be one of"),
    ("invert.num_steps", (1, 5), "num_steps must be integers >= 2"),
    ("sdedit.sigma_starts", (0.001,), "sdedit.sigma_starts must exceed"),
])
def test_bad_options_fail_before_any_training(tmp_path, path, value, match):
    config = guide_digits.get_config("tiny")
    section, _, key = path.rpartition(".")
    (config[section] if section else config)[key] = value
    with pytest.raises(ValueError, match=match):
        guide.run(config, str(tmp_path))
    assert not os.listdir(tmp_path)            # nothing was trained or written


def test_unconditional_unet_config_is_rejected(tmp_path):
    config = guide_digits.get_config("tiny")
    config.unet.model.num_classes = 0
    with pytest.raises(ValueError, match="class-conditional U-Net"):
        guide.run(config, str(tmp_path))


def test_tiny_run_writes_figures_and_measures(tmp_path):
    config = guide_digits.get_config("tiny")
    config.publish = True
    config.results_path = str(tmp_path / "pub" / "guide.json")
    config.figures_path = str(tmp_path / "pub" / "figures")
    res = guide.run(config, str(tmp_path / "w"))
    with open(tmp_path / "w" / "guide.json") as f:
        assert json.load(f)["tasks"] == list(guide.TASKS)
    assert os.path.isfile(config.results_path)
    for name in ("guidance_accuracy.png", "inversion_error.png", "guide_cfg_grid.png",
                 "guide_classifier_grid.png", "guide_inpaint_grid.png",
                 "guide_invert_grid.png", "guide_sdedit_grid.png"):
        assert os.path.isfile(os.path.join(config.figures_path, name)), name
    # Guidance sweeps: one row per scale, accuracies are fractions of 10 samples.
    for key, scales in (("classifier_free", (0.0, 2.0)), ("classifier", (0.0, 2.0))):
        rows = res[key]["rows"]
        assert [r["scale"] for r in rows] == list(scales)
        for r in rows:
            assert r["accuracy"] * 10 == pytest.approx(round(r["accuracy"] * 10))
            assert 0 < r["p_target"] < 1 and r["fd"] > 0
    # Inpainting keeps the known region exactly; the masked region is generated.
    m = res["inpaint"]["masks"]["bottom_half"]["resample_1"]
    assert m["known_mse"] == 0.0 and m["known_max_abs"] == 0.0
    assert m["masked_mse"] > 0
    assert res["inpaint"]["masks"]["bottom_half"]["unknown_fraction"] == 0.5
    # Inversion: every (solver, steps) pair, NFE per direction from jaxdiff.nfe.
    rows = res["invert"]["rows"]
    assert [(r["solver"], r["nfe_per_direction"]) for r in rows] == [("euler", 3)]
    assert all(np.isfinite(r["rmse"]) for r in rows)
    # SDEdit: a larger starting noise moves further from the guide (unconditionally).
    sd = res["sdedit"]["rows"]
    assert sd[0]["unconditional"]["mse_to_guide"] < sd[1]["unconditional"]["mse_to_guide"]
    # A second run loads the U-Net, both classifiers and the noisy classifier.
    config.task = "classifier"
    again = guide.run(config, str(tmp_path / "w"))
    assert again["classifier"]["noisy_classifier"]["steps_trained_now"] == 0
    assert again["scoring_classifier"]["loaded"]
    # ... and reproduces the same guided samples (same keys, same parameters).
    assert [r["accuracy"] for r in again["classifier"]["rows"]] == \
        [r["accuracy"] for r in res["classifier"]["rows"]]
    assert [r["fd"] for r in again["classifier"]["rows"]] == pytest.approx(
        [r["fd"] for r in res["classifier"]["rows"]], rel=1e-4)
