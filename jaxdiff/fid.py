"""``python -m jaxdiff.fid``: Classifier-feature Fréchet distance of a trained EDM model's samplers.

The job lives in :mod:`jaxdiff.experiments.fid`; this module only launches it.
"""
from jaxdiff.experiments.fid import main

if __name__ == "__main__":
    main()
