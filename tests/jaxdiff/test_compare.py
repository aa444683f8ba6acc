"""The low-NFE comparison job (GITS, AMED, baselines) end to end in a test-sized mode."""
import pytest

from configs.compare_digits import get_config
from jaxdiff.experiments import compare


def test_compare_runs_every_method(tmp_path):
    cfg = get_config("test")
    cfg.methods = compare.METHODS
    res = compare.run(cfg, str(tmp_path))
    rows = res["regimes"]["gmm"]["rows"]
    assert {r["method"] for r in rows} == set(compare.METHODS)
    by = {r["method"]: r for r in rows}
    assert by["ipndm+gits"]["teacher_nfe"] == 8 * 10 and by["ipndm"]["teacher_nfe"] == 0
    # The settings of every GITS row: the config's search (select) or the reference cost.
    settings = by["ipndm+gits"]["gits"]
    assert settings["metric"] == "select" and settings["candidates"] == ["dev", "l2", "base"]
    assert settings["selected"] in settings["candidate_errors"]
    assert by["ipndm+gits"]["selection_nfe"] == 3 * 8 * 5
    assert by["ipndm+gits_dev"]["gits"]["metric"] == "dev"
    assert by["ipndm+gits_dev"]["selection_nfe"] == 0
    assert by["amed"]["afs"] == {"used": True, "mean": "data"}  # NFE 5: AFS
    assert by["amed"]["teacher_nfe"] > 0
    assert all(r["error"] > 0 for r in rows)
    assert "iPNDM+GITS" in (tmp_path / "results.md").read_text()


def test_bad_config_fails_fast(tmp_path):
    cfg = get_config("test")
    cfg.methods = ("ipndm", "rk4")
    with pytest.raises(ValueError, match="unknown method 'rk4'"):
        compare.run(cfg, str(tmp_path))
    cfg = get_config("test")
    cfg.amed_afs_mean = "mean"
    with pytest.raises(ValueError,
                       match="unknown config.amed_afs_mean 'mean'; valid: zero, data, denoiser"):
        compare.run(cfg, str(tmp_path))
    cfg = get_config("test")
    cfg.regimes = ("edm",)
    cfg.edm_workdir = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="python -m jaxdiff.train"):
        compare.run(cfg, str(tmp_path))


def test_edm_regime_reports_the_network_error_by_sigma(tmp_path):
    from configs import edm_digits
    from jaxdiff.training import edm
    net = edm_digits.get_config("tiny")
    net.progress = False
    edm.train_and_evaluate(net, str(tmp_path / "edm"))
    cfg = get_config("test")
    cfg.regimes, cfg.methods, cfg.fd = ("edm",), ("ipndm", "ipndm+gits"), False
    cfg.edm_workdir, cfg.edm_config_arg = str(tmp_path / "edm"), "tiny"
    res = compare.run(cfg, str(tmp_path / "compare"))["regimes"]["edm"]
    errors = res["error_vs_optimal_by_sigma"]
    assert list(errors) == [f"{s:g}" for s in cfg.error_sigmas]
    # A few steps of a tiny U-Net: far from the exact denoiser, and finite everywhere.
    assert all(0 < e < 50 for e in errors.values()), errors
    assert {r["method"] for r in res["rows"]} == {"ipndm", "ipndm+gits"}
    assert "error to the exact denoiser" in (tmp_path / "compare" / "results.md").read_text()
