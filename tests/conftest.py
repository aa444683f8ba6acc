"""Test configuration: 4 host CPU devices (for sharding tests), float64 enabled, and
offline image data from fixtures only (``JAXINFRA_DATA_PATH`` points at a folder this
session writes; nothing installed on the machine is read).

Library code never touches jax.config; only the tests do.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# One XLA compilation cache per test session, shared by the xdist workers and the
# subprocesses tests start (the same tiny programs are compiled in many tests). It lives
# in a fresh folder made by the controlling process, so no run reuses another's.
if os.environ.get("PYTEST_XDIST_WORKER") is None and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxlab-test-xla-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
# The suite compiles hundreds of small programs and runs most of them once, so XLA's
# compile time dominates: tests ask for fast compiles (LLVM and backend optimisation off).
# Measured on 2 cores: 6.9 min instead of 9.3. Every assertion also holds with the
# optimised compiles users get (``JAX_DISABLE_MOST_OPTIMIZATIONS=0 make test``).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from idx_files import write_fashion_like  # noqa: E402

jax.config.update("jax_enable_x64", True)


# The longest test modules (each 40-100 s on 2 cores), collected first: xdist's loadscope
# hands out modules in collection order, and these came last (tests/test_notebooks.py
# sorts after the package folders), so one worker ran them while the others sat idle.
# Longest first, as measured on a fresh clone (2 cores, 3 workers).
_NB = "tests/test_notebooks.py::TestRun_"
LONGEST_FIRST = ("tests/jaxinfra/test_distributed.py", _NB + "07", _NB + "02",
                 "tests/jaxkd/test_kt.py", "tests/jaxdiff/test_guide.py", _NB + "04",
                 _NB + "01", "tests/jaxdiff/test_compare.py", "tests/jaxdiff/test_amed.py",
                 _NB + "03", _NB + "06")


def pytest_collection_modifyitems(config, items):
    """Longest modules first (a stable sort; the order inside a module is kept)."""
    def rank(item):
        return next((i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)),
                    len(LONGEST_FIRST))
    items.sort(key=rank)


@pytest.fixture(scope="session", autouse=True)
def fixture_data_path(tmp_path_factory):
    """Every test (and every subprocess it starts) sees only the fixture data sets."""
    root = write_fashion_like(tmp_path_factory.mktemp("datasets"))
    old = os.environ.get("JAXINFRA_DATA_PATH")
    os.environ["JAXINFRA_DATA_PATH"] = str(root)
    yield root
    if old is None:
        os.environ.pop("JAXINFRA_DATA_PATH", None)
    else:
        os.environ["JAXINFRA_DATA_PATH"] = old


def make_gmm(seed=0, k=3, dim=4, var_range=(0.3, 1.0)):
    """A small diagonal Gaussian mixture: (means (k, dim), variances (k, dim), weights (k,))."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, dim))
    variances = rng.uniform(*var_range, size=(k, dim))
    weights = rng.dirichlet(np.ones(k))
    return means, variances, weights


def gmm_denoiser(means, variances, weights):
    """Closed-form denoiser of a diagonal GMM for x of shape (B, dim); test-local oracle."""
    means, variances, weights = map(np.asarray, (means, variances, weights))

    def denoise(x, sigma):
        tot = variances + (sigma ** 2)[:, None, None]
        diff = x[:, None, :] - means
        logits = -0.5 * jnp.sum(diff ** 2 / tot + jnp.log(tot), axis=-1) + jnp.log(weights)
        gamma = jax.nn.softmax(logits, axis=1)
        return jnp.sum(gamma[..., None] * (means + variances / tot * diff), axis=1)

    return denoise


@pytest.fixture(scope="session")
def gmm():
    return make_gmm()


@pytest.fixture(scope="session")
def denoise(gmm):
    return gmm_denoiser(*gmm)
