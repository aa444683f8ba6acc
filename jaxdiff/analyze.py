"""``python -m jaxdiff.analyze``: Geometry of sampling trajectories (:mod:`jaxdiff.experiments.analyze`)."""
from jaxdiff.experiments.analyze import main

if __name__ == "__main__":
    main()
