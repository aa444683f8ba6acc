"""jaxkd's place in the repository: it stands on jaxinfra alone (never jaxdiff or
jaxgraph), and the KT library modules never import the experiment or the CLI."""
import ast
import pathlib
import subprocess
import sys

import pytest

JAXKD = pathlib.Path(__file__).resolve().parents[2] / "jaxkd"
KT_LIBRARY = ("nets", "data", "pairs", "augmentation", "evaluate", "translator")


def _imports(path):
    """Every module named by an import statement of ``path`` (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


@pytest.mark.parametrize("modules", ["jaxkd", "jaxkd, jaxkd.train, jaxkd.kt"])
def test_importing_jaxkd_loads_no_other_domain_package(modules):
    code = (f"import {modules}, sys; bad = sorted(m for m in sys.modules if "
            "m.startswith('jaxdiff') or m.startswith('jaxgraph')); assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=str(JAXKD.parent), check=False)
    assert out.returncode == 0, out.stderr[-2000:]


def test_importing_kt_does_not_load_its_experiment():
    code = ("import sys; from jaxkd import kt; "
            "assert 'jaxkd.kt.experiment' not in sys.modules; "
            "from jaxkd.kt import experiment; "
            "assert kt.run is experiment.run and kt.report is experiment.report")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=str(JAXKD.parent), check=False)
    assert out.returncode == 0, out.stderr[-2000:]


def test_no_jaxkd_source_names_jaxdiff_or_jaxgraph():
    """Also lazy imports inside functions, which the subprocess check cannot see."""
    bad = {str(p.relative_to(JAXKD)): sorted(n for n in _imports(p)
                                            if n.split(".")[0] in ("jaxdiff", "jaxgraph"))
           for p in JAXKD.rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def _kt_edges(name):
    """The jaxkd.kt submodules that jaxkd/kt/<name>.py imports."""
    subs = {p.stem for p in (JAXKD / "kt").glob("*.py")}
    return {n.split(".")[2] for n in _imports(JAXKD / "kt" / f"{name}.py")
            if n.startswith("jaxkd.kt.") and n.split(".")[2] in subs}


def test_kt_modules_form_layers_without_cycles():
    modules = sorted(p.stem for p in (JAXKD / "kt").glob("*.py") if p.stem != "__init__")
    assert modules == sorted(KT_LIBRARY + ("__main__", "experiment"))
    edges = {m: _kt_edges(m) - {m} for m in modules}
    for name in KT_LIBRARY:           # the library never reaches the experiment or the CLI
        assert not edges[name] & {"experiment", "__main__"}, (name, edges[name])
        assert not _imports(JAXKD / "kt" / f"{name}.py") & {"jaxkd.train"}, name
    done, stack = set(), []

    def visit(m):                     # depth-first: a module on the stack seen again = cycle
        assert m not in stack, f"import cycle: {' -> '.join(stack + [m])}"
        if m not in done:
            stack.append(m)
            for n in sorted(edges[m]):
                visit(n)
            stack.pop()
            done.add(m)

    for m in modules:
        visit(m)
