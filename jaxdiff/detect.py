"""``python -m jaxdiff.detect``: Detection of generated images.

The job lives in :mod:`jaxdiff.experiments.detect`; this module only launches it.
"""
from jaxdiff.experiments.detect import main

if __name__ == "__main__":
    main()
