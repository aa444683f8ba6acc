"""Distillation table on offline Fashion-MNIST (CPU-sized; see docs/jaxkd.md).

    # the 6000-image table (benchmarks/results/kd_fashion.json):
    nice -n 5 .venv/bin/python -m benchmarks.kd_fashion --workdir=runs/kd_fashion_e3 \
        --out=benchmarks/results/kd_fashion_e3.json --student_epochs=3 --student_milestones=2
    # issue 15's table: teachers on all 60k images, every row incl. the variants:
    nice -n 5 .venv/bin/python -m benchmarks.kd_fashion --option=fashion_full \
        --student_max_train=10000 --dry_run

Trains, per seed s in --seeds: a resnet20 teacher (configs/kd/teacher.py:<option>,seed=s),
then the resnet8 student of every row of the table (:data:`ROWS`: a configs/kd module
and config overrides; ``kd_w11``, ``dskd_deep0`` and ``camkd_noscale`` are variants of
kd, dskd and camkd): CE alone, KD, FitNet and DSKD from teacher s, and CA-MKD, AVER,
EBKD, FitNet-MKD and AEKD from all three seeds' teachers (three teachers of one
architecture, as CA-MKD's setting uses three trials).

--option=fashion (default): the ``:fashion`` configs (first 6000 training and 2000 test
images, teachers 3 epochs, students 1 unless --student_epochs says otherwise; teachers in
--workdir), rows :data:`METHODS`. --option=fashion_full: the ``:fashion_full`` configs
(all 60000 / 10000 images; teachers 6 epochs, students 6, lr x0.1 after epochs 4 and 5;
teachers in runs/kd_fashion_full/teacher_s<s> or --teacher_root), every row of ROWS.
--student_max_train=N trains the students on the first N training images while the
teachers keep the option's (a protocol choice, recorded in the results).

Reports the best-epoch and last-epoch test accuracy, mean +- std (ddof 1) over seeds.
One process: each row's step compiles once. Finished runs (workdir/result.json, which
records the run's config argument and overrides; a mismatch is an error) are not redone;
an interrupted run resumes from its checkpoint. Every run holds its workdir's lock
(jaxinfra.workdir): a teacher being trained by another process (runs/teachers_full.sh,
or another process of this script: the table can be split with --seeds/--rows) is
waited for, and a finished one is adopted (its training seconds read from its
metrics.jsonl).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import time

import numpy as np

from benchmarks.seed_stats import mean_std

# CIFAR-100 top-1 (%) from the spec (distillation.md section 6: RepDistiller README,
# resnet32x4 -> resnet8x4, mean of runs, best epoch). DSKD and CA-MKD tables are in
# their arXiv PDFs, which the spec does not reproduce.
PAPER_CIFAR100 = {"pair": "resnet32x4 -> resnet8x4", "source": "RepDistiller README (CRD paper)",
                  "teacher": 79.42, "ce": 72.50, "kd": 73.33, "fitnet": 73.50,
                  "dskd": None, "camkd": None, "aver": None, "ebkd": None,
                  "fitnet_mkd": None, "aekd": None}
METHODS = ("ce", "kd", "fitnet", "dskd", "camkd", "aver", "ebkd", "fitnet_mkd", "aekd")

#: The rows of the table: name -> (configs/kd/<module>.py, config overrides). Overrides
#: are dotted config keys; ``method.<key>`` must be a default of the module's method.
ROWS = {
    "ce": ("ce", {}),
    "kd": ("kd", {}),
    "kd_w11": ("kd", {"method.ce_weight": 1.0, "method.kd_weight": 1.0}),
    "fitnet": ("fitnet", {}),
    "dskd": ("dskd", {}),
    "dskd_deep0": ("dskd", {"method.deep_weight": 0.0}),
    "camkd": ("camkd", {}),
    "camkd_noscale": ("camkd", {"method.scale_by_k": False}),
    "aver": ("aver", {}),
    "ebkd": ("ebkd", {}),
    "fitnet_mkd": ("fitnet_mkd", {}),
    "aekd": ("aekd", {}),
}
OPTIONS = ("fashion", "fashion_full")
#: Rows run when --rows is not given: the published 6000-image table keeps its rows.
DEFAULT_ROWS = {"fashion": METHODS, "fashion_full": tuple(ROWS)}
#: (training, test) images of the whole splits (a max_train/max_test of 0 means these).
SPLIT_SIZES = {"fashion_mnist": (60000, 10000)}


def _wait_for(dirs, poll=15.0):
    """Blocks until every dir holds result.json (teachers of another process of this
    script: the table can be split over processes with --seeds/--rows)."""
    while not all(os.path.exists(os.path.join(d, "result.json")) for d in dirs):
        time.sleep(poll)


def check_overrides(row, config, overrides):
    """Raises a one-line ValueError naming ``row``, the key and the accepted keys when an
    override is not a key of ``config`` (``method.<key>``: a default of its method)."""
    from jaxinfra.checkpoints import flatten
    from jaxkd import methods
    method_keys = sorted(f"method.{k}" for k in methods.get(config.method.name).defaults)
    other_keys = sorted(k for k in flatten(config.to_dict()) if not k.startswith("method."))
    for key in overrides or {}:
        accepted = method_keys if key.startswith("method.") else other_keys
        if key not in accepted:
            raise ValueError(f"row {row!r}: unknown override {key!r} for configs/kd/"
                             f"{ROWS.get(row, (config.method.name,))[0]}.py; accepted: "
                             f"{', '.join(accepted)}")


def _override(config, overrides):
    """Sets dotted keys ("optim.milestones") of a ConfigDict in place."""
    for key, value in (overrides or {}).items():
        *path, last = key.split(".")
        node = config
        for k in path:
            node = node[k]
        node[last] = value


def row_config(row, option="fashion", seed=0, student=None):
    """The ConfigDict of one run of the table: configs/kd/<module>.py:<option>,seed=<seed>
    with the ``student`` overrides (epochs, milestones, max_train) and then the row's.

    Raises:
      ValueError: an unknown row or option, or an override that is not a config key
        (the message names the row, the key and the accepted keys).
    """
    if row != "teacher" and row not in ROWS:
        raise ValueError(f"unknown row {row!r}; accepted: {', '.join(ROWS)}")
    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; accepted: {', '.join(OPTIONS)}")
    module, overrides = ROWS.get(row, ("teacher", {}))
    config = importlib.import_module(f"configs.kd.{module}").get_config(f"{option},seed={seed}")
    check_overrides(row, config, student)
    check_overrides(row, config, overrides)
    _override(config, student)
    _override(config, overrides)
    config.progress = False
    return config


def _jsonable(x):
    return json.loads(json.dumps(x))


def _finished_epochs(workdir):
    """The last evaluated epoch in ``workdir/metrics.jsonl`` (0: none)."""
    path, last = os.path.join(workdir, "metrics.jsonl"), 0
    with contextlib.suppress(OSError):
        with open(path) as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    last = max(last, int(json.loads(line).get("test/epoch", 0)))
    return last


def _metrics_seconds(workdir):
    """Training seconds of a run from its metrics.jsonl: the steps of each train row over
    its steps_per_sec (evaluation and compilation excluded)."""
    prev, total = 0, 0.0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if row.get("train/steps_per_sec"):
                total += max(row["step"] - prev, 0) / row["train/steps_per_sec"]
                prev = row["step"]
    return total


@contextlib.contextmanager
def _lock(workdir, poll=15.0):
    """Holds ``workdir``'s lock, waiting while another live process holds it."""
    from jaxinfra import workdir as workdir_lib
    told = False
    while True:
        try:
            with workdir_lib.locked(workdir):
                yield
            return
        except workdir_lib.WorkdirLockedError as err:
            if not told:
                print(f"waiting: {err}", flush=True)
                told = True
            time.sleep(poll)


def _load_done(done, record):
    with open(done) as f:
        res = json.load(f)
    if "benchmark" in res and res["benchmark"] != _jsonable(record):
        raise ValueError(f"{done} is a run of other settings ({res['benchmark']}; asked "
                         f"{record}); use another --workdir")
    return res


def _run(key, config, workdir, teachers=None, record=None):
    """Trains ``config`` in ``workdir`` (or returns its result.json); ``record`` (config
    argument and overrides) is stored in result.json and checked when it is reused."""
    from jaxkd import train
    if teachers:
        _wait_for(teachers)
    done = os.path.join(workdir, "result.json")
    if os.path.exists(done):
        return _load_done(done, record)
    if teachers is not None:
        config.teacher.workdirs = tuple(teachers)
    os.makedirs(workdir, exist_ok=True)
    with _lock(workdir):
        if os.path.exists(done):                   # finished by another process meanwhile
            return _load_done(done, record)
        adopted = _finished_epochs(workdir) >= int(config.num_epochs)
        t0 = time.perf_counter()
        res = train.train_and_evaluate(config, workdir)
        res["total_seconds"] = time.perf_counter() - t0
        if adopted:     # trained to the end by another process (runs/teachers_full.sh)
            res["adopted"] = True
            res["total_seconds"] = _metrics_seconds(workdir)
        res["benchmark"] = _jsonable(record or {})
        with open(done, "w") as f:
            json.dump(res, f)
    print(f"{key} {(record or {}).get('config', '')} -> best {res['best_acc']:.4f} last "
          f"{res['last_acc']:.4f} ({res['total_seconds']:.0f} s"
          f"{', adopted' if adopted else ''})", flush=True)
    return res


_RUN_LINE = re.compile(r"^(\S+_s\d+) (\S+) -> best ([\d.]+) last ([\d.]+) "
                       r"\(([\d.]+) s(, adopted)?\)$")


def runs_from_logs(paths):
    """{run: result} from the run lines this script prints (``_run``), for runs whose
    result.json did not survive (e.g. a device machine's files that were not brought
    back). Each result holds best_acc, last_acc, total_seconds, the config argument and
    ``source: "log:<path>"``; a later line of the same run wins."""
    out = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                m = _RUN_LINE.match(line.strip())
                if m:
                    key, config, best, last, secs, adopted = m.groups()
                    out[key] = {"best_acc": float(best), "last_acc": float(last),
                                "total_seconds": float(secs), "config": config,
                                "source": f"log:{path}", **({"adopted": True} if adopted
                                                             else {})}
    return out


def _wall(roots, runs):
    """Seconds from the start of the first run to the end of the last (result.json
    mtime minus the run's duration; ``roots``: run -> the folder holding it), also when
    the table was split over processes. Adopted runs are left out (None: none left)."""
    ends, starts = [], []
    for k, r in runs.items():
        if r.get("adopted") or "source" in r:        # logged runs have no result.json
            continue
        end = os.path.getmtime(os.path.join(roots[k], k, "result.json"))
        ends.append(end)
        starts.append(end - r["total_seconds"])
    return max(ends) - min(starts) if ends else None


def _summary(values):
    return mean_std(values, scale=100)


def _images(config):
    """(training, test) images a config uses (max_train/max_test resolved)."""
    full = SPLIT_SIZES.get(config.dataset, (0, 0))

    def pick(m, n):
        return int(m) if m and (not n or int(m) < n) else n
    return pick(config.max_train, full[0]), pick(config.max_test, full[1])


LABELS = {"teacher": "Teacher (resnet20; CIFAR: resnet32x4)", "ce": "Student, CE only",
          "kd": "KD", "kd_w11": "KD, weights 1/1", "fitnet": "FitNet",
          "dskd": "DSKD (reconstruction)", "dskd_deep0": "DSKD, no deep supervision",
          "camkd": "CA-MKD (3 teachers)", "camkd_noscale": "CA-MKD, no 1/K scaling",
          "aver": "AVER (3 teachers)", "ebkd": "EBKD (3 teachers)",
          "fitnet_mkd": "FitNet-MKD (3 teachers)", "aekd": "AEKD (3 teachers)"}


def _fmt_overrides(overrides):
    return ", ".join(f"{k.removeprefix('method.')}={v}" for k, v in overrides.items()) or "-"


def render(out: dict) -> str:
    """The markdown table of a results dict (as written by main). A column of config
    overrides appears when a row has some (results of older runs render as before)."""
    b = out["budget"]
    rows = out.get("rows", {})
    with_over = any(r.get("overrides") for r in rows.values())
    lines = [
        "| method | " + ("overrides | " if with_over else "") +
        "seeds | Fashion-MNIST best-epoch top-1 (%) | last-epoch (%) | s/run | "
        "CIFAR-100 paper (%) |", "|---|---|---|---|---|---|" + ("---|" if with_over else "")]
    paper = out["paper_cifar100_percent"]
    for m, r in out["table_percent"].items():
        over = rows.get(m, {}).get("overrides", {})
        p = None if over else paper.get(m)        # the paper ran the defaults only
        n = r.get("num_seeds", len(out["seeds"]))
        pm = lambda v: f"{v['mean']:.2f} +- {v['std']:.2f}" if n > 1 else f"{v['mean']:.2f}"
        lines.append(f"| {LABELS.get(m, m)} | " +
                     (f"{_fmt_overrides(over)} | " if with_over else "") +
                     f"{n} | {pm(r['best'])} | {pm(r['last'])} | "
                     f"{r['seconds']:.0f} | {'n/a' if p is None else f'{p:.2f}'} |")
    lines.append("")
    t_imgs = b.get("teacher_train_images", b["train_images"])
    images = (f"{b['train_images']} training / {b['test_images']} test images"
              if t_imgs == b["train_images"] else
              f"teachers on {t_imgs}, students on the first {b['train_images']} training "
              f"images, {b['test_images']} test images")
    def drops(key):            # the lr schedule (results of older runs: not shown)
        ms = b.get(key) or []
        return (f" (lr x0.1 after epoch {', '.join(map(str, ms))})"
                if ms and "option" in b else "")
    lines.append(f"Seeds {out['seeds']}; {images}; teacher {b['teacher']} "
                 f"{b['teacher_epochs']} epochs{drops('teacher_milestones')}, "
                 f"student {b['student']} {b['student_epochs']} epoch(s)"
                 f"{drops('student_milestones')}"
                 f", batch {b['batch_size']}, lr {b['lr']}; {b['hardware']}; " + (
                     f"run times summed: teachers {b['teacher_run_seconds'] / 60:.0f} min, "
                     f"students {b['student_run_seconds'] / 60:.0f} min"
                     if "teacher_run_seconds" in b else      # results of older runs
                     f"whole table {b['wall_seconds'] / 60:.0f} min") +
                 f". Paper column: {paper['pair']}, "
                 f"{paper['source']}" + ("; variant rows: n/a." if with_over else "."))
    return "\n".join(lines)


def _teacher_sets(row, tdir, all_t):
    """The teacher workdirs of ``row``'s method (None: none)."""
    from jaxkd import methods
    k = methods.get(ROWS[row][0] if row in ROWS else row).teachers
    # Multi-teacher methods: the teachers of seeds 0, 1, 2 whatever --seeds says.
    return all_t if k < 0 or k > 1 else ([tdir] if k == 1 else None)


def _status(workdir, num_epochs):
    if os.path.exists(os.path.join(workdir, "result.json")):
        return "done"
    if _finished_epochs(workdir) >= num_epochs:
        return "finished elsewhere (adopted)"
    lock = os.path.join(workdir, ".lock")
    if os.path.exists(lock):
        return "in use by another process (waited for)"
    if os.path.isdir(os.path.join(workdir, "checkpoints")):
        return f"resumes after epoch {_finished_epochs(workdir)}"
    return "new"


#: Steps/s of each row's training step with the :fashion_full configs (batch 64), measured
#: on the 2 CPU cores of the development machine while a teacher trained beside them
#: (probes of 100 steps after compilation, 2026-12; fitnet, aver, ebkd and fitnet_mkd
#: not probed: taken as kd, aekd, aekd and camkd). The --dry_run estimate's default.
MEASURED_STEPS_PER_SEC = {
    "teacher": 3.6, "ce": 5.6, "kd": 4.5, "kd_w11": 4.5, "fitnet": 4.5, "dskd": 0.66,
    "dskd_deep0": 0.62, "camkd": 1.95, "camkd_noscale": 1.95, "aver": 2.7, "ebkd": 2.7,
    "fitnet_mkd": 1.95, "aekd": 2.7}
#: Seconds per run besides the steps: compilation, plus evaluation per epoch and 10000
#: test images (measured with the figures above).
COMPILE_SECONDS, EVAL_SECONDS_PER_10K = 20.0, 7.0


def steps_per_sec_table(arg=""):
    """:data:`MEASURED_STEPS_PER_SEC` with --steps_per_sec's changes: 'x' (every row and
    the teacher) or 'row=x,...'."""
    out = dict(MEASURED_STEPS_PER_SEC)
    for part in filter(None, arg.split(",")):
        key, _, val = part.rpartition("=")
        if key and key not in out:
            raise ValueError(f"--steps_per_sec: unknown row {key!r}; accepted: "
                             f"{', '.join(out)}")
        out.update({key: float(val)} if key else dict.fromkeys(out, float(val)))
    return out


def _dry_run(plan, steps_per_sec=""):
    """Prints the runs of ``plan`` [(key, workdir, config, record, teachers)], the
    training steps still to do and an estimate of their time from
    :func:`steps_per_sec_table` (plus compilation and evaluation per run)."""
    sps = steps_per_sec_table(steps_per_sec)
    steps, secs = {"teachers": 0, "students": 0}, {"teachers": 0.0, "students": 0.0}
    for key, wd, c, record, teachers in plan:
        n_train, n_test = _images(c)
        spe = n_train // int(c.batch_size)
        status = _status(wd, int(c.num_epochs))
        epochs = 0 if status in ("done", "finished elsewhere (adopted)") else (
            int(c.num_epochs) - _finished_epochs(wd))
        row = key.rsplit("_s", 1)[0]
        kind = "teachers" if row == "teacher" else "students"
        steps[kind] += epochs * spe
        if epochs:
            secs[kind] += (epochs * spe / sps[row] + COMPILE_SECONDS
                           + epochs * EVAL_SECONDS_PER_10K * n_test / 10000)
        print(f"{key:18s} {status:28s} {record['config']:36s} {c.num_epochs} ep x {spe} "
              f"steps ({n_train}/{n_test} images) overrides {record['overrides']}"
              + (f" teachers {list(teachers)}" if teachers else ""))
    print(f"steps to train: teachers {steps['teachers']}, students {steps['students']}; "
          f"about {secs['teachers'] / 60:.0f} + {secs['students'] / 60:.0f} min at "
          f"steps/s {sps}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--option", default="fashion", choices=OPTIONS,
                   help="the configs/kd/*.py option every run uses")
    p.add_argument("--workdir", default="",
                   help="student runs (default runs/kd_fashion; fashion_full: "
                        "runs/kd_fashion_full/students_n<N>_e<epochs>)")
    p.add_argument("--teacher_root", default="",
                   help="teachers in <root>/teacher_s<s> (default: --workdir; fashion_full: "
                        "runs/kd_fashion_full); missing ones are trained")
    p.add_argument("--out", default="",
                   help="results JSON (default benchmarks/results/kd_<option>.json); the "
                        "markdown goes beside it")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--render", action="store_true",
                   help="only print the markdown table of --out")
    p.add_argument("--rows", "--methods", dest="rows", default="",
                   help="rows to run (of ROWS; default: fashion the 9 methods, "
                        f"fashion_full all): {','.join(ROWS)}")
    p.add_argument("--student_epochs", type=int, default=0,
                   help="0: the option's (fashion 1, fashion_full 6); else students train "
                        "this many epochs")
    p.add_argument("--student_milestones", default="",
                   help="comma-separated epochs after which the student lr drops x0.1 "
                        "(fashion_full default 4,5; 'none' for a constant lr)")
    p.add_argument("--student_max_train", type=int, default=0,
                   help="0: the option's training images; else students train on the first "
                        "N (teachers keep the option's)")
    p.add_argument("--hardware", default="2 CPU cores",
                   help="what the table ran on, as written into the results")
    p.add_argument("--collect", action="store_true",
                   help="train nothing: tabulate the finished runs (result.json) found "
                        "under --workdir, with the number of seeds per row")
    p.add_argument("--logs", default="",
                   help="--collect: comma-separated logs of this script whose run lines "
                        "('<run> <config> -> best B last L (S s)') stand in for runs whose "
                        "result.json is missing (recorded with source 'log')")
    p.add_argument("--dry_run", action="store_true",
                   help="print the runs with their configs and status, and the steps left")
    p.add_argument("--steps_per_sec", default="",
                   help="--dry_run: steps/s for the estimate, 'x' for every run or "
                        "'row=x,...' (default MEASURED_STEPS_PER_SEC: 2 shared CPU cores)")
    a = p.parse_args(argv)
    full = a.option == "fashion_full"
    a.out = a.out or f"benchmarks/results/kd_{a.option}.json"
    if a.render:
        with open(a.out) as f:
            print(render(json.load(f)))
        return
    todo = tuple(a.rows.split(",")) if a.rows else DEFAULT_ROWS[a.option]
    bad = sorted(set(todo) - set(ROWS))
    if bad:
        raise SystemExit(f"unknown rows {bad}; accepted: {', '.join(ROWS)}")
    from jaxinfra.cli import quiet_absl_logging
    quiet_absl_logging()
    seeds = [int(s) for s in a.seeds.split(",")]
    student = {}
    if a.student_epochs:
        student["num_epochs"] = a.student_epochs
    if a.student_milestones:
        student["optim.milestones"] = () if a.student_milestones == "none" else tuple(
            int(e) for e in a.student_milestones.split(","))
    if a.student_max_train:
        student["max_train"] = a.student_max_train
    for r in todo:                            # every override checked before any work
        row_config(r, a.option, 0, student)
    if not a.workdir:
        a.workdir = "runs/kd_fashion" if not full else (
            f"runs/kd_fashion_full/students_n{a.student_max_train or 'all'}_e"
            f"{row_config('ce', a.option, 0, student).num_epochs}")
    troot = a.teacher_root or ("runs/kd_fashion_full" if full else a.workdir)
    all_t = [os.path.join(troot, f"teacher_s{s}") for s in range(3)]

    def teacher_plan(s):
        c = row_config("teacher", a.option, s)
        return (f"teacher_s{s}", all_t[s], c,
                {"config": f"teacher.py:{a.option},seed={s}", "overrides": {}}, None)

    def student_plan(r, s):
        c = row_config(r, a.option, s, student)
        record = {"config": f"{ROWS[r][0]}.py:{a.option},seed={s}",
                  "overrides": {**student, **ROWS[r][1]}}
        return (f"{r}_s{s}", os.path.join(a.workdir, f"{r}_s{s}"), c, record,
                _teacher_sets(r, all_t[s], all_t))

    if a.dry_run:
        multi = any(_teacher_sets(r, "", all_t) == all_t for r in todo)
        plan = [teacher_plan(s) for s in (range(3) if multi else seeds)]
        plan += [student_plan(r, s) for s in seeds for r in todo]
        print(f"workdir {a.workdir}, teachers {troot}")
        _dry_run(plan, a.steps_per_sec)
        return
    runs = {}
    if a.collect:
        logged = runs_from_logs(a.logs.split(",")) if a.logs else {}
        for s in seeds:
            for k, root in [(f"teacher_s{s}", troot)] + [(f"{r}_s{s}", a.workdir)
                                                         for r in todo]:
                path = os.path.join(root, k, "result.json")
                if os.path.exists(path):
                    with open(path) as f:
                        runs[k] = json.load(f)
                elif k in logged:
                    runs[k] = logged[k]
    else:
        teachers_done = {}

        def teacher(s):                        # trained (or adopted, or waited for) once
            if s not in teachers_done:
                key, wd, c, record, _ = teacher_plan(s)
                teachers_done[s] = _run(key, c, wd, None, record)
            return teachers_done[s]

        for s in seeds:
            runs[f"teacher_s{s}"] = teacher(s)
        for s in seeds:
            for r in todo:
                key, wd, c, record, teachers = student_plan(r, s)
                if teachers == all_t:
                    for t in range(3):
                        teacher(t)
                runs[key] = _run(key, c, wd, teachers, record)
    table = {}
    for m in ("teacher",) + todo:
        rs = [runs[f"{m}_s{s}"] for s in seeds if f"{m}_s{s}" in runs]
        if not rs:
            continue
        table[m] = {"num_seeds": len(rs), "best": _summary([r["best_acc"] for r in rs]),
                    "last": _summary([r["last_acc"] for r in rs]),
                    "seconds": float(np.mean([r["total_seconds"] for r in rs]))}
        if m in ROWS:
            table[m]["overrides"] = dict(ROWS[m][1])
    c, ct = row_config("kd", a.option, 0, student), row_config("teacher", a.option, 0)
    n_train, n_test = _images(c)
    roots = {k: (troot if k.startswith("teacher_") else a.workdir) for k in runs}
    out = {
        "command": "nice -n 5 .venv/bin/python -m benchmarks.kd_fashion "
                   + (f"--option={a.option} " if full else "")
                   + f"--workdir={a.workdir} --out={a.out} --seeds={a.seeds}"
                   + (f" --teacher_root={troot}" if troot != a.workdir else "")
                   + (f" --rows={','.join(todo)}" if a.rows else "")
                   + (f" --student_epochs={a.student_epochs}" if a.student_epochs else "")
                   + (f" --student_milestones={a.student_milestones}"
                      if a.student_milestones else "")
                   + (f" --student_max_train={a.student_max_train}"
                      if a.student_max_train else "")
                   + (" --collect" if a.collect else ""),
        "budget": {"option": a.option, "dataset": c.dataset, "train_images": n_train,
                   "test_images": n_test, "teacher_train_images": _images(ct)[0],
                   "student_max_train": a.student_max_train, "teacher_root": troot,
                   "teacher": ct.student,
                   "teacher_epochs": ct.num_epochs, "student": c.student,
                   "student_epochs": c.num_epochs, "batch_size": c.batch_size,
                   "lr": c.optim.lr, "student_milestones": list(c.optim.milestones),
                   "teacher_milestones": list(ct.optim.milestones),
                   "student_overrides": _jsonable(student),
                   "hardware": a.hardware,
                   "wall_seconds": _wall(roots, runs),
                   "sum_of_run_seconds": sum(r["total_seconds"] for r in runs.values()),
                   "teacher_run_seconds": sum(r["total_seconds"] for k, r in runs.items()
                                              if k.startswith("teacher_")),
                   "student_run_seconds": sum(r["total_seconds"] for k, r in runs.items()
                                              if not k.startswith("teacher_")),
                   "adopted_runs": sorted(k for k, r in runs.items() if r.get("adopted"))},
        "rows": {r: {"config": f"configs/kd/{ROWS[r][0]}.py:{a.option},seed=<s>",
                     "overrides": dict(ROWS[r][1])} for r in todo},
        "seeds": seeds, "table_percent": table, "runs": runs,
        "paper_cifar100_percent": PAPER_CIFAR100,
    }
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(render(out) + "\n")
    print(render(out))


if __name__ == "__main__":
    main()
