"""CSD-like distillation: loss values, confidences, and a vanishing KD term."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgraph import csd, kge_models
from jaxgraph.kge import experiment
from jaxgraph.kge import step as kge_step


def test_huber_kd_loss_hand_values():
    s = jnp.array([[0.0, 3.0], [1.0, 1.0]])
    t = jnp.array([[0.5, 0.0], [1.0, 1.0]])
    conf = jnp.array([0.5, 1.0])
    # row 0: Huber_1(-0.5) = 0.125, Huber_1(3) = 3 - 0.5 = 2.5 -> mean 1.3125; row 1: 0
    np.testing.assert_allclose(csd.kd_loss(s, t, conf, delta=1.0), 0.5 * 0.5 * 1.3125)
    assert float(csd.kd_loss(s, s, conf)) == 0.0
    g = jax.grad(lambda x: csd.kd_loss(x, t, conf))(t)
    assert np.all(np.asarray(g) == 0.0)


def test_confidences():
    s = jnp.array([[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(csd.confidence("margin", s, tau=2.0),
                               [1 / (1 + np.exp(-2.0)), 0.5])
    np.testing.assert_allclose(csd.confidence("softmax", s),
                               [np.exp(2) / (np.exp(2) + 1 + np.e), 1 / 3])
    np.testing.assert_allclose(csd.confidence("none", s), [1.0, 1.0])
    with pytest.raises(ValueError, match="unknown confidence 'x'.*margin"):
        csd.confidence("x", s)
    with pytest.raises(ValueError, match="unknown csd.target"):
        csd.CSDConfig(target="logits").validate()


@pytest.mark.parametrize("confidence,target,loss,shared", [
    ("margin", "scores", "self_adversarial", True), ("mlp", "embeddings", "1vsall", False)])
def test_kd_vanishes_when_teacher_equals_student(confidence, target, loss, shared):
    b = kge_models.get_backbone("complex", 8)
    c = csd.CSDConfig(enabled=True, confidence=confidence, target=target, weight=1.0)
    cfg = kge_step.StepConfig(b, num_entities=10, loss=loss, num_negatives=4,
                              shared_negatives=shared, csd=c)
    tx = experiment.make_optimizer(_cfg(), 1)
    state = kge_step.init_state(cfg, 3, tx, jax.random.PRNGKey(0))
    batch = jnp.array([[0, 1, 2], [3, 2, 4], [5, 0, 9]], jnp.int32)
    w = jnp.ones(3)
    args = (batch, w, jax.random.PRNGKey(1))

    @jax.jit
    def run(params):
        other = jax.tree.map(lambda a: a + 0.3, params["kge"])
        same = kge_step.loss_fn(params, params["kge"], *args, 1.0, cfg)
        base = kge_step.loss_fn(params, params["kge"], *args, 0.0,
                                cfg._replace(csd=csd.CSDConfig()))
        return same, base, kge_step.loss_fn(params, other, *args, 1.0, cfg)

    (loss_same, aux), (base, _), (_, aux2) = run(state.params)
    assert float(aux["kd_loss"]) == 0.0
    # the KD term is the only difference from the baseline loss
    extra = float(aux.get("semantic_loss", 0.0))
    np.testing.assert_allclose(float(loss_same), float(base) + extra, rtol=1e-12)
    # a different teacher gives a positive KD term
    assert float(aux2["kd_loss"]) > 1e-3


def _cfg():
    import ml_collections
    return ml_collections.ConfigDict({"train": {"epochs": 1, "schedule": "constant",
                                                "lr": 1e-2, "optimizer": "adam"}})


def test_lambda_and_teacher_refresh_schedules():
    c = csd.CSDConfig(enabled=True, weight=0.5, warmup_epochs=2, refresh_epochs=2)
    assert [kge_step.kd_weight(c, e) for e in range(4)] == [0.0, 0.0, 0.5, 0.5]
    assert [kge_step.refresh_due(c, e) for e in range(5)] == [False, False, True, False, True]
    assert not any(kge_step.refresh_due(c._replace(ema=0.9), e) for e in range(5))
    assert kge_step.kd_weight(csd.CSDConfig(), 5) == 0.0
    assert not kge_step.refresh_due(csd.CSDConfig(), 2)
