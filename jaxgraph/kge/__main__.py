"""``python -m jaxgraph.kge --config=... --workdir=...`` (see :mod:`jaxgraph.kge.experiment`)."""
from jaxgraph.kge.experiment import main

if __name__ == "__main__":
    main()
