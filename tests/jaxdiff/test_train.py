"""jaxdiff.train on the tiny digits config: the loss falls, resume is bitwise exact, outputs
are written, configs build, bad input fails clearly."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from faults import checkpoint_steps, flip_bit, largest_file

from configs import edm_digits, edm_fashion_mnist
from jaxdiff.models import unet
from jaxdiff.training import edm as train
from jaxinfra import checkpoints


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 4-step tiny run that also writes a sample grid at the end."""
    cfg = edm_digits.get_config("tiny")
    cfg.sample.every = 4
    workdir = str(tmp_path_factory.mktemp("straight"))
    result = train.train_and_evaluate(cfg, workdir)
    return cfg, workdir, result


def _restore_state(workdir):
    mngr, step = checkpoints.open_latest(workdir, what="test", hint="")
    state = checkpoints.read(mngr, step, state=None)["state"]
    mngr.close()
    return step, state


def test_a_few_steps_lower_the_loss():
    cfg = edm_digits.get_config("tiny")
    images, labels = train.load_data(cfg)
    model, tx, lcfg = train.make_model(cfg), train.make_optimizer(cfg), train.loss_config(cfg)
    state = train.TrainState.create(unet.init(model, jax.random.PRNGKey(0)), tx)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    # A fixed evaluation: 256 images, fixed sigmas and noise.
    eval_loss = jax.jit(functools.partial(train.edm_loss, model, labels=None,
                                          key=jax.random.PRNGKey(7), cfg=lcfg))
    before = float(eval_loss(state.params, images))
    for _ in range(12):
        state, metrics = train.train_step(state, images, labels, jax.random.PRNGKey(0),
                                          model=model, tx=tx, cfg=lcfg)
    after = float(eval_loss(state.params, images))
    assert np.isfinite(after) and after < 0.9 * before, (before, after)
    assert int(state.step) == 12
    assert set(metrics) == {"loss", "l2_grads", "l2_params", "l2_updates"}


def test_resume_is_bitwise_exact(straight, tmp_path):
    cfg, workdir, _ = straight
    resumed = str(tmp_path / "resumed")
    first = train.train_and_evaluate(cfg, resumed, stop_at_step=2)   # "interrupted"
    assert first["step"] == 2
    train.train_and_evaluate(cfg, resumed)                          # resumes at step 2
    step_a, a = _restore_state(workdir)
    step_b, b = _restore_state(resumed)
    assert step_a == step_b == 4
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)                          # params, EMA, Adam
    rows = [json.loads(line) for line in open(os.path.join(resumed, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4]


def test_outputs_and_load_checkpoint(straight):
    cfg, workdir, result = straight
    assert result["step"] == 4 and np.isfinite(result["loss"])
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4]
    assert {"loss", "l2_grads", "l2_params", "l2_updates", "steps_per_sec"} <= set(rows[0])
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tb")))
    assert os.path.isfile(os.path.join(workdir, "samples", "step_000004.png"))
    model, ema, meta = train.load_checkpoint(workdir)
    assert model == train.make_model(cfg) and meta["step"] == 4
    _, state = _restore_state(workdir)
    for x, y in zip(jax.tree.leaves(ema), jax.tree.leaves(state["ema_params"])):
        np.testing.assert_array_equal(x, y)
    other = edm_digits.get_config("tiny")
    other.model.base_channels = 16
    with pytest.raises(ValueError, match="model checkpoint .step 4. with other settings: "
                                         "model.base_channels: 8 -> 16"):
        train.train_and_evaluate(other, workdir)


def test_configs_build():
    for cfg in (edm_digits.get_config(), edm_digits.get_config("cond"),
                edm_fashion_mnist.get_config(), edm_fashion_mnist.get_config("cpu"),
                edm_fashion_mnist.get_config("tiny,cond")):
        model = train.make_model(cfg)
        train.make_optimizer(cfg)
        params = jax.eval_shape(functools.partial(unet.init, model), jax.random.PRNGKey(0))
        x = jax.ShapeDtypeStruct((2, cfg.model.image_size, cfg.model.image_size, 1),
                                 jnp.float32)
        y = jax.ShapeDtypeStruct((2,), jnp.int32)
        loss = jax.eval_shape(
            lambda p, x, y: train.edm_loss(model, p, x, y, jax.random.PRNGKey(0),
                                           train.loss_config(cfg)), params, x, y)
        assert loss.shape == ()
    with pytest.raises(ValueError, match="unknown config option"):
        edm_digits.get_config("huge")


def test_training_sigmas_wide_puts_mass_where_sampling_starts():
    key = jax.random.PRNGKey(0)
    edm = train.loss_config(edm_digits.get_config())
    wide = train.loss_config(edm_digits.get_config("wide"))
    s_edm = np.asarray(train.training_sigmas(key, 200_000, edm))
    s_wide = np.asarray(train.training_sigmas(key, 200_000, wide))
    # EDM's log-normal (-1.2, 1.2): P(sigma > 10) = P(n > 2.919) = 0.18%.
    np.testing.assert_allclose(np.mean(s_edm > 10), 0.00176, atol=4e-4)
    # A quarter log-uniform over [0.002, 80]: 0.25 ln(8) / ln(40000) + 0.75 * 0.18% = 5.0%.
    np.testing.assert_allclose(np.mean(s_wide > 10), 0.25 * np.log(8) / np.log(4e4)
                               + 0.75 * 0.00176, atol=2e-3)
    # Without the option the draws are EDM's own, unchanged.
    np.testing.assert_allclose(s_edm, np.exp(-1.2 + 1.2 * np.asarray(
        jax.random.normal(key, (200_000,), jnp.float32))), rtol=1e-6)


def test_bad_input(tmp_path):
    cfg = edm_digits.get_config("tiny")
    cfg.dataset = "no_such_dataset_xyz"
    with pytest.raises(ValueError, match="unknown data set"):
        train.train_and_evaluate(cfg, str(tmp_path / "a"))
    cfg = edm_digits.get_config("tiny")
    cfg.model.image_size = 28
    with pytest.raises(ValueError, match=r"images of shape \(8, 8, 1\) but config.model"):
        train.train_and_evaluate(cfg, str(tmp_path / "b"))
    cfg = edm_digits.get_config("tiny")
    cfg.optim.schedule = "nope"
    with pytest.raises(ValueError, match="optim.schedule"):
        train.make_optimizer(cfg)
    cfg = edm_digits.get_config("tiny")
    cfg.loss.uniform_fraction = 1.0
    with pytest.raises(ValueError, match=r"uniform_fraction must be a number in \[0, 1\)"):
        train.train_and_evaluate(cfg, str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="no EDM model checkpoints"):
        train.load_checkpoint(str(tmp_path / "empty"))


# ------------------------------------------------------------------ faults (runs never lose work)
def test_corrupt_checkpoint_falls_back_and_ends_like_an_uninterrupted_run(straight, tmp_path):
    cfg, workdir, _ = straight
    work = tmp_path / "w"
    train.train_and_evaluate(cfg, str(work))                      # steps 2 and 4 saved
    flip_bit(largest_file(work / "checkpoints" / "4"))
    with pytest.warns(RuntimeWarning, match=r"step 4 .* is corrupt .*using step 2"):
        result = train.train_and_evaluate(cfg, str(work))        # redoes steps 3, 4
    assert result["step"] == 4
    _, a = _restore_state(workdir)
    _, b = _restore_state(str(work))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert (work / "checkpoints" / "corrupt" / "4").is_dir()
    assert checkpoint_steps(work) == [2, 4]


def test_nan_learning_rate_stops_and_saves_nothing(tmp_path):
    cfg = edm_digits.get_config("tiny")
    cfg.optim.lr = float("nan")
    with pytest.raises(FloatingPointError,
                       match="EDM training stopped at step 1: l2_params is nan"):
        train.train_and_evaluate(cfg, str(tmp_path))
    saved = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == []


def test_resume_refuses_other_settings_and_extends_only_when_asked(straight, tmp_path):
    cfg, workdir, _ = straight
    work = str(tmp_path / "w")
    train.train_and_evaluate(cfg, work)
    for field, value, shown in (("seed", 1, "seed: 0 -> 1"),
                                ("batch_size", 8, "batch_size: 16 -> 8")):
        other = edm_digits.get_config("tiny")
        other[field] = value
        with pytest.raises(ValueError, match=f"with other settings: {shown}"):
            train.train_and_evaluate(other, work)
    other = edm_digits.get_config("tiny")
    other.optim.lr = 1e-3
    with pytest.raises(ValueError, match=r"optim.lr: 0.002 -> 0.001"):
        train.train_and_evaluate(other, work)
    longer = edm_digits.get_config("tiny")
    longer.num_steps = 6
    with pytest.raises(ValueError, match=r"another length: num_steps: 4 -> 6.*extend=True"):
        train.train_and_evaluate(longer, work)
    longer.extend = True
    result = train.train_and_evaluate(longer, work)
    assert result["step"] == 6
    rows = [json.loads(line) for line in open(os.path.join(work, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4, 6]                 # the counter continued


@pytest.mark.parametrize("field,value", [("checkpoint_every", 0), ("batch_size", 0),
                                         ("log_every", -1), ("num_steps", 0)])
def test_loop_settings_are_checked_first(tmp_path, field, value):
    cfg = edm_digits.get_config("tiny")
    cfg[field] = value
    with pytest.raises(ValueError, match=f"config.{field} must be an integer >= 1, got "
                                         f"{value}"):
        train.train_and_evaluate(cfg, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


def test_a_workdir_of_another_job_is_named(tmp_path):
    from jaxinfra import checkpoints as ck
    mngr = ck.manager(str(tmp_path))
    ck.save(mngr, 1, meta={"settings": {"method": "kd"}, "epoch": 1}, state={"w": np.ones(2)})
    mngr.close()
    with pytest.raises(ValueError, match="holds checkpoints of another job, not an EDM model"):
        train.load_checkpoint(str(tmp_path))
