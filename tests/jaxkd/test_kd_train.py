"""jaxkd.train: loss goes down, exact resume, sharded == single-device, clear errors.

Uses the tiny CNN of kd_testnet (the jaxkd model interface) on scikit-learn digits so
that each compiled step costs a second, not a ResNet's compile.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kd_testnet import ZOO

from configs.kd import common
from jaxinfra import mesh as mesh_lib
from jaxkd import data, train


@pytest.fixture(scope="module", autouse=True)
def tiny_zoo():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "_models", lambda: ZOO)
        yield


@pytest.fixture(scope="module")
def datasets():
    tr = data.load("digits", "train", max_examples=64)
    te = data.load("digits", "test", max_examples=40)
    return tr, te


def _config(method="ce", **kw):
    c = common.make(method, "tiny", num_teachers=2 if method == "camkd" else 1)
    c.student = "tiny4"
    c.teacher.model = "tiny4"
    c.batch_size = 16
    c.num_epochs = 2
    c.optim.milestones = ()
    c.optim.lr = 0.2
    c.augment.pad = 1                       # 8x8 digits: crops shifted by <= 1 pixel
    c.log_every = 2
    c.eval_batch_size = 40
    c.num_devices = 1
    for k, v in kw.items():
        c[k] = v
    return c


def _teachers(k, seed=0):
    """K random tiny teachers stacked (K, ...): one compiled, vmapped init."""
    m = ZOO.create("tiny4", num_classes=10)
    init = lambda key: m.init(key, jnp.zeros((1, 8, 8, 1), jnp.float32), train=False)
    return jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(seed), k))


def test_a_few_steps_lower_the_loss(datasets):
    tr, _ = datasets
    # The settings (and so the compiled step) of the resume test's runs.
    fill = tuple(-m / s for m, s in zip(tr.mean, tr.std))
    setup = train.build(_config("ce"), (8, 8, 1), 10, 4, fill=fill)
    batch = mesh_lib.sharded(setup.mesh)
    x, y = jax.device_put(tr.images[:16], batch), jax.device_put(tr.labels[:16], batch)
    state, losses_seen = setup.state, []
    for _ in range(20):
        state, m = train.train_step(state, setup.teacher_vars, x, y, jax.random.PRNGKey(0),
                                    cfg=setup.cfg)
        losses_seen.append(float(m["loss"]))
    # One fixed batch (randomly cropped each step): the loss goes down.
    assert np.mean(losses_seen[-4:]) < 0.95 * np.mean(losses_seen[:4]), losses_seen
    assert int(state.step) == 20


def test_resume_is_exact_and_teacher_checks(datasets, tmp_path):
    c = _config("ce")
    full = train.train_and_evaluate(c, str(tmp_path / "full"), datasets=datasets)
    part = train.train_and_evaluate(c, str(tmp_path / "cut"), datasets=datasets,
                                    stop_at_step=5)
    assert part["step"] == 5
    resumed = train.train_and_evaluate(c, str(tmp_path / "cut"), datasets=datasets)
    assert resumed["step"] == full["step"] == 8 and full["steps_per_epoch"] == 4
    a, _ = train.load_student(str(tmp_path / "full"), "last")
    b, meta = train.load_student(str(tmp_path / "cut"), "last")
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)
    assert resumed["best_acc"] == full["best_acc"] and meta["model"] == "tiny4"
    assert 0.0 <= full["best_acc"] <= 1.0 and full["best_acc"] >= full["last_acc"]

    # The trained model serves as a teacher; a config naming another architecture fails.
    kd = _config("kd")
    kd.teacher.workdirs = (str(tmp_path / "full"),)
    stacked = train.load_teachers(kd, (8, 8, 1), 10)
    assert jax.tree.leaves(stacked)[0].shape[0] == 1
    kd.teacher.model = "tiny8"
    with pytest.raises(ValueError, match="holds .*tiny4.*asks for .*tiny8"):
        train.load_teachers(kd, (8, 8, 1), 10)
    with pytest.raises(ValueError, match="different|holds a checkpoint"):
        train.train_and_evaluate(_config("ce", student="tiny8"), str(tmp_path / "full"),
                                 datasets=datasets)


def test_sharded_step_equals_single_device(datasets):
    """4-device data parallel == 1 device: CA-MKD (2 vmapped teachers, connectors,
    gradients through the teachers' heads)."""
    assert jax.device_count() >= 4, "tests/conftest.py sets 4 host CPU devices"
    tr, _ = datasets
    tv = _teachers(2)
    x, y = tr.images[:16], tr.labels[:16]
    setup = train.build(_config("camkd", teacher_map="vmap"), (8, 8, 1), 10, 4,
                        teacher_vars=tv, mesh=mesh_lib.mesh_1d("data", 1))
    fn = jax.jit(train.loss_and_grads, static_argnames=("cfg",))
    out = {}
    for n, how in ((1, "vmap"), (4, "vmap")):
        mesh = mesh_lib.mesh_1d("data", n)
        rep, batch = mesh_lib.replicated(mesh), mesh_lib.sharded(mesh)
        xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
        loss, metrics, _, grads = fn(jax.device_put(setup.state, rep),
                                     jax.device_put(setup.teacher_vars, rep), xs, ys,
                                     jax.random.PRNGKey(1),
                                     cfg=setup.cfg._replace(teacher_map=how))
        assert len(xs.sharding.device_set) == n
        out[n, how] = (float(loss), jax.tree.leaves(jax.tree.map(np.asarray, grads)),
                       float(metrics["inter"]))
    ref = out[1, "vmap"]
    assert ref[2] > 0 and len(ref[1]) > 0
    for other in (out[4, "vmap"],):
        assert np.isclose(other[0], ref[0], rtol=1e-5)
        assert len(other[1]) == len(ref[1])
        for g1, g2 in zip(ref[1], other[1]):
            np.testing.assert_allclose(g2, g1, rtol=1e-4, atol=1e-6)


def test_teacher_map_loop_equals_vmap():
    """``teacher_map="map"`` (lax.map, the CPU default) computes what vmap does."""
    f = lambda v, h: jnp.tanh(h @ v["w"]) + v["b"]
    rng = np.random.default_rng(0)
    v = {"w": jnp.asarray(rng.normal(size=(3, 4, 5))), "b": jnp.asarray(rng.normal(size=(3, 5)))}
    h = jnp.asarray(rng.normal(size=(3, 2, 4)))
    np.testing.assert_allclose(train._over_teachers(f, "map", v, h),
                               train._over_teachers(f, "vmap", v, h), rtol=1e-12)
    with pytest.raises(ValueError, match="'vmap' or 'map'"):
        train._over_teachers(f, "pmap", v, h)


def test_bad_names_fail_early(datasets, tmp_path):
    bad = _config("ce")
    bad.method.name = "crd"
    with pytest.raises(ValueError, match="unknown distillation method 'crd'.*camkd"):
        train.train_and_evaluate(bad, str(tmp_path), datasets=datasets)
    with pytest.raises(ValueError, match="unknown student model 'resnet9'.*tiny4"):
        train.build(_config("ce", student="resnet9"), (8, 8, 1), 10, 4)
    with pytest.raises(ValueError, match="needs >= 2 teachers"):
        c = _config("camkd")
        c.teacher.workdirs = ("only_one",)
        train.build(c, (8, 8, 1), 10, 4)
    with pytest.raises(ValueError, match="not divisible"):
        train.build(_config("ce", batch_size=15, num_devices=4), (8, 8, 1), 10, 4)
    with pytest.raises(FileNotFoundError, match="train it first"):
        train.load_student(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="'tinny'; accepted: fashion, tiny, seed="):
        common.make("kd", "tinny")
    with pytest.raises(ValueError, match="exclude each other"):
        common.make("kd", "fashion,tiny")
    with pytest.raises(ValueError, match="seed='x' is not a valid int"):
        common.make("kd", "seed=x")


@pytest.mark.parametrize("name", ["teacher", "ce", "kd", "fitnet", "dskd", "camkd", "aver",
                                  "ebkd", "fitnet_mkd", "aekd"])
def test_configs_build(name):
    mod = importlib.import_module(f"configs.kd.{name}")
    assert "python -m jaxkd.train" in mod.__doc__
    for arg in ("", "fashion", "tiny,seed=2"):
        c = mod.get_config(arg)
        assert c.method.name == ("ce" if name == "teacher" else name)
        if name in ("camkd", "aver", "ebkd", "fitnet_mkd", "aekd"):
            assert len(c.teacher.workdirs) == 3
    assert mod.get_config("fashion").dataset == "fashion_mnist"
    assert mod.get_config("tiny,seed=2").seed == 2
    assert mod.get_config("").optim.milestones == (150, 180, 210)
