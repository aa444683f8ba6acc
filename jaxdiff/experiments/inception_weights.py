"""Get pytorch-fid's Inception weights into an ``.npz`` that loads without torch:
``python -m jaxdiff.inception_weights``.

    python -m jaxdiff.inception_weights --convert=pt_inception-2015-12-05-6726825d.pth --out=inc.npz
    python -m jaxdiff.inception_weights --download      # fetch into the cache, then convert

The default ``--out`` is :func:`jaxdiff.metrics.cache_dir`, where
:func:`jaxdiff.metrics.load_inception` looks when it is given no path.
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxdiff import metrics


def main(argv=None) -> int:
    """Convert (or download, then convert) the weights; 0 on success, 1 with a one-line
    error."""
    parser = argparse.ArgumentParser(
        prog="python -m jaxdiff.inception_weights",
        description="Convert pytorch-fid's Inception weights to an .npz readable without "
                    "torch.")
    parser.add_argument("--convert", metavar="PTH", help="pytorch-fid's .pth weight file")
    parser.add_argument("--download", action="store_true",
                        help=f"download {metrics.WEIGHTS_FILE} into the cache first (network)")
    default_out = os.path.join(metrics.cache_dir(), metrics.NPZ_FILE)
    parser.add_argument("--out", metavar="NPZ", default=None,
                        help=f"output .npz (default: {default_out})")
    args = parser.parse_args(argv)
    if bool(args.convert) == bool(args.download):
        parser.error("give exactly one of --convert=<pth> and --download")
    try:
        pth = metrics.download_weights() if args.download else args.convert
        out = metrics.convert(pth, args.out or default_out)
    except (OSError, ImportError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0
