"""Test oracle: plain-numpy loops that follow the reference code (zju-pi/diff-sampler,
diff-solvers-main/solvers.py) statement by statement, with Python lists as history.

Written independently of jaxdiff's vectorised coefficient tables so the two can be
compared to rounding error. ``net(x, sigma_scalar) -> D``; returns the final x.
"""
import numpy as np

from jaxdiff.schedules import vp_beta


def gmm_denoiser(means, variances, weights):
    """Exact diagonal-GMM denoiser in numpy, D(x (B, dim), scalar sigma)."""
    def denoise(x, sigma):
        tot = variances + sigma ** 2
        diff = x[:, None, :] - means
        ll = -0.5 * np.sum(diff ** 2 / tot + np.log(tot), axis=-1) + np.log(weights)
        g = np.exp(ll - ll.max(1, keepdims=True))
        g /= g.sum(1, keepdims=True)
        return np.sum(g[..., None] * (means + variances / tot * diff), axis=1)
    return denoise


def _afs_d(x, t):
    return x / np.sqrt(1 + t ** 2)


def _d(net, x, t):
    return (x - net(x, t)) / t


def euler(net, x, ts, afs=False):
    for i in range(len(ts) - 1):
        d = _afs_d(x, ts[i]) if afs and i == 0 else _d(net, x, ts[i])
        x = x + (ts[i + 1] - ts[i]) * d
    return x


def heun(net, x, ts, afs=False):
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        d = _afs_d(x, t) if afs and i == 0 else _d(net, x, t)
        xn = x + (tn - t) * d
        x = x + (tn - t) * (0.5 * d + 0.5 * _d(net, xn, tn))
    return x


def dpm2(net, x, ts, afs=False, r=0.5):
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        d = _afs_d(x, t) if afs and i == 0 else _d(net, x, t)
        tm = tn ** r * t ** (1 - r)
        xm = x + (tm - t) * d
        x = x + (tn - t) * ((1 / (2 * r)) * _d(net, xm, tm) + (1 - 1 / (2 * r)) * d)
    return x


def ipndm(net, x, ts, afs=False, max_order=4):
    buf = []
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        d = _afs_d(x, t) if afs and i == 0 else _d(net, x, t)
        o = min(max_order, i + 1)
        if o == 1:
            x = x + (tn - t) * d
        elif o == 2:
            x = x + (tn - t) * (3 * d - buf[-1]) / 2
        elif o == 3:
            x = x + (tn - t) * (23 * d - 16 * buf[-1] + 5 * buf[-2]) / 12
        else:
            x = x + (tn - t) * (55 * d - 59 * buf[-1] + 37 * buf[-2] - 9 * buf[-3]) / 24
        buf = (buf + [d])[-(max_order - 1):] if max_order > 1 else []
    return x


def ipndm_v(net, x, ts, afs=False, max_order=4):
    buf = []
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        d = _afs_d(x, t) if afs and i == 0 else _d(net, x, t)
        o = min(max_order, i + 1)
        if o == 1:
            x = x + (tn - t) * d
        else:
            hn, hn1 = tn - t, t - ts[i - 1]
            if o == 2:
                c = [(2 + hn / hn1) / 2, -(hn / hn1) / 2]
            elif o == 3:
                hn2 = ts[i - 1] - ts[i - 2]
                tmp = (1 - hn / (3 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2))) / 2
                c = [(2 + hn / hn1) / 2 + tmp, -(hn / hn1) / 2 - (1 + hn1 / hn2) * tmp,
                     tmp * hn1 / hn2]
            else:
                hn2, hn3 = ts[i - 1] - ts[i - 2], ts[i - 2] - ts[i - 3]
                t1 = (1 - hn / (3 * (hn + hn1)) * (hn * (hn + hn1)) / (hn1 * (hn1 + hn2))) / 2
                t2 = ((1 - hn / (3 * (hn + hn1))) / 2 + (1 - hn / (2 * (hn + hn1))) * hn
                      / (6 * (hn + hn1 + hn2))) * (hn * (hn + hn1) * (hn + hn1 + hn2)) / (
                          hn1 * (hn1 + hn2) * (hn1 + hn2 + hn3))
                q = hn1 * (hn1 + hn2) / (hn2 * (hn2 + hn3))
                c = [(2 + hn / hn1) / 2 + t1 + t2,
                     -(hn / hn1) / 2 - (1 + hn1 / hn2) * t1 - (1 + hn1 / hn2 + q) * t2,
                     t1 * hn1 / hn2 + (hn1 / hn2 + q * (1 + hn2 / hn3)) * t2,
                     -t2 * q * hn1 / hn2]
            x = x + (tn - t) * (c[0] * d + sum(ck * b for ck, b in zip(c[1:], buf[::-1])))
        buf = (buf + [d])[-(max_order - 1):] if max_order > 1 else []
    return x


def deis_coeffs(ts, max_order, num_points=10_000):
    """Per-step coefficient lists of degree min(i, max_order - 1) (the sampler's order - 1)."""
    beta_d, beta_min = vp_beta()
    tau = (np.sqrt(beta_min ** 2 + 2 * beta_d * np.log(ts ** 2 + 1)) - beta_min) / beta_d
    out = []
    for i in range(len(ts) - 1):
        deg = min(i, max_order - 1)
        u = np.linspace(tau[i], tau[i + 1], num_points)
        dtau = (tau[i + 1] - tau[i]) / num_points
        alpha = np.exp(-0.5 * beta_d * u ** 2 - beta_min * u)
        integrand = 0.5 * (beta_d * u + beta_min) / np.sqrt(alpha * (1 - alpha))
        prev = [tau[i - k] for k in range(deg + 1)]
        row = []
        for j in range(deg + 1):
            poly = np.ones_like(u)
            for k in range(deg + 1):
                if k != j:
                    poly *= (u - prev[k]) / (prev[j] - prev[k])
            row.append(np.sum(integrand * poly) * dtau)
        out.append(row)
    return out


def deis(net, x, ts, afs=False, max_order=4):
    coeffs = deis_coeffs(ts, max_order)
    buf = []
    for i in range(len(ts) - 1):
        t, tn = ts[i], ts[i + 1]
        d = _afs_d(x, t) if afs and i == 0 else _d(net, x, t)
        o = min(max_order, i + 1)
        if o == 1:
            x = x + (tn - t) * d
        else:
            c = coeffs[i]
            x = x + c[0] * d + sum(ck * b for ck, b in zip(c[1:], buf[::-1]))
        buf = (buf + [d])[-(max_order - 1):] if max_order > 1 else []
    return x


def _dpmpp_update(x, ms, ts_prev, t, order, predict_x0):
    lam = lambda s: -np.log(s)
    s0 = ts_prev[-1]
    h = lam(t) - lam(s0)
    phi1 = np.expm1(-h) if predict_x0 else np.expm1(h)
    if order == 1:
        return (t / s0) * x - phi1 * ms[-1] if predict_x0 else x - t * phi1 * ms[-1]
    h0 = lam(s0) - lam(ts_prev[-2])
    r0 = h0 / h
    d1_0 = (ms[-1] - ms[-2]) / r0
    if order == 2:
        if predict_x0:
            return (t / s0) * x - phi1 * ms[-1] - 0.5 * phi1 * d1_0
        return x - t * phi1 * ms[-1] - 0.5 * t * phi1 * d1_0
    h1 = lam(ts_prev[-2]) - lam(ts_prev[-3])
    r1 = h1 / h
    d1_1 = (ms[-2] - ms[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi2 = phi1 / h + 1 if predict_x0 else phi1 / h - 1
    phi3 = phi2 / h - 0.5
    if predict_x0:
        return (t / s0) * x - phi1 * ms[-1] + phi2 * d1 - phi3 * d2
    return x - t * phi1 * ms[-1] - t * phi2 * d1 - t * phi3 * d2


def dpmpp(net, x, ts, afs=False, max_order=3, predict_x0=True, lower_order_final=True):
    n = len(ts)
    ms, tb = [], []
    for i in range(n - 1):
        t, tn = ts[i], ts[i + 1]
        if afs and i == 0:
            d = _afs_d(x, t)
            den = x - t * d
        else:
            den = net(x, t)
            d = (x - den) / t
        ms.append(den if predict_x0 else d)
        tb.append(t)
        if lower_order_final:
            o = i + 1 if i + 1 < max_order else min(max_order, n - (i + 1))
        else:
            o = min(max_order, i + 1)
        x = _dpmpp_update(x, ms, tb, tn, o, predict_x0)
        ms, tb = ms[-3:], tb[-3:]
    return x


def _unipc_update(x, ms, ts_prev, t, order, net, use_corrector, variant, predict_x0):
    lam = lambda s: -np.log(s)
    s0, m0 = ts_prev[-1], ms[-1]
    h = lam(t) - lam(s0)
    rks, d1s = [], []
    for i in range(1, order):
        rk = (lam(ts_prev[-(i + 1)]) - lam(s0)) / h
        rks.append(rk)
        d1s.append((ms[-(i + 1)] - m0) / rk)
    rks.append(1.0)
    rks = np.array(rks)
    hh = -h if predict_x0 else h
    h_phi_1 = np.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    fact = 1
    bh = hh if variant == "bh1" else np.expm1(hh)
    big_r, b = [], []
    for i in range(1, order + 1):
        big_r.append(rks ** (i - 1))
        b.append(h_phi_k * fact / bh)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    big_r, b = np.stack(big_r), np.array(b)
    if d1s:
        rhos_p = np.array([0.5]) if order == 2 else np.linalg.solve(big_r[:-1, :-1], b[:-1])
        pred_res = sum(r * dd for r, dd in zip(rhos_p, d1s))
    else:
        pred_res = 0
    rhos_c = np.array([0.5]) if order == 1 else np.linalg.solve(big_r, b)
    scale = 1 if predict_x0 else t
    x_t_ = (t / s0 * x - h_phi_1 * m0) if predict_x0 else (x - t * h_phi_1 * m0)
    x_t = x_t_ - scale * bh * pred_res
    model_t = None
    if use_corrector:
        den = net(x_t, t)
        model_t = den if predict_x0 else (x_t - den) / t
        corr_res = sum(r * dd for r, dd in zip(rhos_c[:-1], d1s)) if d1s else 0
        x_t = x_t_ - scale * bh * (corr_res + rhos_c[-1] * (model_t - m0))
    return x_t, model_t


def unipc(net, x, ts, afs=False, max_order=3, variant="bh2", predict_x0=True,
          lower_order_final=True):
    n = len(ts)
    if afs:
        d = _afs_d(x, ts[0])
        den = x - ts[0] * d
    else:
        den = net(x, ts[0])
        d = (x - den) / ts[0]
    ms, tb = [den if predict_x0 else d], [ts[0]]
    for i in range(n - 1):
        tn = ts[i + 1]
        if i + 1 < max_order:
            x, m = _unipc_update(x, ms, tb, tn, i + 1, net, True, variant, predict_x0)
            ms.append(m)
            tb.append(tn)
        else:
            o = min(max_order, n - i - 1) if lower_order_final else max_order
            corr = i != n - 2
            x, m = _unipc_update(x, ms, tb, tn, o, net, corr, variant, predict_x0)
            ms, tb = ms[1:] + [ms[-1]], tb[1:] + [tn]
            if corr:
                ms[-1] = m
    return x
