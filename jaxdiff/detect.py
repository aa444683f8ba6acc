"""``python -m jaxdiff.detect``: Detection of generated images (:mod:`jaxdiff.experiments.detect`)."""
from jaxdiff.experiments.detect import main

if __name__ == "__main__":
    main()
