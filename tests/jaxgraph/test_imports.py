"""jaxgraph stands on jaxinfra alone: no jaxdiff / jaxkd module is ever loaded, and the
KGE library modules never load the experiment (config / command-line) module."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_PROBE = """
import importlib, json, pkgutil, sys
import jaxgraph
after_package = sorted(m for m in sys.modules if m.split(".")[0] in ("jaxdiff", "jaxkd"))
for lib in ("jaxgraph.kge.step", "jaxgraph.kge.trainer", "jaxgraph.kge.evaluation"):
    importlib.import_module(lib)
library_loads_experiment = "jaxgraph.kge.experiment" in sys.modules
for info in pkgutil.walk_packages(jaxgraph.__path__, "jaxgraph."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
every_module = sorted(m for m in sys.modules if m.split(".")[0] in ("jaxdiff", "jaxkd"))
print(json.dumps([after_package, library_loads_experiment, every_module]))
"""


def test_jaxgraph_loads_no_jaxdiff_or_jaxkd_module():
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    after_package, library_loads_experiment, every_module = json.loads(
        out.stdout.strip().splitlines()[-1])
    assert after_package == [], "import jaxgraph loaded " + ", ".join(after_package)
    assert not library_loads_experiment
    assert every_module == [], "jaxgraph's modules loaded " + ", ".join(every_module)
