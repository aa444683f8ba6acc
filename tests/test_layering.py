"""The layering of the four packages, checked on their source and in fresh interpreters.

- jaxinfra (run infrastructure) imports no domain package; the domain packages jaxdiff,
  jaxkd and jaxgraph never import each other.
- Library modules never import an experiment or a CLI (``*.experiments.*``, ``__main__``
  modules, jaxdiff's ``python -m`` launchers).
- The module import graph (every import statement, also those inside functions) has no
  cycle.
"""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("jaxinfra", "jaxdiff", "jaxkd", "jaxgraph")
DOMAINS = ("jaxdiff", "jaxkd", "jaxgraph")
JAXDIFF_LAUNCHERS = {f"jaxdiff.{n}" for n in ("train", "fid", "bench", "compare", "analyze",
                                               "guide", "detect", "amed_train",
                                               "inception_weights", "noisy_classifier")}


def _modules():
    mods = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name, path):
    """Modules of the four packages that ``name`` imports (resolved to real modules)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + int(is_pkg)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _is_cli(name):
    return (".experiments" in name or name.endswith((".__main__", ".experiment"))
            or name in JAXDIFF_LAUNCHERS)


def test_graph_sees_the_packages():
    assert {"jaxinfra.checkpoints", "jaxdiff.sampling", "jaxkd.methods", "jaxgraph"} <= set(
        MODULES)
    assert "jaxdiff.callables" in GRAPH["jaxdiff.sampling"]


def test_infrastructure_imports_no_domain_and_domains_not_each_other():
    bad = []
    for name, deps in GRAPH.items():
        top = name.split(".")[0]
        for dep in deps:
            dtop = dep.split(".")[0]
            if top == "jaxinfra" and dtop in DOMAINS:
                bad.append((name, dep))
            if top in DOMAINS and dtop in DOMAINS and dtop != top:
                bad.append((name, dep))
    assert not bad, bad


def test_library_modules_import_no_experiment_or_cli():
    bad = [(n, d) for n, deps in GRAPH.items() if not _is_cli(n) for d in deps if _is_cli(d)]
    assert not bad, bad


def test_no_import_cycles():
    # Packages import their submodules and submodules import siblings through the package
    # name; edges into a package's __init__ from its own submodules are not cycles of code.
    def deps(n):
        return {d for d in GRAPH[n] if not (n.startswith(d + ".") and MODULES[d].name ==
                                            "__init__.py")}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, cycles


@pytest.mark.parametrize("package", PACKAGES)
def test_importing_a_package_loads_no_other_domain(package):
    code = (f"import sys, {package}; print(sorted({{m.split('.')[0] for m in sys.modules}}"
            f" & {set(DOMAINS)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.strip()
    assert out == str([package] if package in DOMAINS else []), out
