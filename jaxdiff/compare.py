"""``python -m jaxdiff.compare``: The papers' comparison of fast samplers at NFE 3..10.

The job lives in :mod:`jaxdiff.experiments.compare`; this module only launches it.
"""
from jaxdiff.experiments.compare import main

if __name__ == "__main__":
    main()
