"""jaxinfra.checkpoints: save/read round trips, the checked resume, clear errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from faults import flip_bit, largest_file, truncate

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
    with pytest.raises(ValueError, match="model checkpoint .step 3. with other settings: "
                                         "settings: .a. -> .b.. Use a new --workdir"):
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


# ------------------------------------------------------------------ fault injection
def _two_steps(tmp_path, keep=None):
    mngr = checkpoints.manager(str(tmp_path), keep=keep)
    for s in (1, 2):
        checkpoints.save(mngr, s, meta={"model": "a", "step": s}, state=_tree(float(s)))
    return mngr


@pytest.mark.parametrize("fault", [flip_bit, truncate, lambda p: p.unlink()])
def test_corrupt_latest_falls_back_to_the_newest_good_step(tmp_path, fault):
    mngr = _two_steps(tmp_path, keep=2)
    fault(largest_file(tmp_path / "checkpoints" / "2"))
    assert checkpoints.verify(mngr, 2) is not None
    with pytest.warns(RuntimeWarning, match=r"step 2 .* is corrupt .*using step 1"):
        state, start = checkpoints.resume(mngr, _tree(), {"model": "a", "step": 0},
                                          key=lambda m: m["model"], workdir=str(tmp_path))
    assert start == 1 and float(state["w"][0, 0]) == 1.0
    assert (tmp_path / "checkpoints" / "corrupt" / "2").is_dir()     # kept as evidence
    # Training goes on: steps 2 and 3 are saved again; retention (keep=2) then drops step
    # 1, never a good step in favour of the corrupt one.
    for s in (2, 3):
        checkpoints.save(mngr, s, meta={"model": "a", "step": s}, state=_tree(float(s)))
    assert mngr.all_steps() == [2, 3] and checkpoints.verify(mngr, 3) is None
    mngr.close()


def test_every_step_corrupt_means_a_fresh_start_with_a_warning(tmp_path):
    mngr = _two_steps(tmp_path)
    for s in ("1", "2"):
        flip_bit(largest_file(tmp_path / "checkpoints" / s))
    with pytest.warns(RuntimeWarning, match="no good checkpoint left"):
        _, start = checkpoints.resume(mngr, _tree(), {"model": "a"},
                                      key=lambda m: m["model"])
    assert start == 0 and mngr.all_steps() == []


def test_open_latest_skips_corrupt_steps_and_refuses_an_explicit_corrupt_one(tmp_path):
    _two_steps(tmp_path).close()
    flip_bit(largest_file(tmp_path / "checkpoints" / "2"))
    with pytest.raises(ValueError, match=r"step 2 .* is corrupt \(file .* SHA-256\)"):
        checkpoints.open_latest(str(tmp_path), what="test", hint="", step=2)
    with pytest.warns(RuntimeWarning, match="step 2"):
        mngr, step = checkpoints.open_latest(str(tmp_path), what="test", hint="")
    assert step == 1
    mngr.close()


def test_non_finite_state_is_never_saved(tmp_path):
    mngr = checkpoints.manager(str(tmp_path))
    checkpoints.save(mngr, 1, meta={}, state=_tree())
    bad = {"w": _tree()["w"].at[1, 2].set(jnp.nan), "step": jnp.asarray(2)}
    with pytest.raises(checkpoints.NonFiniteError, match=r"step 2: state\['w'\] holds NaN"):
        checkpoints.save(mngr, 2, meta={}, state=bad, force=True)
    assert mngr.all_steps() == [1]
    mngr.close()


def test_a_sharded_state_is_checked_shard_by_shard(tmp_path):
    """Each shard is checked where it lives (a table split over 4 devices is never
    gathered): a NaN in the last device's rows is found, a replicated copy counts once."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxinfra import mesh as mesh_lib
    m = mesh_lib.mesh_2d(data=1, model=4)
    rows = NamedSharding(m, P("model", None))
    table = jax.device_put(np.arange(16.0).reshape(8, 2), rows)
    replicated = jax.device_put(np.ones(3), mesh_lib.replicated(m))
    assert [s.replica_id for s in replicated.addressable_shards] == [0, 1, 2, 3]
    mngr = checkpoints.manager(str(tmp_path))
    assert checkpoints.save(mngr, 1, meta={}, state={"t": table, "r": replicated})
    bad = jax.device_put(np.arange(16.0).reshape(8, 2), rows).at[7, 1].set(jnp.inf)
    assert [bool(np.all(np.isfinite(s.data))) for s in bad.addressable_shards] == [
        True, True, True, False]
    with pytest.raises(checkpoints.NonFiniteError, match=r"step 2: state\['t'\] holds NaN"):
        checkpoints.save(mngr, 2, meta={}, state={"t": bad, "r": replicated}, force=True)
    assert mngr.all_steps() == [1]
    mngr.close()


def test_settings_mismatch_lists_every_difference(tmp_path):
    mngr = checkpoints.manager(str(tmp_path))
    saved = {"seed": 0, "optim": {"lr": 0.1, "b1": 0.9}, "loss": "kd"}
    checkpoints.save(mngr, 5, meta=saved, state=_tree())
    asked = {"seed": 1, "optim": {"lr": 0.2, "b1": 0.9}, "loss": "kd", "new": (1, 2)}
    with pytest.raises(checkpoints.SettingsMismatchError) as err:
        checkpoints.resume(mngr, _tree(), asked, what="model", workdir="w")
    msg = str(err.value)
    assert "seed: 0 -> 1" in msg and "optim.lr: 0.1 -> 0.2" in msg
    assert "new: '<absent>' -> [1, 2]" in msg and "b1" not in msg and "step 5" in msg


def test_settings_leave_out_run_only_fields():
    import ml_collections
    c = ml_collections.ConfigDict({"seed": 1, "log_every": 5, "optim": {"lr": 0.1},
                                   "sample": {"every": 3, "solver": "heun"},
                                   "progress": True, "num_steps": 10})
    assert checkpoints.settings(c, ignore=("sample",)) == {
        "seed": 1, "optim": {"lr": 0.1}, "num_steps": 10}


def test_a_longer_run_needs_extend_and_counters_continue(tmp_path):
    mngr = checkpoints.manager(str(tmp_path))
    checkpoints.save(mngr, 4, meta={"settings": {"num_steps": 4, "lr": 0.1}}, state=_tree())
    longer = {"settings": {"num_steps": 8, "lr": 0.1}}
    with pytest.raises(checkpoints.SettingsMismatchError,
                       match=r"another length: settings.num_steps: 4 -> 8.*--config.extend=True"):
        checkpoints.resume(mngr, _tree(), longer, extend_keys=("settings.num_steps",))
    mngr = checkpoints.manager(str(tmp_path))
    _, start = checkpoints.resume(mngr, _tree(), longer, extend_keys=("settings.num_steps",),
                                  extend=True)
    assert start == 4                                        # continues, never resets
    other = {"settings": {"num_steps": 8, "lr": 0.2}}
    with pytest.raises(checkpoints.SettingsMismatchError, match=r"settings.lr: 0.1 -> 0.2"):
        checkpoints.resume(mngr, _tree(), other, extend_keys=("settings.num_steps",),
                           extend=True)


def test_read_as_saved_works_on_another_device_count(tmp_path):
    """A state saved sharded over 4 devices is read back (template None) by a process
    with one device."""
    import os
    import subprocess
    import sys

    from jaxinfra import mesh
    mngr = checkpoints.manager(str(tmp_path))
    w = jax.device_put(jnp.arange(8.0), mesh.sharded(mesh.mesh_1d("data")))
    checkpoints.save(mngr, 1, meta={}, state={"w": w, "s": jnp.asarray(3)})
    mngr.close()
    code = ("from jaxinfra import checkpoints\n"
            f"mngr, step = checkpoints.open_latest({str(tmp_path)!r}, what='t', hint='')\n"
            "st = checkpoints.read(mngr, step, state=None)['state']\n"
            "import jax; print(jax.device_count(), st['w'].tolist(), int(st['s']))\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.stdout.strip() == "1 [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0] 3", out.stderr
