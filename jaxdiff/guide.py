"""``python -m jaxdiff.guide``: Guidance, inpainting, inversion and SDEdit figures (:mod:`jaxdiff.experiments.guide`)."""
from jaxdiff.experiments.guide import main

if __name__ == "__main__":
    main()
