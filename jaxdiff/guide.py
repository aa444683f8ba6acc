"""``python -m jaxdiff.guide``: Guidance, inpainting, inversion and SDEdit figures.

The job lives in :mod:`jaxdiff.experiments.guide`; this module only launches it.
"""
from jaxdiff.experiments.guide import main

if __name__ == "__main__":
    main()
