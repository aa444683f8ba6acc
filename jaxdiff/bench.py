"""``python -m jaxdiff.bench``: Solver error vs NFE on embedded data (the `make demo` job) (:mod:`jaxdiff.experiments.bench`)."""
from jaxdiff.experiments.bench import main

if __name__ == "__main__":
    main()
