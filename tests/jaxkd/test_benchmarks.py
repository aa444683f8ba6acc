"""jaxkd's benchmarks share their timing helpers through benchmarks/timing.py, never
through another package's benchmark (kd_step_torch used to import the k-diffusion one,
which loads jaxdiff)."""
import ast
import pathlib
import subprocess
import sys

import pytest

from benchmarks import timing

ROOT = pathlib.Path(__file__).resolve().parents[2]
HELPERS = {"time_interleaved", "cpu_ticks", "cpu_busy_fraction", "others_busy_fraction",
           "package_version"}


def _from_imports(path):
    """{module: {names}} of the ``from module import names`` statements of ``path``."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                out.setdefault(a.name, set())
    return out


def _defined(path):
    return {n.name for n in ast.parse(path.read_text()).body
            if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


@pytest.mark.parametrize("name", ["kd_step_torch.py", "kdiffusion_vs_jaxdiff.py"])
def test_timing_helpers_come_from_benchmarks_timing(name):
    path = ROOT / "benchmarks" / name
    imports = _from_imports(path)
    assert "benchmarks.kdiffusion_vs_jaxdiff" not in imports
    assert imports.get("benchmarks.timing", set()) == HELPERS
    assert not _defined(path) & (HELPERS | {"_cpu_ticks", "_version"})   # no copies left


#: The benchmark modules every domain's benchmarks may share (they import no domain).
SHARED = ("benchmarks.timing", "benchmarks.seed_stats")


@pytest.mark.parametrize("name", ["kd_step_torch.py", "kd_fashion.py"])
def test_kd_benchmarks_import_no_other_domain(name):
    mods = _from_imports(ROOT / "benchmarks" / name)
    bad = [m for m in mods if m.split(".")[0] in ("jaxdiff", "jaxgraph")
           or (m.startswith("benchmarks.") and m not in SHARED)]
    assert not bad, bad


@pytest.mark.parametrize("module", SHARED)
def test_shared_benchmark_helpers_import_no_domain_package(module):
    path = ROOT / (module.replace(".", "/") + ".py")
    mods = _from_imports(path)
    assert not [m for m in mods if m.split(".")[0] in ("jaxdiff", "jaxkd", "jaxgraph",
                                                       "benchmarks")], mods


def test_seed_stats_are_the_mean_and_the_sample_std():
    from benchmarks.seed_stats import mean_std

    assert mean_std([0.5, 0.7], scale=100) == {"mean": 60.0, "std": 14.142135623730951,
                                               "values": [50.0, 70.0]}
    assert mean_std([0.3]) == {"mean": 0.3, "std": 0.0, "values": [0.3]}


def test_importing_kd_step_torch_loads_no_jaxdiff():
    code = ("import sys, benchmarks.kd_step_torch; bad = sorted(m for m in sys.modules if "
            "m.split('.')[0] in ('jaxdiff', 'jaxgraph', 'torch')); assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=str(ROOT), check=False)
    assert out.returncode == 0, out.stderr[-2000:]


def test_time_interleaved_rotates_and_counts():
    calls = []
    fns = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    out = timing.time_interleaved(fns, min_repeats=3, max_repeats=3, min_total_s=0.0)
    assert calls == list("abc" "bca" "cab")                     # the order rotates
    assert {k: v[2] for k, v in out.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(0.0 <= v[1] <= v[0] for v in out.values())
    # Rounds go on past min_repeats until min_total_s, but never past max_repeats.
    out = timing.time_interleaved({"a": lambda: None}, min_repeats=1, max_repeats=4,
                                  min_total_s=1e9)
    assert out["a"][2] == 4


def test_cpu_figures_and_versions():
    start = timing.cpu_ticks()
    if start is None:
        pytest.skip("no /proc")
    busy, total, own = start
    assert 0 <= busy <= total and own >= 0
    frac = timing.others_busy_fraction(start, timing.cpu_ticks())
    assert frac is not None and 0.0 <= frac <= 1.0
    assert timing.others_busy_fraction(None, start) is None
    assert timing.package_version("numpy") and timing.package_version("no-such-dist") is None


# benchmarks/kd_fashion.py: the rows of the distillation table (issue 15).

def _kd_fashion():
    from benchmarks import kd_fashion
    return kd_fashion


@pytest.mark.parametrize("option", ["fashion", "fashion_full"])
def test_kd_fashion_rows_build_their_configs(option):
    from jaxkd import methods
    kdf = _kd_fashion()
    assert option in kdf.OPTIONS and set(kdf.DEFAULT_ROWS[option]) <= set(kdf.ROWS)
    assert {"kd_w11", "dskd_deep0", "camkd_noscale"} <= set(kdf.ROWS)
    student = {"num_epochs": 2, "optim.milestones": (1,), "max_train": 640}
    for row, (module, overrides) in kdf.ROWS.items():
        c = kdf.row_config(row, option, 1, student)
        defaults = methods.get(module).defaults
        assert c.method.name == module and c.seed == 1 and c.dataset == "fashion_mnist"
        assert (c.num_epochs, tuple(c.optim.milestones), c.max_train) == (2, (1,), 640)
        assert all(k.startswith("method.") and k[7:] in defaults for k in overrides), row
        for k, v in defaults.items():          # the row's overrides, else the defaults
            assert c.method[k] == overrides.get(f"method.{k}", v), (row, k)
        if methods.get(module).teachers == 1:
            assert c.teacher.workdirs == (f"runs/kd_{option}/teacher_s1",)
    rows = {r: kdf.row_config(r, option, 0) for r in ("kd_w11", "dskd_deep0", "camkd_noscale")}
    assert (rows["kd_w11"].method.ce_weight, rows["kd_w11"].method.kd_weight) == (1.0, 1.0)
    assert rows["dskd_deep0"].method.deep_weight == 0.0
    assert rows["camkd_noscale"].method.scale_by_k is False
    t = kdf.row_config("teacher", option, 2)
    assert t.student == "resnet20" and t.seed == 2 and t.method.name == "ce"
    assert kdf._images(t) == ((6000, 2000) if option == "fashion" else (60000, 10000))


def test_kd_fashion_misspelt_override_is_one_line_error(monkeypatch, tmp_path):
    kdf = _kd_fashion()
    monkeypatch.setitem(kdf.ROWS, "kd_typo", ("kd", {"method.kd_wieght": 1.0}))
    with pytest.raises(ValueError) as err:
        kdf.row_config("kd_typo", "fashion_full", 0)
    msg = str(err.value)
    assert "\n" not in msg and "'kd_typo'" in msg and "'method.kd_wieght'" in msg
    assert "method.ce_weight, method.kd_weight, method.temperature" in msg
    monkeypatch.setitem(kdf.ROWS, "lr_typo", ("ce", {"optim.lrr": 0.1}))
    with pytest.raises(ValueError, match=r"row 'lr_typo'.*'optim.lrr'.*optim.lr,"):
        kdf.row_config("lr_typo", "fashion", 0)
    with pytest.raises(ValueError, match="unknown row 'nope'"):
        kdf.row_config("nope", "fashion", 0)
    # main checks every row before any work (nothing is created under the workdir)
    with pytest.raises(ValueError, match="kd_typo"):
        kdf.main(["--option=fashion_full", "--rows=ce,kd_typo", f"--workdir={tmp_path}/s",
                  f"--teacher_root={tmp_path}/t"])
    assert not any(tmp_path.iterdir())


def test_kd_fashion_dry_run_lists_every_run(tmp_path, capsys):
    kdf = _kd_fashion()
    kdf.main(["--option=fashion_full", "--dry_run", "--student_max_train=640",
              f"--workdir={tmp_path}/s", f"--teacher_root={tmp_path}/t",
              "--steps_per_sec=10,teacher=20,camkd=1"])
    out = capsys.readouterr().out
    for r in kdf.ROWS:
        assert f"{r}_s2 " in out
    assert "'method.scale_by_k': False" in out and "kd.py:fashion_full,seed=1" in out
    assert "6 ep x 10 steps (640/10000 images)" in out
    # 3 teachers x 6 epochs x 937 steps; 12 rows x 3 seeds x 6 epochs x 10 steps, each
    # run + 20 s compilation + 6 x 7 s evaluation; camkd at 1 step/s, the rest at 10
    assert "teachers 16866, students 2160; " in out
    teachers = (16866 / 20 + 3 * 62) / 60
    students = (1980 / 10 + 180 / 1 + 36 * 62) / 60
    assert f"about {teachers:.0f} + {students:.0f} min" in out
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="unknown row 'kdd'"):
        kdf.steps_per_sec_table("kdd=3")
    assert kdf.steps_per_sec_table("")["dskd"] == kdf.MEASURED_STEPS_PER_SEC["dskd"]


def _fake_results(kdf):
    acc = lambda m: {"mean": m, "std": 0.5, "values": [m - 0.5, m, m + 0.5]}  # noqa: E731
    rows = ("ce", "kd", "kd_w11", "camkd_noscale")
    return {
        "budget": {"option": "fashion_full", "dataset": "fashion_mnist", "train_images": 10000,
                   "test_images": 10000, "teacher_train_images": 60000, "teacher": "resnet20",
                   "teacher_epochs": 6, "student": "resnet8", "student_epochs": 6,
                   "batch_size": 64, "lr": 0.05, "student_milestones": [4, 5],
                   "teacher_milestones": [4, 5], "hardware": "2 CPU cores",
                   "teacher_run_seconds": 4500.0, "student_run_seconds": 6000.0},
        "rows": {r: {"config": f"configs/kd/{kdf.ROWS[r][0]}.py:fashion_full,seed=<s>",
                     "overrides": dict(kdf.ROWS[r][1])} for r in rows},
        "seeds": [0, 1, 2],
        "table_percent": {r: {"num_seeds": 3, "best": acc(80.0 + i), "last": acc(79.0 + i),
                              "seconds": 500.0} for i, r in enumerate(("teacher",) + rows)},
        "paper_cifar100_percent": kdf.PAPER_CIFAR100}


def test_kd_fashion_render_shows_variant_rows_and_overrides():
    kdf = _kd_fashion()
    lines = kdf.render(_fake_results(kdf)).splitlines()
    assert lines[0].startswith("| method | overrides | seeds |")
    assert len({line.count("|") for line in lines[:6]}) == 1          # one column count
    row = {line.split(" | ")[0][2:]: line for line in lines[2:7]}
    assert "| ce_weight=1.0, kd_weight=1.0 | 3 | 83.00 +- 0.50 |" in row["KD, weights 1/1"]
    assert row["KD, weights 1/1"].endswith("| n/a |")      # the paper ran the defaults only
    assert row["KD"].endswith("| 73.33 |") and "| - | 3 |" in row["KD"]
    assert "| scale_by_k=False |" in row["CA-MKD, no 1/K scaling"]
    assert ("teachers on 60000, students on the first 10000 training images, 10000 test "
            "images; teacher resnet20 6 epochs (lr x0.1 after epoch 4, 5)") in lines[-1]


@pytest.mark.parametrize("name", ["kd_fashion", "kd_fashion_e3"])
def test_kd_fashion_published_results_render_as_before(name):
    import json
    kdf = _kd_fashion()
    results = ROOT / "benchmarks" / "results"
    out = json.loads((results / f"{name}.json").read_text())
    assert kdf.render(out) + "\n" == (results / f"{name}.md").read_text()


def test_kd_fashion_runs_from_logs_reads_run_lines(tmp_path):
    from benchmarks import kd_fashion
    log = tmp_path / "kd.log"
    log.write_text(
        "teacher_s1 teacher.py:fashion_full,seed=1 -> best 0.9240 last 0.9240 "
        "(3682 s, adopted)\n"
        "Traceback (most recent call last):\n"
        "kd_s0 kd.py:fashion_full,seed=0 -> best 0.8712 last 0.8711 (14 s)\n"
        "kd_s0 kd.py:fashion_full,seed=0 -> best 0.8700 last 0.8690 (15 s)\n")
    runs = kd_fashion.runs_from_logs([str(log)])
    assert sorted(runs) == ["kd_s0", "teacher_s1"]
    assert runs["teacher_s1"]["adopted"] is True
    assert runs["kd_s0"] == {"best_acc": 0.87, "last_acc": 0.869, "total_seconds": 15.0,
                             "config": "kd.py:fashion_full,seed=0",
                             "source": f"log:{log}"}          # the later line wins
