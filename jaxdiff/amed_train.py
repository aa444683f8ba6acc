"""``python -m jaxdiff.amed_train``: Train AMED predictors and compare them with their base solver (:mod:`jaxdiff.experiments.amed`)."""
from jaxdiff.experiments.amed import main

if __name__ == "__main__":
    main()
