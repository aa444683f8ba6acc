"""``python -m jaxdiff.fid``: Classifier-feature Fréchet distance of a trained EDM model's samplers (:mod:`jaxdiff.experiments.fid`)."""
from jaxdiff.experiments.fid import main

if __name__ == "__main__":
    main()
