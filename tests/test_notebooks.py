"""Execute every ``colab/*.ipynb`` end to end in reduced mode.

Each notebook runs in a fresh kernel started from this interpreter (``sys.executable``),
with ``JAXDIFF_NOTEBOOK_REDUCED=1`` and the repository root as working directory. The
kernelspec lives in a private temporary directory, so a ``python3`` kernel registered
elsewhere on the machine (another virtualenv, the user's ``~/.local``) is never used.
"""
from __future__ import annotations

import json
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "colab").glob("*.ipynb"))
KERNEL_NAME = "jaxdiff-test"
CELL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec directory holding one kernel that runs this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL_NAME
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jaxdiff test kernel",
        "language": "python",
    }))
    return root


def _read(path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    """Stored notebooks carry no outputs or execution counts (keeps diffs reviewable)."""
    nb = _read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), f"{path.name}: cell {i} has stored outputs"
        assert cell.get("execution_count") is None, (
            f"{path.name}: cell {i} has an execution count")


def _run_notebook(path, kernel_dir, monkeypatch):
    """Every cell runs without error in reduced mode (the kernel inherits this env)."""
    monkeypatch.setenv("JAXDIFF_NOTEBOOK_REDUCED", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    ksm = KernelSpecManager(kernel_dirs=[str(kernel_dir)], ensure_native_kernel=False)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=ksm)
    client = nbclient.NotebookClient(
        _read(path), km=km, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(REPO_ROOT)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # pragma: no cover - failure path
        pytest.fail(f"{path.name} failed:\n{e}")


def _runner(path):
    class Runner:
        def test_notebook_runs(self, kernel_dir, monkeypatch):
            _run_notebook(path, kernel_dir, monkeypatch)
    return Runner


# One test class per notebook: `--dist loadscope` schedules classes separately, so the
# notebooks (the suite's longest tests) are shared between the workers instead of all
# running on the one worker that takes this module.
for _path in NOTEBOOKS:
    globals()[f"TestRun_{_path.stem}"] = _runner(_path)


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks under colab/"
