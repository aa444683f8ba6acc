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
    assert by["amed"]["objective"] == by["ipndm+amed"]["objective"] == "stepwise"
    assert all(r["error"] > 0 for r in rows)
    table = (tmp_path / "results.md").read_text()
    assert "iPNDM+GITS" in table and "iPNDM+AMED-Plugin [stepwise]" in table


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
    cfg.amed_objective = "global"
    with pytest.raises(ValueError, match="unknown config.amed_objective 'global'; valid: "
                                         "stepwise, trajectory, final"):
        compare.run(cfg, str(tmp_path))
    cfg = get_config("test")
    cfg.gits_significance = -0.5
    with pytest.raises(ValueError, match="config.gits_significance must be a finite number "
                                         ">= 0.0, got -0.5"):
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


def test_finished_rows_are_kept_and_reused_and_other_settings_refused(tmp_path, monkeypatch):
    """Each row lands in rows.jsonl when it finishes; a later call that asks for more
    methods runs only the missing ones (a line cut short by a kill is ignored), and a
    call with another setting than which rows to run is refused."""
    from jaxinfra import checkpoints

    cfg = get_config("test")
    cfg.methods, cfg.nfes = ("ipndm",), (4, 5)
    first = compare.run(cfg, str(tmp_path))["regimes"]["gmm"]
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 3                                   # 2 rows + the regime summary
    with open(tmp_path / "rows.jsonl", "a") as f:
        f.write('{"regime": "gmm", "method": "dpmpp", "nfe": 4, "err')   # killed mid-line
    calls = []
    run_method = compare.run_method
    monkeypatch.setattr(compare, "run_method",
                        lambda method, nfe, *a: calls.append((method, nfe))
                        or run_method(method, nfe, *a))
    cfg.methods = ("ipndm", "dpmpp")
    again = compare.run(cfg, str(tmp_path))["regimes"]["gmm"]
    assert calls == [("dpmpp", 4), ("dpmpp", 5)]
    assert again["rows"][:2] == first["rows"]
    assert again["reference_change_when_halved"] == first["reference_change_when_halved"]
    assert {r["method"] for r in again["rows"]} == {"ipndm", "dpmpp"}
    calls.clear()
    assert compare.run(cfg, str(tmp_path))["regimes"]["gmm"]["rows"] == again["rows"]
    assert calls == []
    cfg.seed = 7
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"holds comparison rows of other settings: seed: 0 -> 7"):
        compare.run(cfg, str(tmp_path))
