"""``python -m jaxdiff.inception_weights``: convert pytorch-fid's Inception weights to .npz.

The job lives in :mod:`jaxdiff.experiments.inception_weights`; this module only launches it.
"""
import sys

from jaxdiff.experiments.inception_weights import main

if __name__ == "__main__":
    sys.exit(main())
