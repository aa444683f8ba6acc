"""SHA-256 of files, read in 1 MiB blocks (checkpoints, data files, downloaded weights)."""
from __future__ import annotations

import hashlib

__all__ = ["file_sha256"]


def file_sha256(path: str) -> str:
    """Hex SHA-256 of the file at ``path``, without reading it into memory at once."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
