"""Entity-sharded KGE (jaxgraph.kge.sharded) on 4 host devices equals the unsharded model:
tables and Adam moments split by entity rows, scores, gradients, an Adam step, filtered
ranks (with ties), a (data, model) mesh, and a short run of the trainer.

The entity count is never a multiple of 4, so padded rows are always present."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tie_graph import tie_graph

from configs.kge.kge import get_config as kge_config
from jaxgraph import kg_data, kge_models, ranking
from jaxgraph.kge import evaluation, experiment, sharded
from jaxgraph.kge import step as kge_step

V, R, DIM, B, NEG = 30, 4, 8, 16, 6          # V = 30 -> padded to 32, 8 rows per device


@pytest.fixture(scope="module")
def mesh():
    assert jax.device_count() >= 4, "run with --xla_force_host_platform_device_count=4"
    return sharded.make_mesh(model=4)


def _pair(name, mesh, loss="self_adversarial", shared=False, reg=0.0):
    """(cfg, tx, unsharded state, sharded state) from the same key."""
    cfg = kge_step.StepConfig(kge_models.get_backbone(name, DIM), V, loss=loss,
                              num_negatives=NEG, shared_negatives=shared,
                              regularization=reg)
    tx = optax.adam(1e-2)
    key = jax.random.PRNGKey(0)
    return (cfg, tx, kge_step.init_state(cfg, R, tx, key),
            sharded.init_state(cfg, R, tx, key, mesh))


def _rows(x):
    """The real (unpadded) rows of an entity-shaped array, on the host."""
    return np.asarray(x)[:V]


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.stack([rng.integers(0, V, B), rng.integers(0, R, B),
                                 rng.integers(0, V, B)], 1), jnp.int32)


def test_tables_and_adam_moments_are_split_by_entity_rows(mesh):
    _, _, st, ss = _pair("rotate", mesh)
    ent = ss.params["kge"]["entity"]
    assert ent.shape == (32, DIM)
    np.testing.assert_array_equal(_rows(ent), st.params["kge"]["entity"])   # same init
    np.testing.assert_array_equal(np.asarray(ent)[V:], 0.0)                  # padding
    adam = ss.opt_state[0]
    for arr in (ent, adam.mu["kge"]["entity"], adam.nu["kge"]["entity"]):
        assert [s.data.shape for s in arr.addressable_shards] == [(8, DIM)] * 4
        assert [s.index[0] for s in arr.addressable_shards] == [
            slice(0, 8), slice(8, 16), slice(16, 24), slice(24, 32)]
    rel = ss.params["kge"]["relation"]                                       # replicated
    assert [s.data.shape for s in rel.addressable_shards] == [(R, DIM // 2)] * 4
    assert ss.teacher == {}
    # per device: 3 entity blocks (table, mu, nu) of 8 x 8 float32 + 3 relation tables
    # (4 x 4) + Adam's int32 count + step + epoch
    per = sharded.bytes_per_device(ss)
    assert per == {d.id: 3 * 8 * DIM * 4 + 3 * R * 4 * 4 + 3 * 4 for d in mesh.devices.flat}
    k_model = jax.random.split(jax.random.PRNGKey(0))[0]          # as init_state's
    tables = sharded.init_params(kge_models.get_backbone("rotate", DIM), V, R, k_model, mesh)
    np.testing.assert_array_equal(tables["entity"], ent)
    back = sharded.unshard_params(sharded.shard_params(st.params["kge"], mesh), V)
    np.testing.assert_array_equal(back["entity"], st.params["kge"]["entity"])


@pytest.mark.parametrize("name,loss,shared,reg", [
    ("transe", "self_adversarial", False, 0.0),
    ("complex", "1vsall", False, 1e-2)])
def test_scores_gradients_and_adam_step_match_unsharded(mesh, name, loss, shared, reg):
    cfg, tx, st, ss = _pair(name, mesh, loss, shared, reg)
    b, batch, w = cfg.backbone, _batch(), jnp.linspace(0.5, 1.5, B)
    head = jnp.arange(B) % 3 == 0
    kp, skp = st.params["kge"], ss.params["kge"]
    # 1-vs-all: each device holds its (B, 8) block of the (B, 32) scores
    q = jnp.where(head[:, None], b.head_query(kp, batch[:, 1], batch[:, 2]),
                  b.tail_query(kp, batch[:, 0], batch[:, 1]))
    s_all = sharded.all_scores(skp, batch, head, backbone=b, mesh=mesh)
    assert [s.data.shape for s in s_all.addressable_shards] == [(B, 8)] * 4
    np.testing.assert_allclose(np.asarray(s_all)[:, :V], b.match_all(q, kp["entity"]),
                               rtol=1e-6, atol=1e-6)
    # negative sampling: candidates scored on their owners
    cands = jnp.asarray(np.random.default_rng(1).integers(0, V, (B, NEG)), jnp.int32)
    np.testing.assert_allclose(
        sharded.candidate_scores(skp, batch, head, cands, backbone=b, mesh=mesh),
        b.match(q, kp["entity"][cands]), rtol=1e-6, atol=1e-6)
    # loss and gradients
    key = jax.random.PRNGKey(3)
    (l0, a0), g0 = jax.jit(jax.value_and_grad(kge_step.loss_fn, has_aux=True),
                           static_argnums=(6,))(st.params, st.teacher, batch, w, key, 0.0, cfg)
    (l1, a1), g1 = jax.jit(jax.value_and_grad(sharded.loss_fn, has_aux=True),
                           static_argnums=(4, 5))(ss.params, batch, w, key, cfg, mesh)
    assert abs(float(l1) - float(l0)) <= 1e-6 * abs(float(l0))
    assert set(a1) == set(a0)
    g_ent = g1["kge"]["entity"]
    assert [s.data.shape for s in g_ent.addressable_shards] == [(8, DIM)] * 4
    np.testing.assert_allclose(_rows(g_ent), g0["kge"]["entity"], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(g_ent)[V:], 0.0)
    np.testing.assert_allclose(g1["kge"]["relation"], g0["kge"]["relation"], rtol=1e-5,
                               atol=1e-7)
    # one Adam step: new tables and both moments
    st, m0 = kge_step.train_epoch(st, batch[None], w[None], key, jnp.float32(0), cfg=cfg,
                                  tx=tx)
    ss, m1 = sharded.train_epoch(ss, batch[None], w[None], key, jnp.float32(0), cfg=cfg,
                                 tx=tx, mesh=mesh)
    adam0, adam1 = st.opt_state[0], ss.opt_state[0]
    for a, b_ in ((ss.params["kge"]["entity"], st.params["kge"]["entity"]),
                  (adam1.mu["kge"]["entity"], adam0.mu["kge"]["entity"]),
                  (adam1.nu["kge"]["entity"], adam0.nu["kge"]["entity"])):
        assert [s.data.shape for s in a.addressable_shards] == [(8, DIM)] * 4
        np.testing.assert_allclose(_rows(a), b_, rtol=1e-5, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(a)[V:], 0.0)
    np.testing.assert_allclose(ss.params["kge"]["relation"], st.params["kge"]["relation"],
                               rtol=1e-6, atol=1e-7)
    for k in m0:
        np.testing.assert_allclose(m1[k], m0[k], rtol=1e-6, err_msg=k)


@pytest.mark.parametrize("name", ["distmult", "transe"])
def test_filtered_ranks_with_ties_equal_unsharded(mesh, name):
    params, known, queries = tie_graph()           # 23 entities -> 24, 6 per device
    b = kge_models.get_backbone(name, 4, gamma=2.0)
    sp = sharded.shard_params(params, mesh)
    for side in ("head", "tail"):
        want = ranking.filtered_ranks(b, params, queries, known, 3, side, batch_size=8,
                                      chunk=4)
        # chunk 4 < 6 rows per device: TransE scores its block in two chunks
        got = ranking.filtered_ranks(b, sp, queries, known, 3, side, batch_size=8,
                                     rank_batch=sharded.rank_batch(b, mesh, 23, chunk=4))
        np.testing.assert_array_equal(got, want)
        if name == "distmult":
            assert np.any(want[:, 1] > want[:, 0]), "the test needs ties"


def test_data_and_model_axes(mesh):
    """A (data 2, model 2) mesh: each batch split in halves, tables in halves (DistMult,
    one negative set shared by the batch)."""
    mesh22 = sharded.make_mesh(model=2, data=2)
    cfg, tx, st, ss = _pair("distmult", mesh22, shared=True, reg=1e-2)
    assert [s.data.shape for s in ss.params["kge"]["entity"].addressable_shards] == [
        (15, DIM)] * 4
    batch, w, key = _batch(1), jnp.linspace(0.5, 1.5, B), jax.random.PRNGKey(4)
    st, m0 = kge_step.train_epoch(st, batch[None], w[None], key, jnp.float32(0), cfg=cfg,
                                  tx=tx)
    ss, m1 = sharded.train_epoch(ss, batch[None], w[None], key, jnp.float32(0), cfg=cfg,
                                 tx=tx, mesh=mesh22)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-6)
    np.testing.assert_allclose(_rows(ss.params["kge"]["entity"]), st.params["kge"]["entity"],
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_rows(ss.opt_state[0].nu["kge"]["entity"]),
                               st.opt_state[0].nu["kge"]["entity"], rtol=1e-5, atol=1e-12)
    data = kg_data.synthetic_kg(V, R, seed=0)
    want = ranking.evaluate(cfg.backbone, st.params["kge"], data.test, data.all_triples(), R,
                            batch_size=8)
    got = sharded.evaluate(cfg.backbone, ss.params["kge"], data.test, data.all_triples(), R,
                           mesh=mesh22, num_entities=V, batch_size=8)
    assert {k: got[k] for k in ("mrr", "mr", "hits@10")} == {
        k: want[k] for k in ("mrr", "mr", "hits@10")}
    with pytest.raises(ValueError, match=r"batch_size=5 does not split over the data axis "
                       r"of 2 devices; accepted: a multiple of 2"):
        sharded.evaluate(cfg.backbone, ss.params["kge"], data.test, None, R, mesh=mesh22,
                         num_entities=V, batch_size=5)


def test_trainer_run_matches_unsharded_and_resumes(tmp_path):
    """``python -m jaxgraph.kge`` settings: 2 epochs of RotatE on a 42-entity graph,
    unsharded and with ``mesh.model=4``: parameters agree to 1e-5, metrics are equal."""
    c = kge_config("rotate,tiny")
    c.synthetic.num_entities = 42
    full = experiment.train_and_evaluate(c, str(tmp_path / "full"))
    c.mesh.model = 4
    sh = experiment.train_and_evaluate(c, str(tmp_path / "sh"))
    assert sh["mesh"] == {"model": 4, "data": 1} and "mesh" not in full
    for split in ("valid", "test"):
        for k in ("mrr", "mr", "hits@1", "hits@3", "hits@10"):
            assert sh[split][k] == full[split][k], (split, k)
    _, p0, _ = evaluation.load_checkpoint(str(tmp_path / "full"))
    _, p1, meta = evaluation.load_checkpoint(str(tmp_path / "sh"))
    assert p1["entity"].shape == (42, 8) and meta["settings"]["mesh"]["model"] == 4
    for k in p0:
        np.testing.assert_allclose(p1[k], p0[k], rtol=0, atol=1e-5)
    # an interrupted sharded run resumes exactly; the unsharded workdir refuses the mesh
    experiment.train_and_evaluate(c, str(tmp_path / "part"), stop_at_epoch=1)
    resumed = experiment.train_and_evaluate(c, str(tmp_path / "part"))
    assert resumed["test"]["mrr"] == sh["test"]["mrr"]
    with pytest.raises(ValueError, match=r"other settings: mesh.data: '<absent>' -> 1; "
                       r"mesh.model: '<absent>' -> 4\."):
        experiment.train_and_evaluate(c, str(tmp_path / "full"))


def test_config_errors():
    c = kge_config("tiny")
    c.mesh.model = 8
    with pytest.raises(ValueError, match=r"config.mesh data=1 x model=8 needs 8 devices; "
                       r"accepted: at most 4"):
        experiment.check_config(c)
    c.mesh.model = 0
    with pytest.raises(ValueError, match=r"config.mesh.model must be an integer >= 1"):
        experiment.check_config(c)
    c = kge_config("tiny,csd")
    c.mesh.model = 2
    with pytest.raises(ValueError, match=r"CSD is not supported on sharded tables"):
        experiment.check_config(c)
    c = kge_config("tiny")
    c.mesh.data, c.train.batch_size = 4, 18
    with pytest.raises(ValueError, match=r"config.train.batch_size=18 does not split over "
                       r"config.mesh.data=4; accepted: a multiple of 4"):
        experiment.check_config(c)
    with pytest.raises(ValueError, match=r"mesh data=1 x model=5 needs 5 devices"):
        sharded.make_mesh(model=5)
    assert experiment.make_mesh(kge_config("tiny")) is None
    assert "mesh" not in experiment.run_settings(kge_config("tiny"))
