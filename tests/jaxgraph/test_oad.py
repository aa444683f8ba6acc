"""OAD: KD closed form, discriminator ranges, the ring's gradient flow, losses that fall
over a few steps, config validation. (``run_oad`` on Cora end to end, with injected faults:
test_train_faults.py.)"""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.gnn.oad_common import oad_config
from jaxgraph import discriminators, graphs, oad
from jaxgraph.train import NodeTask


def synthetic_task(n=40, f=12, c=3, seed=0):
    """A small graph whose features and edges follow the labels (planted partition)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    pairs = set()
    for _ in range(3 * n):
        u, v = rng.integers(0, n, 2)
        if u != v and (labels[u] == labels[v] or rng.random() < 0.2):
            pairs |= {(u, v), (v, u)}
    s, r = np.array(sorted(pairs)).T
    x = (rng.random((n, f)) < 0.2) + np.eye(c)[labels] @ (rng.random((c, f)) < 0.3)
    x = x / np.maximum(x.sum(1, keepdims=True), 1)
    g = graphs.pad_graph(graphs.build_graph(graphs.sparse_features(x, np.float64), s, r,
                                            self_loops=True), n + 8, len(s) + n + 8)
    split = np.arange(n + 8)
    masks = [((split < n) & (split % 4 == k)).astype(np.float64) for k in (0, 1, 2)]
    return NodeTask(graph=jax.tree.map(jnp.asarray, g),
                    labels=jnp.asarray(graphs.pad_nodes(labels, n + 8)),
                    train_mask=jnp.asarray(masks[0]), val_mask=jnp.asarray(masks[1]),
                    test_mask=jnp.asarray(masks[2]), num_classes=c)


@pytest.fixture(scope="module")
def task():
    return synthetic_task()


def small_config(**overrides):
    c = oad_config("cora", "gcn")
    c.students = ("gcn", "gcn", "gcn")
    c.models.gcn.dropout = 0.0
    c.models.gcn.hidden = 8
    c.disc.d_dim = 4
    c.warmup_epochs = 0
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def test_kd_loss_closed_form():
    s = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [0.0, 3.0, 0.0]])
    t = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = np.array([1.0, 1.0, 0.0])
    temp = 3.0
    p = np.exp(t / temp) / np.exp(t / temp).sum(1, keepdims=True)
    q = np.exp(s / temp) / np.exp(s / temp).sum(1, keepdims=True)
    kl = (p * np.log(p / q)).sum(1)
    expected = temp ** 2 * (kl[0] + kl[1]) / 2
    got = oad.kd_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), temperature=temp)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    code = oad.kd_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), temperature=temp,
                       scale="code")
    np.testing.assert_allclose(code, expected / (2 * 3), rtol=1e-12)   # / (n C)
    # No gradient flows into the teacher.
    g = jax.grad(lambda t_: oad.kd_loss(jnp.asarray(s), t_, jnp.asarray(mask),
                                        temperature=temp))(jnp.asarray(t))
    assert np.all(np.asarray(g) == 0)
    with pytest.raises(ValueError, match="unknown kd scale 'mean'; valid: paper, code"):
        oad.kd_loss(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask), temperature=1.0,
                    scale="mean")


@pytest.mark.parametrize("final_relu", [False, True])
def test_discriminator_outputs_in_range(task, final_relu):
    d = discriminators.make_discriminator("sage", d_dim=4, final_relu=final_relu)
    h = jax.random.normal(jax.random.PRNGKey(0), (task.graph.nodes.shape[0], 8)) * 3
    params = d.init(jax.random.PRNGKey(1), task.graph, h)["params"]
    assert params["GCNConv_0"]["kernel"].shape == (8, 4)
    prob = np.asarray(jax.nn.sigmoid(d.apply({"params": params}, task.graph, h)))
    assert prob.shape == (h.shape[0],) and np.all((prob > 0) & (prob < 1))
    if final_relu:   # the reference quirk: sigma(ReLU(x)) >= 1/2, fake loss >= log 2
        assert prob.min() >= 0.5
        assert np.all(np.asarray(discriminators.bce_fake(
            d.apply({"params": params}, task.graph, h))) >= np.log(2) - 1e-12)
    else:
        assert prob.min() < 0.5 < prob.max()
    assert discriminators.make_discriminator("gcn").features == (1,)


def test_a_few_oad_steps_lower_every_loss(task):
    """Each player's step lowers its own loss: the discriminator step lowers L_D on the
    features it saw; the student steps lower CE, KD and L_GAN (against fixed D)."""
    o = oad.make_oad(small_config(), task)
    state = o.init(jax.random.PRNGKey(0))
    step = jax.jit(chex.assert_max_traces(o.step, n=1))   # later calls compile nothing new
    key = jax.random.PRNGKey(1)
    fwd = jax.jit(lambda s: o.forward(s, task, key, True))
    zs, hs = fwd(state.students)
    state1, m1 = step(state, task, key)
    d_before = o.disc_loss(state.discs, hs, task)
    np.testing.assert_allclose(m1["d_loss"], d_before, rtol=1e-6)   # dropout is off
    assert o.disc_loss(state1.discs, hs, task) < d_before
    gan_before = o.gan_loss(state1.discs, hs, task)
    np.testing.assert_allclose(m1["gan"], gan_before, rtol=1e-6)
    state_k = state1
    for _ in range(11):
        state_k = state_k.replace(discs=state1.discs, disc_opt=state1.disc_opt)
        state_k, mk = step(state_k, task, key)
    _, hs_k = fwd(state_k.students)
    assert o.gan_loss(state1.discs, hs_k, task) < gan_before
    assert mk["ce"] < m1["ce"] and mk["kd"] < m1["kd"] and mk["loss"] < m1["loss"]
    assert int(state_k.step) == 12 and state_k.selection.best_val.shape == (3,)


def test_gan_gradient_reaches_only_the_previous_student(task):
    """Ring i-1 -> i: D_i's generator term moves H_{i-1} only (D_0, D_2 zeroed out, so
    they output constants and pass no gradient)."""
    o = oad.make_oad(small_config(), task)
    state = o.init(jax.random.PRNGKey(0))
    _, hs = o.forward(state.students, task, jax.random.PRNGKey(0), True)
    zero = jax.tree.map(jnp.zeros_like, state.discs)
    only_d1 = (zero[0], state.discs[1], zero[2])
    grads = jax.grad(lambda h: o.gan_loss(only_d1, h, task))(hs)
    norms = [float(jnp.abs(g).sum()) for g in grads]
    assert norms[0] > 0 and norms[1] == 0 and norms[2] == 0
    # The discriminator loss sees H_1 as real and H_0 as fake for D_1.
    grads_d = jax.grad(lambda h: o.disc_loss(only_d1, h, task))(hs)
    norms_d = [float(jnp.abs(g).sum()) for g in grads_d]
    assert norms_d[0] > 0 and norms_d[1] > 0 and norms_d[2] == 0


def test_config_validation(task):
    with pytest.raises(ValueError, match=r"unknown config option 'gin'; accepted: .*sage"):
        oad_config("cora", "gin")
    with pytest.raises(ValueError, match=r"'gcn' and 'gat' exclude each other"):
        oad_config("cora", "gcn,gat")
    c = oad_config("cora", "gcn")
    c.students = ("gcn", "gat")
    with pytest.raises(ValueError, match=r"equal hidden widths.*'gat': 128"):
        oad.make_oad(c, task)
    c.students = ("gcn",)
    with pytest.raises(ValueError, match=r">= 2 students"):
        oad.make_oad(c, task)
    c.students = ("gcn", "mlp")
    with pytest.raises(ValueError, match=r"unknown student architecture\(s\) \['mlp'\]"):
        oad.make_oad(c, task)
    code = oad_config("cora", "gat,code")
    assert (code.self_loops, code.disc.final_relu, code.kd.scale, code.select_on,
            code.models.gat.activation, code.models.gat.out_heads) == (
        False, True, "code", "test", "relu", 8)
    assert oad_config("citeseer", "code").select_on == "val"
    alone = oad_config("cora", "sage,alone")
    assert alone.students == ("sage",) and alone.gan_trade == alone.logitkd_trade == 0
    mix = oad_config("citeseer", "mix,seeds=3,nolocal")
    assert mix.students == ("gcn", "sage", "gcn", "sage") and mix.num_seeds == 3
    assert mix.gan_trade == 0 and mix.logitkd_trade == 1
    gan = oad_config("cora", "gat,gan=0.1")        # the reference PPI script's gan_trade
    assert (gan.gan_trade, gan.d_trade, gan.logitkd_trade) == (0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"gan=0\.1 contradicts 'nolocal'"):
        oad_config("cora", "gat,gan=0.1,nolocal")
    with pytest.raises(ValueError, match=r"gan=-1\.0 must be a number >= 0"):
        oad_config("cora", "gat,gan=-1")


def _run_steps(o, state, task, key, epochs):
    """``epochs`` jitted steps; returns the state and the per-epoch (val, test) accuracies
    as (epochs, M) host arrays."""
    step = jax.jit(o.step)
    val, test = [], []
    for _ in range(epochs):
        state, m = step(state, task, key)
        val.append(np.asarray(m["val_accuracy"]))
        test.append(np.asarray(m["test_accuracy"]))
    return state, np.stack(val), np.stack(test)


def _wrong_labels(task):
    """The task with every label moved to the next class: training on it (and judging by
    it) makes validation accuracy collapse, so the best validation epoch lies before."""
    return task.replace(labels=(task.labels + 1) % task.num_classes)


def _expected(val, test, first):
    """The selection over epochs >= ``first``: first strict maximum per student (as the
    float32 selection state holds them)."""
    val, test = val.astype(np.float32), test.astype(np.float32)
    ep = first + val[first:].argmax(axis=0)
    cols = np.arange(val.shape[1])
    return ep, val[ep, cols], test[ep, cols]


def test_oad_selects_among_okd_epochs_only(task):
    """Validation accuracy peaks during warm-up (the OKD epochs train and judge on wrong
    labels); OAD must report an OKD epoch (epoch >= warmup_epochs), per student and for the
    reference code's max-over-students selection. After the warm-up alone (a run with
    okd_epochs = 0) the selection is the warm-up's."""
    warmup, okd = 8, 4
    c = small_config(warmup_epochs=warmup, okd_epochs=okd)
    c.optim.lr = 0.05                            # validation accuracy ~0.9 after 8 epochs
    assert oad.selection_start(c) == warmup
    o = oad.make_oad(c, task)
    key = jax.random.PRNGKey(3)
    state, val_w, test_w = _run_steps(o, o.init(jax.random.PRNGKey(0)), task, key, warmup)
    ep, best, at_best = _expected(val_w, test_w, 0)         # warm-up only: over all epochs
    np.testing.assert_array_equal(state.selection.epoch, ep)
    np.testing.assert_array_equal(state.selection.test_at_best, at_best)
    state, val_o, test_o = _run_steps(o, state, _wrong_labels(task), key, okd)
    val, test = np.concatenate([val_w, val_o]), np.concatenate([test_w, test_o])
    assert np.all(val_w.max(0) > val_o.max(0))              # the peak is in the warm-up
    ep, best, at_best = _expected(val, test, warmup)
    sel = jax.device_get(state.selection)
    assert np.all(sel.epoch >= warmup)
    np.testing.assert_array_equal(sel.epoch, ep)
    np.testing.assert_array_equal(sel.best_val, best)
    np.testing.assert_array_equal(sel.test_at_best, at_best)
    coded = jax.device_get(state.coded)
    e = warmup + int(val[warmup:].astype(np.float32).max(1).argmax())
    assert int(coded.epoch) == e >= warmup
    np.testing.assert_array_equal(coded.test_at_best, np.float32(test[e].max()))
    # summarize: per-student, mean, best-by-validation and last-epoch fields
    last = o.evaluate(state, _wrong_labels(task))
    np.testing.assert_array_equal(last["test"], test[-1])
    s = oad.summarize(state, last)
    assert s["per_seed"]["student_best_epoch"] == [ep.tolist()]
    np.testing.assert_allclose(s["stats"]["mean_student_last"]["mean"], test[-1].mean())
    np.testing.assert_allclose(s["stats"]["mean_student"]["mean"], at_best.mean())
    np.testing.assert_allclose(s["stats"]["best_student"]["mean"], at_best[best.argmax()])


def test_alone_selects_over_all_epochs(task):
    """Without OKD terms (the "alone" cells: CE only for all epochs) the warm-up is not
    special: the peak is selected wherever it lies."""
    warmup, okd = 8, 4
    c = small_config(warmup_epochs=warmup, okd_epochs=okd, students=("gcn", "gcn"),
                     gan_trade=0.0, logitkd_trade=0.0)
    c.optim.lr = 0.05
    assert oad.selection_start(c) == 0
    assert oad.selection_start(oad_config("cora", "gat,alone")) == 0
    assert oad.selection_start(oad_config("cora", "gat,nolocal")) == 100
    o = oad.make_oad(c, task)
    key = jax.random.PRNGKey(3)
    state, val_w, test_w = _run_steps(o, o.init(jax.random.PRNGKey(0)), task, key, warmup)
    state, val_o, test_o = _run_steps(o, state, _wrong_labels(task), key, okd)
    ep, _, at_best = _expected(np.concatenate([val_w, val_o]),
                               np.concatenate([test_w, test_o]), 0)
    assert np.all(ep < warmup)
    np.testing.assert_array_equal(state.selection.epoch, ep)
    np.testing.assert_array_equal(state.selection.test_at_best, at_best)
