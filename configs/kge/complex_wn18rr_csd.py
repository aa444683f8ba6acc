"""complex on wn18rr with CSD-like self-distillation: configs/kge/kge.py:complex,wn18rr,csd (see there).

    python -m jaxgraph.kge --config=configs/kge/complex_wn18rr_csd.py --workdir=runs/kge/complex_wn18rr_csd

Extra options after a colon are appended, e.g. complex_wn18rr_csd.py:dim=64,seed=1.
"""
from configs.kge.kge import get_config as _kge


def get_config(arg=None):
    return _kge(",".join(filter(None, ["complex,wn18rr,csd", arg])))
