"""jaxinfra.mesh on 4 fake CPU devices (conftest sets the XLA flag)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfra import mesh as mesh_lib


def test_mesh_1d_and_shardings():
    assert jax.device_count() == 4
    mesh = mesh_lib.mesh_1d("data")
    assert mesh.shape == {"data": 4}
    x = jax.device_put(jnp.arange(8.0), mesh_lib.sharded(mesh))
    assert len(x.addressable_shards) == 4 and x.addressable_shards[0].data.shape == (2,)
    r = jax.device_put(jnp.arange(3.0), mesh_lib.replicated(mesh))
    assert all(s.data.shape == (3,) for s in r.addressable_shards)
    total = jax.jit(jnp.sum)(x)                 # jit inserts the all-reduce
    np.testing.assert_allclose(total, 28.0)
    assert mesh_lib.mesh_1d("nets", 2).shape == {"nets": 2}


def test_too_many_devices_is_an_error():
    with pytest.raises(ValueError, match="num_devices=9 but 4 local devices"):
        mesh_lib.mesh_1d("data", 9)


def test_check_batch_split_is_one_line_naming_the_value_and_the_accepted_ones():
    mesh = mesh_lib.mesh_1d("data", 4)
    mesh_lib.check_batch_split(8, mesh)
    with pytest.raises(ValueError, match=r"^config\.batch_size=18 does not split over the 4 "
                                         r"devices of the mesh; accepted: a multiple of 4 "
                                         r"\(or set config\.num_devices\)$"):
        mesh_lib.check_batch_split(18, mesh, hint=" (or set config.num_devices)")
