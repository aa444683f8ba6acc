"""``python -m jaxdiff.analyze``: Geometry of sampling trajectories.

The job lives in :mod:`jaxdiff.experiments.analyze`; this module only launches it.
"""
from jaxdiff.experiments.analyze import main

if __name__ == "__main__":
    main()
