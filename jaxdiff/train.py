"""``python -m jaxdiff.train``: Train an EDM denoiser (:mod:`jaxdiff.experiments.train`)."""
from jaxdiff.experiments.train import main

if __name__ == "__main__":
    main()
