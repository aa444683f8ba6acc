"""Names users already call stay valid: the public API, and every ``python -m`` entry point
and config path that the README and the config docstrings show."""
import importlib
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "configs").rglob("*.py"))]
TEXT = "\n".join(p.read_text() for p in DOCS)
ENTRY_POINTS = sorted(set(re.findall(r"python -m ((?:jaxdiff|jaxkd|jaxgraph|benchmarks)"
                                     r"(?:\.\w+)+)", TEXT)))
CONFIG_PATHS = sorted(set(re.findall(r"--config=(configs/[\w/]+\.py)", TEXT)))


@pytest.mark.parametrize("name", ["jaxdiff.sample", "jaxdiff.nfe", "jaxdiff.steps_for_nfe",
                                  "jaxdiff.schedules.get", "jaxdiff.denoisers",
                                  "jaxdiff.schedules.align_your_steps",
                                  "jaxdiff.wrappers.vp_eps", "jaxdiff.wrappers.flow",
                                  "jaxdiff.gits.search", "jaxdiff.gits.dp_schedule",
                                  "jaxdiff.amed.init", "jaxdiff.solvers.SOLVERS",
                                  "jaxkd.models", "jaxkd.methods", "jaxgraph.kge_models",
                                  "jaxinfra.checkpoints.resume"])
def test_public_names(name):
    module, _, attr = name.rpartition(".")
    assert hasattr(importlib.import_module(module), attr), name


def test_the_docs_show_entry_points_and_configs():
    assert {"jaxdiff.train", "jaxdiff.bench", "jaxkd.train", "jaxkd.kt", "jaxgraph.kge",
            "jaxgraph.oad"} <= set(ENTRY_POINTS)
    assert len(CONFIG_PATHS) > 20


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_documented_entry_point_exists(module):
    assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("path", CONFIG_PATHS)
def test_every_documented_config_exists(path):
    assert (ROOT / path).is_file(), path


def _python_blocks():
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S):
            yield path.name, block


IMPORTS = sorted({(name, line.split("#")[0].strip()) for name, block in _python_blocks()
                  for line in block.splitlines()
                  if re.match(r"\s*(from [\w.]+ import |import [\w.])", line)})


@pytest.mark.parametrize("doc,line", IMPORTS, ids=[f"{d}:{x}" for d, x in IMPORTS])
def test_every_import_the_docs_show_works(doc, line):
    exec(line, {})      # noqa: S102 - the docs' own import line


def test_the_readme_five_lines_run():
    block = next(b for name, b in _python_blocks() if name == "README.md")
    namespace = {}
    exec(block, namespace)      # noqa: S102 - the README's first example, as written
    assert namespace["x_0"].shape == (16, 8, 8, 1)
    assert namespace["traj"].xs.shape == (6, 16, 8, 8, 1)
