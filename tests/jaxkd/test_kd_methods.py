"""Each registered method's total loss against its formula in numpy; connectors; registry."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxkd import connectors, methods

RNG = np.random.default_rng(0)
B, C, K = 4, 5, 3
LABELS = np.array([0, 1, 2, 3])
S_LOGITS = RNG.normal(size=(B, C))
T_LOGITS = RNG.normal(size=(K, B, C)) * 2
# ResNet-like features: [f0, f1, f2, f3 (B, 2, 2, C), pooled]; teacher maps equal-shaped.
S_FEATS = [RNG.normal(size=(B, 8 // 2 ** max(i - 1, 0), 8 // 2 ** max(i - 1, 0), C))
           for i in range(4)] + [RNG.normal(size=(B, C))]
T_FEATS = [RNG.normal(size=(K,) + f.shape) for f in S_FEATS]


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _ce(z, y):
    return -np.log(_softmax(z)[np.arange(len(y)), y])


def _kl(zs, zt, t=4.0):
    ps, pt = _softmax(zs / t), _softmax(zt / t)
    return (pt * np.log(pt / ps)).sum(-1) * t * t


def _tail(h, index):
    """Stand-in for the teachers' remaining layers: spatial mean (maps have D = C)."""
    del index
    return h.mean(axis=(2, 3))


def _ctx(conn=None, epoch=2, k=K):
    return methods.Context(labels=jnp.asarray(LABELS), s_logits=jnp.asarray(S_LOGITS),
                           s_feats=[jnp.asarray(f) for f in S_FEATS],
                           t_logits=jnp.asarray(T_LOGITS[:k]),
                           t_feats=[jnp.asarray(f[:k]) for f in T_FEATS], conn=conn,
                           tail=_tail, epoch=jnp.asarray(epoch))


def _opts(name, **kw):
    m = methods.get(name)
    return ml_collections.FrozenConfigDict({"name": name, **m.defaults, **kw})


def test_registry_and_bad_name():
    assert set(methods.METHODS) == {"ce", "kd", "fitnet", "dskd", "camkd", "aver", "ebkd",
                                    "fitnet_mkd", "aekd"}
    with pytest.raises(ValueError,
                       match="aekd, aver, camkd, ce, dskd, ebkd, fitnet, fitnet_mkd, kd"):
        methods.get("crd")


def test_ce_and_kd_totals():
    ce = _ce(S_LOGITS, LABELS).mean()
    loss, _ = methods.get("ce").loss(_opts("ce"), _ctx())
    np.testing.assert_allclose(loss, ce, rtol=1e-12)
    loss, m = methods.get("kd").loss(_opts("kd"), _ctx(k=1))
    np.testing.assert_allclose(loss, 0.1 * ce + 0.9 * _kl(S_LOGITS, T_LOGITS[0]).mean(),
                               rtol=1e-12)


def test_fitnet_total():
    conn = jnp.asarray(RNG.normal(size=T_FEATS[2].shape[1:]))
    loss, m = methods.get("fitnet").loss(_opts("fitnet"), _ctx(conn, k=1))
    hint = ((np.asarray(conn) - T_FEATS[2][0]) ** 2).mean()
    np.testing.assert_allclose(loss, _ce(S_LOGITS, LABELS).mean() + 100 * hint, rtol=1e-12)


def test_aver_and_ebkd_totals():
    ce = _ce(S_LOGITS, LABELS).mean()
    kl = np.stack([_kl(S_LOGITS, t) for t in T_LOGITS])
    loss, _ = methods.get("aver").loss(_opts("aver"), _ctx())
    np.testing.assert_allclose(loss, ce + kl.mean(), rtol=1e-12)
    p = _softmax(T_LOGITS)
    ent = -(p * np.log(p)).sum(-1)
    w = 1 - ent / ent.sum(0)
    loss, _ = methods.get("ebkd").loss(_opts("ebkd"), _ctx())
    np.testing.assert_allclose(loss, ce + (w * kl).sum() / (B * K), rtol=1e-12)


def test_fitnet_mkd_total_first_epoch_and_detach():
    h = RNG.normal(size=T_FEATS[2].shape)                      # (K, B, 4, 4, C)
    ce = _ce(S_LOGITS, LABELS).mean()
    kd = np.stack([_kl(S_LOGITS, t) for t in T_LOGITS]).mean()
    hint = np.mean([((h[k] - T_FEATS[2][k]) ** 2).mean() for k in range(K)])
    f = lambda x, epoch=2, **kw: methods.get("fitnet_mkd").loss(
        _opts("fitnet_mkd", **kw), _ctx(x, epoch))
    for epoch, want in ((1, ce + kd), (2, ce + kd + 100 * hint)):
        loss, m = f(jnp.asarray(h), epoch)
        np.testing.assert_allclose(loss, want, rtol=1e-12)
        np.testing.assert_allclose(m["hint"], hint, rtol=1e-12)
    # Gradient into the regressor outputs: 100 * 2 (h - f) / (K B h w C); none with the
    # reference's detached hint (same loss value).
    g = jax.grad(lambda x: f(x)[0])(jnp.asarray(h))
    np.testing.assert_allclose(g, 100 * 2 * (h - T_FEATS[2]) / h.size, rtol=1e-10)
    loss_d, _ = f(jnp.asarray(h), detach_hint=True)
    np.testing.assert_allclose(loss_d, ce + kd + 100 * hint, rtol=1e-12)
    assert not np.any(np.asarray(jax.grad(lambda x: f(x, detach_hint=True)[0])(
        jnp.asarray(h))))


def test_fitnet_mkd_connector():
    """K regressors reg_0..reg_{K-1} of f_s[2] stacked (K, B, h, w, C_t); bad hint layer."""
    s_shapes = [f.shape[1:] for f in S_FEATS]
    t_shapes = [(2, 2, 7) if i == 2 else f.shape[2:] for i, f in enumerate(T_FEATS)]
    mod = methods.get("fitnet_mkd").make_connector(_opts("fitnet_mkd"), s_shapes,
                                                   t_shapes, K)
    feats = [jax.ShapeDtypeStruct(f.shape, jnp.float32) for f in S_FEATS]
    v = jax.eval_shape(lambda a: mod.init(jax.random.PRNGKey(0), a, train=False), feats)
    assert sorted(v["params"]) == [f"reg_{k}" for k in range(K)]
    y = jax.eval_shape(lambda v, a: mod.apply(v, a, train=False), v, feats)
    assert y.shape == (K, B, 2, 2, 7)
    with pytest.raises(ValueError, match="fitnet_mkd hint_layer=4"):
        methods.get("fitnet_mkd").make_connector(_opts("fitnet_mkd", hint_layer=4),
                                                 s_shapes, t_shapes, K)


def test_aekd_total_matches_sklearn_weights():
    from sklearn.svm import OneClassSVM
    t = 4.0
    ps, pt = _softmax(S_LOGITS / t), _softmax(T_LOGITS / t)
    gm = ((t / B) * (ps[None] - pt)).mean(1)                   # (K, C) batch-mean KD grads
    nu = 1 / (0.6 * K)
    svm = OneClassSVM(kernel="precomputed", nu=nu, tol=1e-6).fit(gm @ gm.T)
    w = np.zeros(K)
    w[svm.support_] = svm.dual_coef_[0] / (K * nu)
    kl = np.stack([_kl(S_LOGITS, z) for z in T_LOGITS]).mean(1)
    f = jax.jit(lambda zs, zt: methods.get("aekd").loss(
        _opts("aekd"), _ctx()._replace(s_logits=zs, t_logits=zt)))       # jit-able
    loss, m = f(jnp.asarray(S_LOGITS), jnp.asarray(T_LOGITS))
    np.testing.assert_allclose([m[f"w_{k}"] for k in range(K)], w, atol=1e-4)
    np.testing.assert_allclose(loss, _ce(S_LOGITS, LABELS).mean() + (w * kl).sum(),
                               rtol=1e-4)


def _camkd_numpy(h, epoch):
    ce = _ce(S_LOGITS, LABELS).mean()
    ce_t = np.stack([_ce(t, LABELS) for t in T_LOGITS])
    w = (1 - np.exp(ce_t) / np.exp(ce_t).sum(0)) / (K - 1)
    kd = (w * np.stack([_kl(S_LOGITS, t) for t in T_LOGITS])).sum() / (B * K)
    u = h.mean(axis=(2, 3))
    ce_u = np.stack([_ce(x, LABELS) for x in u])
    v = (1 - np.exp(ce_u) / np.exp(ce_u).sum(0)) / (K - 1)
    inter = (v * ((h - T_FEATS[3]) ** 2).mean(axis=(2, 3, 4))).sum() / (B * K)
    return ce + kd + (50 * inter if epoch >= 2 else 0.0)


def test_camkd_total_and_first_epoch_quirk():
    h = RNG.normal(size=T_FEATS[3].shape)
    for epoch in (1, 2):
        loss, m = methods.get("camkd").loss(_opts("camkd"), _ctx(jnp.asarray(h), epoch))
        np.testing.assert_allclose(loss, _camkd_numpy(h, epoch), rtol=1e-10)
    np.testing.assert_allclose(sum(m[f"w_{k}"] for k in range(K)), 1.0, rtol=1e-12)


def test_camkd_inter_weights_carry_gradient_unless_detached():
    h = jnp.asarray(RNG.normal(size=T_FEATS[3].shape))
    grad = lambda o: jax.grad(lambda x: methods.get("camkd").loss(o, _ctx(x))[0])(h)
    g_flow, g_detached = grad(_opts("camkd")), grad(_opts("camkd", detach_inter_weights=True))
    assert np.abs(np.asarray(g_flow - g_detached)).max() > 1e-6
    # Detached: d/dh of 50 (1/BK) sum v (h - f)^2 / (H W D), v constant.
    u = np.asarray(h).mean(axis=(2, 3))
    ce_u = np.stack([_ce(x, LABELS) for x in u])
    v = (1 - np.exp(ce_u) / np.exp(ce_u).sum(0)) / (K - 1)
    want = 50 * v[..., None, None, None] * 2 * (np.asarray(h) - T_FEATS[3]) / (B * K * 2 * 2 * C)
    np.testing.assert_allclose(g_detached, want, rtol=1e-9)


@pytest.mark.parametrize("rule", ["proportional", "inverse_softmax"])
def test_dskd_total_and_weights(rule):
    conn = tuple(jnp.asarray(RNG.normal(size=T_FEATS[i].shape[1:])) for i in (1, 2))
    loss, m = methods.get("dskd").loss(_opts("dskd", weight_rule=rule), _ctx(conn, k=1))
    zt = T_LOGITS[0]
    per = []
    for i, h in zip((1, 2), conn):
        z = np.asarray(h).mean(axis=(1, 2))
        per.append(_kl(z, zt).mean() + ((np.asarray(h) - T_FEATS[i][0]) ** 2).mean())
    per = np.array(per)
    if rule == "proportional":
        w = per / per.sum()
    else:
        w = 1 - np.exp(per) / np.exp(per).sum()
    np.testing.assert_allclose([m["w_1"], m["w_2"]], w, rtol=1e-10)
    want = _ce(S_LOGITS, LABELS).mean() + _kl(S_LOGITS, zt).mean() + (w * per).sum()
    np.testing.assert_allclose(loss, want, rtol=1e-10)


def test_connector_shapes():
    """Output shapes for 2x smaller / 2x larger / larger-by-2 / equal maps (shape-only
    evaluation: nothing is compiled)."""
    x = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    for out, cls in [((4, 4, 5), connectors.ConvReg), ((16, 16, 5), connectors.ConvReg),
                     ((6, 6, 5), connectors.ConvReg), ((8, 8, 5), connectors.ConvReg),
                     ((4, 4, 5), connectors.Embed), ((16, 16, 5), connectors.Embed)]:
        mod = cls(out)
        v = jax.eval_shape(lambda a: mod.init(jax.random.PRNGKey(0), a, train=False), x)
        y, _ = jax.eval_shape(lambda v, a: mod.apply(v, a, train=True,
                                                     mutable=["batch_stats"]), v, x)
        assert y.shape == (2,) + out
    with pytest.raises(ValueError, match="cannot map"):
        jax.eval_shape(lambda a: connectors.ConvReg((12, 12, 5)).init(
            jax.random.PRNGKey(0), a, train=False), x)
