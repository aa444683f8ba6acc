"""simple on fb15k237: configs/kge/kge.py:simple,fb15k-237 (see there).

    python -m jaxgraph.kge --config=configs/kge/simple_fb15k237.py --workdir=runs/kge/simple_fb15k237

Extra options after a colon are appended, e.g. simple_fb15k237.py:dim=64,seed=1.
"""
from configs.kge.kge import get_config as _kge


def get_config(arg=None):
    return _kge(",".join(filter(None, ["simple,fb15k-237", arg])))
