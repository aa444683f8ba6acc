"""``python -m jaxdiff.train``: Train an EDM denoiser.

The job lives in :mod:`jaxdiff.experiments.train`; this module only launches it.
"""
from jaxdiff.experiments.train import main

if __name__ == "__main__":
    main()
