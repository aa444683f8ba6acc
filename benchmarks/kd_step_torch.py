"""Training-step throughput: jaxkd's Flax resnet8x4 against the same model in PyTorch.

Both sides run the CIFAR recipe's student step (distillation.md §1) on one batch of 64
random 32x32x3 images with random labels (throughput only; the values do not matter):
train-mode forward (batch statistics, running statistics updated), cross-entropy,
backward, SGD lr 0.05, momentum 0.9, Nesterov, coupled weight decay 5e-4 on every
parameter (torch ``SGD(weight_decay=5e-4)`` = ``optax.add_decayed_weights`` before
``optax.sgd``). float32 on both sides. The PyTorch resnet8x4 (NCHW) is written below,
layer for layer like ``jaxkd.models.resnet``; it starts from the Flax initial weights, and
the benchmark first checks that one step gives the same logits, loss and updated
parameters on both sides.

    python -m benchmarks.kd_step_torch --out=benchmarks/results/kd_step.json
    python -m benchmarks.kd_step_torch --out=/tmp/kd_step.json --quick   # smoke run

Timing: the JAX step is one ``jax.jit`` (state donated); its compile time is the
ahead-of-time ``lower(...).compile()`` time. After one warm-up call per side, calls of
``--steps`` steps alternate between JAX, torch with N threads and torch with 1 thread
(``benchmarks.timing.time_interleaved``; the order rotates) and every JAX call
ends in ``block_until_ready``; the reported step time is the median over calls divided by
``--steps``.
``ratio = torch_step_s / jax_step_s`` (> 1: JAX faster). XLA's CPU backend runs its
convolutions on a thread pool of all available cores; torch is set to the same number of
intra-op threads (``torch.set_num_threads``; override with ``--torch-threads``). Both
figures are in the JSON. On a shared machine other processes slow both sides: the
markdown reports how busy the CPUs were.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import (
    cpu_busy_fraction,
    cpu_ticks,
    others_busy_fraction,
    package_version,
    time_interleaved,
)
from jaxkd import models

LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
WIDTHS = (32, 64, 128, 256)          # resnet8x4: ResNet(8, [32, 64, 128, 256])


# ---------------------------------------------------------------------------- torch


def torch_resnet8x4(num_classes: int = 100):
    """resnet8x4 in PyTorch (NCHW): stem conv3x3-BN-ReLU, three stages of one basic block
    (strides 1, 2, 2; 1x1 conv + BN shortcut), global average pool, Linear."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (x if self.short is None else self.short(x)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(WIDTHS[0])
            self.blocks = nn.Sequential(*[Block(a, b, s) for a, b, s in
                                          zip(WIDTHS[:-1], WIDTHS[1:], (1, 2, 2))])
            self.fc = nn.Linear(WIDTHS[-1], num_classes)

        def forward(self, x):
            h = self.blocks(torch.relu(self.bn(self.conv(x))))
            return self.fc(h.mean((2, 3)))

    return Net()


def load_flax_into_torch(net, variables) -> None:
    """Copies Flax resnet8x4 variables (HWIO kernels, (in, out) Linear) into ``net``."""
    import torch

    p, s = variables["params"], variables["batch_stats"]

    def conv(mod, kernel):
        mod.weight.copy_(torch.from_numpy(np.array(kernel).transpose(3, 2, 0, 1)))

    def bn(mod, params, stats):
        for name, value in (("weight", params["scale"]), ("bias", params["bias"]),
                            ("running_mean", stats["mean"]), ("running_var", stats["var"])):
            getattr(mod, name).copy_(torch.from_numpy(np.array(value)))

    with torch.no_grad():
        conv(net.conv, p["stem"]["Conv_0"]["kernel"])
        bn(net.bn, p["stem"]["BatchNorm_0"], s["stem"]["BatchNorm_0"])
        for i, block in enumerate(net.blocks):
            bp = p[f"stages_{i}"]["BasicBlock_0"]
            bs = s[f"stages_{i}"]["BasicBlock_0"]
            conv(block.conv1, bp["Conv_0"]["kernel"])
            bn(block.bn1, bp["BatchNorm_0"], bs["BatchNorm_0"])
            conv(block.conv2, bp["Conv_1"]["kernel"])
            bn(block.bn2, bp["BatchNorm_1"], bs["BatchNorm_1"])
            if block.short is not None:
                conv(block.short[0], bp["shortcut_conv"]["kernel"])
                bn(block.short[1], bp["shortcut_bn"], bs["shortcut_bn"])
        net.fc.weight.copy_(torch.from_numpy(np.array(p["head"]["fc"]["kernel"]).T))
        net.fc.bias.copy_(torch.from_numpy(np.array(p["head"]["fc"]["bias"])))


def torch_step_fn(net, x, y):
    """One training step of ``net`` on (x NCHW, y); returns a no-argument callable."""
    import torch

    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True,
                          weight_decay=WEIGHT_DECAY)
    net.train()
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        logits = net(x)
        loss = loss_fn(logits, y)
        loss.backward()
        opt.step()
        return logits, loss
    return step


# ------------------------------------------------------------------------------ jax


def make_tx():
    return optax.chain(optax.add_decayed_weights(WEIGHT_DECAY),
                       optax.sgd(LR, momentum=MOMENTUM, nesterov=True))


def jax_step_fn(model, tx):
    """``step(state, x, y) -> (state, (logits, loss))`` with state (params, stats, opt)."""
    def loss_fn(params, stats, x, y):
        (logits, _), upd = model.apply({"params": params, "batch_stats": stats}, x,
                                       train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, (logits, upd["batch_stats"])

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, x, y):
        params, stats, opt_state = state
        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, stats, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), (logits, loss)
    return step


# ---------------------------------------------------------------------------- run


def agreement_check(model, variables, x, y) -> dict:
    """Two steps on both sides from the same weights: logits, loss, params, BN means."""
    import torch

    net = torch_resnet8x4()
    load_flax_into_torch(net, variables)
    xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y)
    tstep = torch_step_fn(net, xt, yt)
    jstep = jax_step_fn(model, make_tx())
    tx = make_tx()
    state = jax.tree.map(jnp.array, (variables["params"], variables["batch_stats"],
                                     tx.init(variables["params"])))
    out = {}
    for i in range(2):
        logits_t, loss_t = tstep()
        state, (logits_j, loss_j) = jstep(state, jnp.asarray(x), jnp.asarray(y))
        out[f"step{i}_logits_max_abs_diff"] = float(np.abs(
            np.asarray(logits_j) - logits_t.detach().numpy()).max())
        out[f"step{i}_loss_abs_diff"] = abs(float(loss_j) - loss_t.item())
    back = torch_resnet8x4()
    load_flax_into_torch(back, {"params": state[0], "batch_stats": state[1]})
    tp, jp = dict(net.named_parameters()), dict(back.named_parameters())
    out["params_after_2_steps_max_abs_diff"] = max(
        float((tp[k] - jp[k]).detach().abs().max()) for k in tp)
    tb, jb = dict(net.named_buffers()), dict(back.named_buffers())
    out["bn_running_mean_max_abs_diff"] = max(
        float((tb[k] - jb[k]).abs().max()) for k in tb if k.endswith("running_mean"))
    # Flax keeps the biased batch variance, torch the unbiased one (factor n / (n - 1)).
    out["bn_running_var_max_rel_diff"] = max(
        float(((tb[k] - jb[k]) / tb[k]).abs().max()) for k in tb if k.endswith("running_var"))
    return out


def run(out: str, quick: bool = False, steps: int = 2, rounds: int = 5, batch: int = 64,
        torch_threads: int | None = None, seed: int = 0) -> dict:
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    torch_default_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads or cores)
    torch.manual_seed(seed)
    if quick:
        steps, rounds, batch = 1, 2, 8
    busy_before = cpu_busy_fraction()
    load_before = os.getloadavg()

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 100, size=batch).astype(np.int64)
    model = models.create("resnet8x4", 100)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.asarray(x))
    check = agreement_check(model, variables, x, y)

    # JAX: AOT compile time, then a warm-up call.
    tx = make_tx()
    jstep = jax_step_fn(model, tx)
    xj, yj = jnp.asarray(x), jnp.asarray(y, jnp.int32)
    state = jax.tree.map(jnp.array, (variables["params"], variables["batch_stats"],
                                     tx.init(variables["params"])))
    t0 = time.perf_counter()
    lowered = jstep.lower(state, xj, yj)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    holder = {"state": state}

    def jax_call():
        st = holder["state"]
        for _ in range(steps):
            st, (_, loss) = compiled(st, xj, yj)
        jax.block_until_ready(loss)
        holder["state"] = st

    t3 = time.perf_counter()
    jax_call()
    first_call_s = time.perf_counter() - t3

    net = torch_resnet8x4()
    load_flax_into_torch(net, variables)
    tstep = torch_step_fn(net, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                          torch.from_numpy(y))

    threads = torch.get_num_threads()

    def torch_call(n=threads):
        torch.set_num_threads(n)
        for _ in range(steps):
            tstep()

    calls = {"jax": jax_call, "torch": torch_call}
    if threads > 1:       # also single-threaded: torch's thread barriers suffer most
        calls["torch_1thread"] = functools.partial(torch_call, 1)   # on a busy machine
    for call in calls.values():
        if call is not jax_call:
            call()                                     # warm-up
    torch.set_num_threads(threads)
    ticks = cpu_ticks()
    times = time_interleaved(calls, min_repeats=rounds, max_repeats=rounds, min_total_s=0.0)
    busy_during = others_busy_fraction(ticks, cpu_ticks())
    torch.set_num_threads(threads)
    jax_s, torch_s = times["jax"][0] / steps, times["torch"][0] / steps
    t1_s = times["torch_1thread"][0] / steps if "torch_1thread" in times else torch_s

    dev = jax.devices()[0]
    report = dict(
        model="resnet8x4", params=models.count_params(variables), batch=batch,
        image=[32, 32, 3], steps_per_call=steps, calls_per_side=times["jax"][2],
        jax_step_s=jax_s, torch_step_s=torch_s, ratio=torch_s / jax_s,
        jax_steps_per_s=1 / jax_s, torch_steps_per_s=1 / torch_s,
        jax_images_per_s=batch / jax_s, torch_images_per_s=batch / torch_s,
        jax_step_min_s=times["jax"][1] / steps, torch_step_min_s=times["torch"][1] / steps,
        torch_1thread_step_s=t1_s, ratio_1thread=t1_s / jax_s,
        torch_1thread_step_min_s=(times["torch_1thread"][1] / steps
                                  if "torch_1thread" in times else torch_s),
        jax_lower_s=t1 - t0, jax_compile_s=t2 - t1, jax_first_call_s=first_call_s,
        agreement=check, quick=quick,
        env=dict(python=platform.python_version(), platform=platform.platform(),
                 processor=platform.processor() or platform.machine(), cpus_available=cores,
                 jax=jax.__version__, jaxlib=package_version("jaxlib"),
                 flax=package_version("flax"), optax=package_version("optax"),
                 torch=torch.__version__,
                 jax_device=f"{dev.platform}: {dev.device_kind}",
                 torch_num_threads=torch.get_num_threads(),
                 torch_default_num_threads=torch_default_threads,
                 xla_flags=os.environ.get("XLA_FLAGS", ""),
                 cpu_busy_before_run=busy_before, others_busy_during_timing=busy_during,
                 loadavg_before_run=load_before, loadavg_after_run=os.getloadavg()))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")
    Path(out).with_suffix(".md").write_text(markdown(report))
    return report


def markdown(r: dict) -> str:
    e, a = r["env"], r["agreement"]
    busy = e["others_busy_during_timing"]
    return "\n".join([
        "# resnet8x4 training step: jaxkd (JAX/Flax) vs PyTorch, CPU", "",
        f"One SGD step (train-mode BN, cross-entropy, Nesterov momentum 0.9, coupled weight "
        f"decay 5e-4) of resnet8x4 ({r['params']:,} params) on a batch of {r['batch']} random "
        f"32x32x3 images, float32. JAX and PyTorch calls alternate, {r['calls_per_side']} of "
        f"{r['steps_per_call']} steps each; medians. ratio = torch step time / JAX step time "
        "(> 1: JAX faster).", "",
        *_table(r, e["torch_num_threads"] > 1), "",
        "Same weights, same batch, two steps: logits max abs diff "
        f"{a['step1_logits_max_abs_diff']:.1e} (step 2), loss diff "
        f"{a['step1_loss_abs_diff']:.1e}, parameters after two steps max abs diff "
        f"{a['params_after_2_steps_max_abs_diff']:.1e}, BN running means "
        f"{a['bn_running_mean_max_abs_diff']:.1e}; running variances differ by up to "
        f"{a['bn_running_var_max_rel_diff']:.1e} relative (Flax stores the biased batch "
        "variance, torch the unbiased one).", "",
        f"Machine: {e['cpus_available']} CPUs ({e['processor']}), {e['platform']}; jax "
        f"{e['jax']} on {e['jax_device']} ({_xla_threads(e)}), torch {e['torch']} with "
        f"{e['torch_num_threads']} intra-op threads (its "
        f"default here: {e['torch_default_num_threads']}). CPUs busy before the run: "
        f"{_pct(e['cpu_busy_before_run'])}; kept busy by other processes during the timings: "
        f"{_pct(busy)} (load average {e['loadavg_before_run'][0]:.1f} before, "
        f"{e['loadavg_after_run'][0]:.1f} after)."
        + (" The CPUs were shared with other jobs, so absolute times are inflated and "
           "noisy; the alternation spreads the slowdown over all sides."
           if (busy or 0) > 0.1 else ""),
        ""])


def _table(r: dict, one_thread_column: bool) -> list:
    cols = [("JAX (jit)", r["jax_step_s"], r["jax_step_min_s"]),
            (f"PyTorch (eager), {r['env']['torch_num_threads']} thread(s)", r["torch_step_s"],
             r["torch_step_min_s"])]
    if one_thread_column:
        cols.append(("PyTorch (eager), 1 thread", r["torch_1thread_step_s"],
                     r["torch_1thread_step_min_s"]))
    rows = ["| | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---:|" * len(cols),
            "| step time, median (s) | " + " | ".join(f"{c[1]:.3f}" for c in cols) + " |",
            "| step time, fastest call (s) | " + " | ".join(f"{c[2]:.3f}" for c in cols)
            + " |",
            "| steps / s | " + " | ".join(f"{1 / c[1]:.2f}" for c in cols) + " |",
            "| images / s | " + " | ".join(f"{r['batch'] / c[1]:.0f}" for c in cols) + " |",
            "| ratio torch / JAX | 1 | " + " | ".join(
                f"**{c[1] / r['jax_step_s']:.2f}**" for c in cols[1:]) + " |",
            f"| JAX compile (s) | {r['jax_compile_s']:.2f} (+ {r['jax_lower_s']:.2f} "
            "trace/lower) |" + " – |" * (len(cols) - 1)]
    return rows


def _xla_threads(e: dict) -> str:
    flags = e["xla_flags"]
    if "intra_op_parallelism_threads=1" in flags or "multi_thread_eigen=false" in flags:
        return f"XLA single-threaded: XLA_FLAGS={flags!r}"
    return f"XLA's CPU thread pool: all {e['cpus_available']} cores"


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.0f}%"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="benchmarks/results/kd_step.json")
    ap.add_argument("--quick", action="store_true", help="batch 8, 2 calls of 1 step")
    ap.add_argument("--steps", type=int, default=2, help="steps per timed call")
    ap.add_argument("--rounds", type=int, default=5, help="timed calls per side")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch intra-op threads (default: the number of available CPUs)")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the markdown next to --out from its JSON")
    args = ap.parse_args(argv)
    if args.render:
        md = markdown(json.loads(Path(args.out).read_text()))
        Path(args.out).with_suffix(".md").write_text(md)
        print(md)
        return None
    for name, v in (("steps", args.steps), ("rounds", args.rounds), ("batch", args.batch)):
        if v < 1:
            raise SystemExit(f"--{name} must be >= 1; got {v}")
    r = run(args.out, quick=args.quick, steps=args.steps, rounds=args.rounds,
            batch=args.batch, torch_threads=args.torch_threads)
    print(Path(args.out).with_suffix(".md").read_text())
    return r


if __name__ == "__main__":
    main()
