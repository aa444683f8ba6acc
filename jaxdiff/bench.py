"""``python -m jaxdiff.bench``: Solver error vs NFE on embedded data (the `make demo` job).

The job lives in :mod:`jaxdiff.experiments.bench`; this module only launches it.
"""
from jaxdiff.experiments.bench import main

if __name__ == "__main__":
    main()
