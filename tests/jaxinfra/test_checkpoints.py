"""jaxinfra.checkpoints: save/read round trips, the checked resume, clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfra import checkpoints


def _tree(v=0.0):
    return {"w": jnp.arange(6.0).reshape(2, 3) + v, "step": jnp.asarray(7, jnp.int32)}


def test_save_read_round_trip(tmp_path):
    mngr = checkpoints.manager(str(tmp_path), keep=1)
    assert checkpoints.save(mngr, 7, meta={"model": [1, 2]}, state=_tree(), extra=_tree(1.0))
    mngr.close()
    mngr, step = checkpoints.open_latest(str(tmp_path), what="test", hint="make one")
    assert step == 7 and checkpoints.read_meta(mngr, step) == {"model": [1, 2]}
    back = checkpoints.read(mngr, step, state=_tree(5.0), extra=jax.eval_shape(_tree))
    np.testing.assert_array_equal(back["state"]["w"], _tree()["w"])
    np.testing.assert_array_equal(back["extra"]["w"], _tree(1.0)["w"])
    assert back["state"]["step"].dtype == jnp.int32
    mngr.close()


def test_keep_and_save_every(tmp_path):
    mngr = checkpoints.manager(str(tmp_path), save_every=2, keep=2)
    written = [checkpoints.save(mngr, s, meta={}, state=_tree(s)) for s in range(1, 6)]
    assert written == [True, True, False, True, False]   # Orbax always keeps the first
    checkpoints.save(mngr, 5, meta={}, state=_tree(5), force=True)
    assert mngr.all_steps() == [4, 5]
    mngr.close()


def test_resume_restores_latest_and_refuses_other_runs(tmp_path):
    mngr = checkpoints.manager(str(tmp_path))
    state, start = checkpoints.resume(mngr, _tree(), {"model": "a"}, workdir=str(tmp_path))
    assert start == 0
    checkpoints.save(mngr, 3, meta={"model": "a", "step": 3}, state=_tree(3.0))
    state, start = checkpoints.resume(mngr, _tree(), {"model": "a", "step": 0},
                                      key=lambda m: m["model"], workdir=str(tmp_path))
    assert start == 3 and float(state["w"][0, 0]) == 3.0
    with pytest.raises(ValueError, match="different model.*use a new workdir"):
        checkpoints.resume(mngr, _tree(), {"model": "b"}, key=lambda m: m["model"],
                           what="model", workdir=str(tmp_path))


def test_open_latest_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="no EDM checkpoints.*train it"):
        checkpoints.open_latest(str(tmp_path), what="EDM", hint="train it")
    mngr = checkpoints.manager(str(tmp_path))
    checkpoints.save(mngr, 2, meta={}, state=_tree())
    mngr.close()
    with pytest.raises(FileNotFoundError, match=r"at step 9.*steps: \[2\]"):
        checkpoints.open_latest(str(tmp_path), what="EDM", hint="x", step=9)
