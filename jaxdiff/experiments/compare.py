"""The papers' comparison at NFE 3..10: hand-made schedules vs GITS vs AMED.

    python -m jaxdiff.compare --config=configs/compare_digits.py --workdir=runs/compare

For each denoiser regime (gmm: a Gaussian mixture fitted to the data; optimal: the data's
exact denoiser; edm: a U-Net trained with ``python -m jaxdiff.train``) and NFE it runs
  iPNDM (polynomial), iPNDM+GITS, DDIM+GITS, iPNDM+AMED-Plugin, AMED-Solver,
  DPM-Solver++(3M) and UniPC (logSNR)
from the same held-out noise and reports the mean L2 error to a converged Heun reference,
with the search / training cost (seconds and teacher NFE) of GITS and AMED. The papers'
claim under test: at 5 NFE, GITS and AMED cut the error of the best hand-made schedule by
a large factor (CIFAR-10 FID 13.59 -> 8.38 and 6.61). AMED uses AFS at odd NFE (the
reference's setting) and no AFS at even NFE; ``amed_afs_mean`` says what AFS assumes
D(x; 80) to be ("zero": the reference; "data": the data mean; "denoiser": D(0; 80)).
The GITS rows use the config's search (``gits_metric``) and, for ``+gits_dev``, the
reference's cost; every row of results.json states its settings.

Nothing finished is lost: each (regime, method, NFE) row and each regime's summary is
appended to ``workdir/rows.jsonl`` as soon as it exists, and a later call in the same
workdir reuses them and runs only what is missing. Only which rows to run
(``regimes``, ``methods``, ``nfes``) may differ between calls; any other setting is
refused, listing the differences (``workdir/settings.json``), so a long comparison can be
run in pieces (e.g. one method at a time) and assembled by a last call that asks for all.
"""
from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

import jaxdiff
from jaxdiff import denoisers, gits, schedules
from jaxdiff.experiments import bench
from jaxdiff.training import amed as amed_training
from jaxinfra import checkpoints, config_checks

METHODS = ("ipndm", "ipndm+gits", "ddim+gits", "ipndm+gits_dev", "ddim+gits_dev",
           "ipndm+amed", "amed", "dpmpp", "unipc")
LABELS = {"ipndm": "iPNDM (polynomial)", "ipndm+gits": "iPNDM+GITS",
          "ddim+gits": "DDIM+GITS", "ipndm+gits_dev": "iPNDM+GITS (reference cost)",
          "ddim+gits_dev": "DDIM+GITS (reference cost)", "ipndm+amed": "iPNDM+AMED-Plugin",
          "amed": "AMED-Solver", "dpmpp": "DPM-Solver++(3M)", "unipc": "UniPC-3"}
_AMED = {"ipndm+amed": dict(base="ipndm", teacher="ipndm", teacher_points=2,
                            schedule=("polynomial", {"rho": 7.0}), scale_time=0.2,
                            options={"max_order": 4}),
         "amed": dict(base="amed", teacher="heun", teacher_points=1,
                      schedule=("time_uniform", {"rho": 1.0}), scale_time=0.0, options={})}


def load_regime(regime: str, images, cfg):
    """(denoise_fn, feature_fn or None, feature_dim) for a regime name."""
    if regime in ("gmm", "optimal"):
        return bench.build_denoiser(regime, images, cfg), None, cfg.feature_dim
    if regime == "edm":
        from jaxdiff.models import unet
        from jaxdiff.training import edm as train_lib
        model, params, _ = train_lib.load_checkpoint(cfg.edm_workdir)
        h, w = unet.feature_shape(model)
        return unet.make_denoiser(model, params), unet.make_feature_fn(model, params), h * w
    raise ValueError(f"unknown regime {regime!r}; valid: ('gmm', 'optimal', 'edm')")


def gits_schedule(method, nfe, denoise, cfg, teacher_run):
    """(sigmas, settings) of a ``+gits`` method: the config's search, or the reference's."""
    student = "ipndm" if method.startswith("ipndm") else "euler"
    metric = "dev" if method.endswith("_dev") else cfg.gits_metric
    settings = {"metric": metric, "coeff": cfg.gits_coeff, "grid": cfg.gits_grid,
                "warmup": cfg.gits_warmup, "teacher": "ipndm-4", "student": student}
    if metric == "select":
        chosen = gits.select_schedule(denoise, teacher_run, nfe + 1, coeff=cfg.gits_coeff,
                                      candidates=tuple(cfg.gits_candidates), student=student,
                                      significance=cfg.gits_significance)
        settings.update(candidates=list(cfg.gits_candidates), selected=chosen.selected,
                        significance=cfg.gits_significance, gain=chosen.gain,
                        candidate_errors=chosen.errors, selection_nfe=chosen.model_calls)
        return chosen.sigmas, settings
    indices = gits.dp_schedule(teacher_run.costs[metric], nfe + 1, cfg.gits_coeff)
    return teacher_run.grid[indices], settings


def run_method(method, nfe, denoise, feature_fn, feature_dim, x_eval, cfg, teacher_run,
               mean=None):
    """Samples of one method at one NFE, with its search/training cost and settings."""
    cost = {"seconds": 0.0, "teacher_nfe": 0}
    if method in ("ipndm", "dpmpp", "unipc"):
        sched, kw, opts = bench.SOLVER_SETTINGS[method]
        n, afs = jaxdiff.steps_for_nfe(method, nfe, **opts)
        out = jaxdiff.sample(denoise, x_eval, schedules.get(sched, n, **kw), solver=method,
                             afs=afs, **opts)
        return out, cost
    if "+gits" in method:
        sigmas, settings = gits_schedule(method, nfe, denoise, cfg, teacher_run)
        out = jaxdiff.sample(denoise, x_eval, jnp.asarray(sigmas, x_eval.dtype),
                             solver=settings["student"])
        return out, {**cost, "gits": settings,
                     "sigmas": [float(v) for v in np.asarray(sigmas)]}
    spec = _AMED[method]
    afs = nfe % 2 == 1
    num_steps = (nfe + 2 + int(afs)) // 2
    name, kw = spec["schedule"]
    stride = spec["teacher_points"] + 1
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(cfg.seed + 1)
    x_train = 80.0 * jax.random.normal(key, (cfg.amed_trajectories,) + x_eval.shape[1:],
                                       x_eval.dtype)
    pred = amed_training.train(denoise, x_train, schedules.get(name, num_steps, **kw),
                      base=spec["base"], teacher=spec["teacher"], feature_fn=feature_fn,
                      feature_dim=feature_dim,
                      teacher_sigmas=schedules.get(name, stride * (num_steps - 1) + 1, **kw),
                      teacher_points=spec["teacher_points"], batch_size=cfg.amed_batch,
                      scale_time=spec["scale_time"], afs=afs,
                      afs_mean=mean if afs else None, seed=cfg.seed,
                      objective=cfg.amed_objective, **spec["options"])
    cost["seconds"] = time.perf_counter() - t0
    cost["afs"] = {"used": afs, "mean": cfg.amed_afs_mean if afs else None}
    cost["objective"] = cfg.amed_objective
    cost["teacher_nfe"] = cfg.amed_trajectories * jaxdiff.nfe(
        spec["teacher"], stride * (num_steps - 1) + 1)
    out = jaxdiff.sample(denoise, x_eval, schedules.get(name, num_steps, **kw),
                         solver=spec["base"], amed=pred, feature_fn=feature_fn)
    return out, cost


def fd_scorer(cfg, images):
    """Classifier-feature Frechet distance of samples to the data (NOT Inception FID)."""
    import importlib

    from jaxdiff.experiments import fid
    edm_cfg = importlib.import_module(cfg.edm_config).get_config(cfg.edm_config_arg or None)
    classifier, _ = fid.load_or_train_classifier(
        edm_cfg, os.path.join(cfg.edm_workdir, "classifier"))
    real = fid.feature_stats(classifier, images)
    return lambda samples: fid.fd_of_samples(samples, classifier, real)


#: What to run, not how: calls that differ only here share their rows.
ROW_SELECTION = ("regimes", "methods", "nfes")
ROWS_FILE = "rows.jsonl"


class RowCache:
    """The rows and regime summaries of earlier calls in ``workdir`` (``rows.jsonl``),
    and the file new ones are appended to (one JSON line each, flushed to disk).

    Raises:
      SettingsMismatchError: ``workdir`` holds rows of other settings (every difference
        listed); only :data:`ROW_SELECTION` may change.
    """

    def __init__(self, cfg, workdir: str):
        self.path = os.path.join(workdir, ROWS_FILE)
        checkpoints.check_settings_file(workdir, checkpoints.settings(cfg, ignore=ROW_SELECTION),
                                        holds="comparison rows of")
        self.rows, self.infos = {}, {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                text = f.read()
            complete, _, cut = text.rpartition("\n")
            if cut:         # a last line cut short by a kill: dropped before appending
                tmp = self.path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(complete + "\n" if complete else "")
                os.replace(tmp, self.path)
            for line in complete.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "info" in entry:
                    self.infos[entry["regime"]] = entry["info"]
                else:
                    self.rows[(entry["regime"], entry["method"], entry["nfe"])] = entry

    def _append(self, entry: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add_row(self, row: dict) -> None:
        self.rows[(row["regime"], row["method"], row["nfe"])] = row
        self._append(row)

    def add_info(self, regime: str, info: dict) -> None:
        self.infos[regime] = info
        self._append({"regime": regime, "info": info})


def run_regime(regime, images, cfg, progress, cache: RowCache):
    """The rows (cfg.methods x cfg.nfes) and the summary of one regime, reusing the rows
    ``cache`` holds and adding the new ones to it as they finish."""
    wanted = [(m, n) for m in cfg.methods for n in cfg.nfes]
    missing = [(m, n) for m, n in wanted if (regime, m, n) not in cache.rows]
    if not missing and regime in cache.infos:
        progress.update(len(wanted))
        return [cache.rows[(regime, m, n)] for m, n in wanted], cache.infos[regime]
    return _run_regime(regime, images, cfg, progress, cache, wanted)


def noises(cfg, shape):
    """(x_warm, x_eval): a call's GITS warm-up (``cfg.gits_warmup``) and evaluation
    (``cfg.num_eval``) noises at sigma 80, of image ``shape``, drawn from ``cfg.seed``."""
    k_warm, k_eval = jax.random.split(jax.random.PRNGKey(cfg.seed))
    return (80.0 * jax.random.normal(k_warm, (cfg.gits_warmup,) + tuple(shape)),
            80.0 * jax.random.normal(k_eval, (cfg.num_eval,) + tuple(shape)))


def _run_regime(regime, images, cfg, progress, cache, wanted):
    denoise, feature_fn, feature_dim = load_regime(regime, images, cfg)
    score_fd = fd_scorer(cfg, images) if regime == "edm" and cfg.fd else None
    x_warm, x_eval = noises(cfg, images.shape[1:])
    reference, change = bench.converged_reference(denoise, x_eval, cfg.reference_steps)
    mean = bench.afs_mean(cfg.amed_afs_mean, images, denoise)
    grid = np.asarray(schedules.get("polynomial", cfg.gits_grid))
    teacher_run, gits_seconds = None, 0.0
    if any("+gits" in m and (regime, m, n) not in cache.rows for m, n in wanted):
        t0 = time.perf_counter()
        metrics = {"dev"} | {c for c in cfg.gits_candidates if c in gits.METRICS}
        if cfg.gits_metric != "select":
            metrics.add(cfg.gits_metric)
        teacher_run = gits.run_teacher(denoise, x_warm, grid, teacher="ipndm",
                                       teacher_options={"max_order": 4},
                                       metrics=tuple(sorted(metrics)))
        gits_seconds = time.perf_counter() - t0
    rows = []
    for method, nfe in wanted:
        if (regime, method, nfe) in cache.rows:          # finished by an earlier call
            rows.append(cache.rows[(regime, method, nfe)])
            progress.update(1)
            continue
        t_method = time.perf_counter()
        out, cost = run_method(method, nfe, denoise, feature_fn, feature_dim, x_eval, cfg,
                               teacher_run, mean)
        if "+gits" in method:
            # The teacher pass is shared by all NFEs; the selection runs are this NFE's.
            selection_nfe = cost["gits"].get("selection_nfe", 0)
            cost.update(seconds=gits_seconds, teacher_nfe=cfg.gits_warmup * (
                            cfg.gits_grid - 1),
                        selection_seconds=(time.perf_counter() - t_method
                                           if selection_nfe else 0.0),
                        selection_nfe=selection_nfe)
        row = {"regime": regime, "method": method, "nfe": nfe,
               "error": bench.mean_l2(out, reference), **cost}
        if score_fd is not None:
            row["fd"] = score_fd(out)
        cache.add_row(row)
        rows.append(row)
        progress.update(1)
    if regime in cache.infos:
        return rows, cache.infos[regime]
    info = {"reference_change_when_halved": change}
    if regime == "edm":  # how far the network is from the exact denoiser of its data
        errors = denoisers.error_by_sigma(denoise, denoisers.optimal(images), images,
                                          cfg.error_sigmas, key=jax.random.PRNGKey(cfg.seed))
        info["error_vs_optimal_by_sigma"] = {f"{s:g}": float(e)
                                             for s, e in zip(cfg.error_sigmas, errors)}
    if score_fd is not None:
        info["reference_fd"] = score_fd(reference)
    cache.add_info(regime, info)
    return rows, info


def markdown(rows, methods, nfes, key="error"):
    out = "| method | " + " | ".join(map(str, nfes)) + " | search / training cost |\n"
    out += "|---|" + "---|" * (len(nfes) + 1) + "\n"
    for m in methods:
        rs = {r["nfe"]: r for r in rows if r["method"] == m}
        cells = [f"{rs[n][key]:.3g}" for n in nfes]
        secs = sum(r["seconds"] for r in rs.values())
        tnfe = sum(r["teacher_nfe"] for r in rs.values())
        if "+gits" in m:  # one shared teacher pass plus every NFE's selection runs
            first = next(iter(rs.values()))
            secs = first["seconds"] + sum(r["selection_seconds"] for r in rs.values())
            tnfe = first["teacher_nfe"] + sum(r["selection_nfe"] for r in rs.values())
        cost = "–" if tnfe == 0 else f"{secs:.0f} s, {tnfe:,} NFE"
        label = LABELS[m]
        if "+gits" in m:
            picks = [rs[n]["gits"].get("selected") for n in nfes]
            label += f" [{rs[nfes[0]]['gits']['metric']}" + (
                f": {'/'.join(picks)}]" if all(picks) else "]")
        if "objective" in rs[nfes[0]]:  # AMED's training rule
            label += f" [{rs[nfes[0]]['objective']}]"
        out += f"| {label} | " + " | ".join(cells) + f" | {cost} |\n"
    return out


def run(cfg, workdir: str) -> dict:
    for m in cfg.methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; valid: {METHODS}")
    config_checks.one_of(cfg, "amed_afs_mean", bench.AFS_MEANS)
    config_checks.one_of(cfg, "amed_objective", amed_training.OBJECTIVES)
    config_checks.number_at_least(cfg, "gits_significance", 0.0)
    for r in cfg.regimes:
        if r not in ("gmm", "optimal", "edm"):
            raise ValueError(f"unknown regime {r!r}; valid: ('gmm', 'optimal', 'edm')")
    if "edm" in cfg.regimes and not os.path.isdir(cfg.edm_workdir or ""):
        raise FileNotFoundError(f"regime 'edm' needs a trained model in edm_workdir="
                                f"{cfg.edm_workdir!r}; train one with python -m jaxdiff.train "
                                f"--config=configs/edm_digits.py --workdir=runs/edm_digits")
    os.makedirs(workdir, exist_ok=True)
    cache = RowCache(cfg, workdir)
    name, images = bench.load_images(cfg)
    results = {"dataset": name, "num_eval": cfg.num_eval, "regimes": {}}
    total = len(cfg.regimes) * len(cfg.methods) * len(cfg.nfes)
    with tqdm(total=total, desc="low-NFE comparison", unit="run") as progress, \
            open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics:
        for regime in cfg.regimes:
            rows, info = run_regime(regime, images, cfg, progress, cache)
            for r in rows:
                metrics.write(json.dumps(r) + "\n")
            results["regimes"][regime] = {**info, "rows": rows,
                                          "table": markdown(rows, cfg.methods, cfg.nfes)}
            if "reference_fd" in info:
                results["regimes"][regime]["fd_table"] = markdown(rows, cfg.methods, cfg.nfes,
                                                                  key="fd")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        for regime, res in results["regimes"].items():
            f.write(f"### {name}, {regime} denoiser: mean L2 error to the reference "
                    f"({cfg.num_eval} held-out samples)\n\n{res['table']}\nReference change "
                    f"when halved: {res['reference_change_when_halved']:.2e}.\n\n")
            if "error_vs_optimal_by_sigma" in res:
                bands = res["error_vs_optimal_by_sigma"]
                f.write("The network's error to the exact denoiser of its data, by sigma: "
                        + ", ".join(f"{k}: {v:.3g}" for k, v in bands.items()) + ".\n\n")
            if "fd_table" in res:
                f.write(f"### {name}, {regime} denoiser: Frechet distance in the features of "
                        f"a classifier trained on the data (NOT Inception FID; "
                        f"{cfg.num_eval} samples)\n\n{res['fd_table']}\nThe converged "
                        f"reference's own FD: {res['reference_fd']:.3g}.\n\n")
    return results


def report(results, workdir: str) -> None:
    with open(os.path.join(workdir, "results.md")) as f:
        print(f.read())


def main():
    """The ``python -m`` entry point (flags: --config, --workdir)."""
    from jaxinfra.cli import run_job
    run_job(run, report, what="comparison config file")


if __name__ == "__main__":
    main()
