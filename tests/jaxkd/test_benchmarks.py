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


@pytest.mark.parametrize("name", ["kd_step_torch.py", "kd_fashion.py"])
def test_kd_benchmarks_import_no_other_domain(name):
    mods = _from_imports(ROOT / "benchmarks" / name)
    bad = [m for m in mods if m.split(".")[0] in ("jaxdiff", "jaxgraph")
           or (m.startswith("benchmarks.") and m != "benchmarks.timing")]
    assert not bad, bad


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
