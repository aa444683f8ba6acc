"""simple on wn18rr: configs/kge/kge.py:simple,wn18rr (see there).

    python -m jaxgraph.kge --config=configs/kge/simple_wn18rr.py --workdir=runs/kge/simple_wn18rr

Extra options after a colon are appended, e.g. simple_wn18rr.py:dim=64,seed=1.
"""
from configs.kge.kge import get_config as _kge


def get_config(arg=None):
    return _kge(",".join(filter(None, ["simple,wn18rr", arg])))
