"""Fault injection on checkpoints written by real runs (shared by the tests)."""


def largest_file(step_dir):
    """The largest data file of a checkpoint step folder (``pathlib.Path``)."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != "integrity.json"]
    return max(files, key=lambda p: p.stat().st_size)


def flip_bit(path):
    """Flips one bit in the middle of ``path``."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path):
    """Cuts ``path`` to half its size."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def checkpoint_steps(workdir):
    """The steps saved under ``workdir/checkpoints`` (corrupt ones moved aside excluded)."""
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def assert_same_leaves(a, b):
    """Two pytrees (or leaf lists) are bit-identical: a resumed run equals the reference."""
    import jax
    import numpy as np
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)
