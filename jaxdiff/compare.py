"""``python -m jaxdiff.compare``: The papers' comparison of fast samplers at NFE 3..10 (:mod:`jaxdiff.experiments.compare`)."""
from jaxdiff.experiments.compare import main

if __name__ == "__main__":
    main()
