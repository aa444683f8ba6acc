"""The shared entry point: --config and --workdir are required, a bad config arg fails."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["jaxdiff.bench", "jaxdiff.compare", "jaxdiff.amed_train"])
def test_missing_flags_are_a_clear_error(module):
    proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "--config" in proc.stderr and "must have a value" in proc.stderr
