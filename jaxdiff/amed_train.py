"""``python -m jaxdiff.amed_train``: Train AMED predictors and compare them with their base solver.

The job lives in :mod:`jaxdiff.experiments.amed`; this module only launches it.
"""
from jaxdiff.experiments.amed import main

if __name__ == "__main__":
    main()
