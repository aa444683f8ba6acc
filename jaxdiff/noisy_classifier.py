"""``python -m jaxdiff.noisy_classifier``: train a guidance config's noise-aware classifier
on every device of every process.

The job lives in :mod:`jaxdiff.experiments.noisy_classifier`; this module only launches
it.
"""
from jaxdiff.experiments.noisy_classifier import main

if __name__ == "__main__":
    main()
