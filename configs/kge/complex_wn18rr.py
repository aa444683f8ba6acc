"""complex on wn18rr: configs/kge/kge.py:complex,wn18rr (see there).

    python -m jaxgraph.kge --config=configs/kge/complex_wn18rr.py --workdir=runs/kge/complex_wn18rr

Extra options after a colon are appended, e.g. complex_wn18rr.py:dim=64,seed=1.
"""
from configs.kge.kge import get_config as _kge


def get_config(arg=None):
    return _kge(",".join(filter(None, ["complex,wn18rr", arg])))
