#!/usr/bin/env bash
# GPU figures of the README in one call on a lent accelerator (one NVIDIA H200 here),
# each stage under its own time limit so that one failure or overrun costs only itself:
#
#   1. kdiff:     k-diffusion (torch on cuda) against jaxdiff on the GPU, batches up to 16384
#   2. edm_train: steps/s of the default (GPU-sized) Fashion-MNIST EDM U-Net, 300 steps
#   3. kge:       entity-sharded KGE at 1e6 and 1e7 entities on one GPU
#   4. kd:        issue 15's distillation table (benchmarks.kd_fashion --option=fashion_full),
#                 resumable: what the time limit cuts off continues on any machine
#
# It expects, in the ignored folder .devcarry (made on the development machine by
# benchmarks/devcarry.sh):
#   whl/            wheels the device image lacks (ml_collections, jraph, tensorboardX,
#                   k-diffusion, torchsde, trampoline)
#   data/fashion-mnist/  the four Fashion-MNIST IDX .gz files (JAXINFRA_DATA_PATH)
#   kd/teacher_s<s> finished teachers (best/ and result.json, or the last checkpoint)
# and writes $OUT/results.tgz (JSON results and logs) and $OUT/kd_runs.tgz (the KD runs:
# result.json and metrics.jsonl of finished runs; everything of unfinished ones and of
# teachers trained here). SMOKE=1 shrinks every stage (a CPU check of this script);
# STAGES the stages to run (default "kdiff edm_train kge kd"), KGE_SIZES the entity counts
# of the kge stage (default 1000000,10000000; 1e7 needs ~5 min, most of it building the
# graph and its filter index on the host), KGE_BUDGET its seconds (default 80).
# PY is the interpreter (default python3), DEADLINE the seconds for all stages, KD_ARGS
# more arguments of the KD stage (e.g. "--student_epochs=12 --student_milestones=8,10",
# which trains the students into their own folder).
set -u
PY=${PY:-python3}
OUT=${OUT:-/tmp/device_out}
DEADLINE=${DEADLINE:-540}
SMOKE=${SMOKE:-0}
RES=/tmp/device_res
T0=$(date +%s)
mkdir -p "$OUT" "$RES"
elapsed() { echo $(( $(date +%s) - T0 )); }

if ls .devcarry/whl/*.whl >/dev/null 2>&1 && [ "$SMOKE" = 0 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .devcarry/whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
export JAXINFRA_DATA_PATH=$PWD/.devcarry/data PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null
$PY - <<'EOF' 2>&1 | tee "$RES/environment.txt"
import importlib.metadata as md, platform
print("python", platform.python_version())
for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "torch", "numpy"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "missing")
import jax
print("devices", jax.devices())
EOF

STAGES=${STAGES:-kdiff edm_train kge kd}
stage() {   # stage NAME SECONDS CMD...: runs CMD with a limit, logs to $RES/NAME.log
  local name=$1 budget=$2; shift 2
  case " $STAGES " in *" $name "*) ;; *) echo "$name: not in STAGES"; return ;; esac
  local left=$(( DEADLINE - $(elapsed) ))
  [ "$budget" -gt "$left" ] && budget=$left
  if [ "$budget" -lt 20 ]; then echo "[$(elapsed) s] $name: skipped (no time left)"; return; fi
  echo "[$(elapsed) s] $name: start, limit $budget s"
  timeout -s INT -k 15 "$budget" "$@" > "$RES/$name.log" 2>&1
  echo "[$(elapsed) s] $name: exit $?"
  tail -n 25 "$RES/$name.log"
}

if [ "$SMOKE" = 1 ]; then
  KDIFF="--quick --solvers=euler,dpmpp_2m_sde --torch_device=cpu"
  EDM="configs/edm_fashion_mnist.py:tiny"; EDM_STEPS=4
  KGE="--sizes=1000 --steps=2 --queries=8"
  KD="--rows=ce,kd --seeds=0 --student_max_train=512 --student_epochs=1"
  STUDENTS=/tmp/smoke_students
else
  KDIFF="--batches=1,64,1024,16384 --solvers=euler,heun,dpmpp_2m,euler_ancestral,dpmpp_2m_sde --torch_device=cuda --min_total_s=1.0"
  EDM="configs/edm_fashion_mnist.py"; EDM_STEPS=300
  KGE="--sizes=${KGE_SIZES:-1000000,10000000}"
  KD="--rows=ce,kd,kd_w11,fitnet,dskd,camkd,camkd_noscale,aver,ebkd,fitnet_mkd,aekd --student_max_train=10000"
  STUDENTS=.devcarry/kd/students
fi
HW=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
HW=${HW:-CPU}

stage kdiff 100 $PY -m benchmarks.kdiffusion_vs_jaxdiff --out="$RES/kdiffusion_gpu.json" $KDIFF
stage edm_train 90 $PY -m jaxdiff.train --config="$EDM" --workdir="$RES/edm_train" \
  --config.num_steps=$EDM_STEPS --config.sample.every=0 --config.progress=False
rm -rf "$RES/edm_train/checkpoints"
stage kge ${KGE_BUDGET:-80} $PY -m benchmarks.kge_sharded_scaling $KGE --shards=1 --compare_unsharded=0 \
  --max_load=1.0 --out="$RES/kge_gpu.json"
stage kd $(( DEADLINE - 25 - $(elapsed) )) $PY -m benchmarks.kd_fashion --option=fashion_full \
  $KD ${KD_ARGS:-} --teacher_root=.devcarry/kd --workdir=$STUDENTS${KD_ARGS:+_$(echo "$KD_ARGS" | tr -dc 'a-z0-9')} \
  --hardware="$HW" --out="$RES/kd_fashion_full_gpu.json"

# Pack: finished runs travel light, unfinished ones whole (to resume elsewhere).
$PY - "$OUT/kd_runs.tgz" <<'EOF'
import os, sys, tarfile
root = ".devcarry/kd"
with tarfile.open(sys.argv[1], "w:gz") as tar:
    for run in sorted(os.listdir(root)):
        d = os.path.join(root, run)
        for sub in ([d] if not run.startswith("students") else
                    [os.path.join(d, r) for r in sorted(os.listdir(d))]):
            if run in ("teacher_s0", "teacher_s1"):     # carried here: only the result
                if os.path.exists(os.path.join(sub, "result.json")):
                    tar.add(os.path.join(sub, "result.json"))
                continue
            done = os.path.exists(os.path.join(sub, "result.json"))
            if done and run.startswith("students"):
                for f in ("result.json", "metrics.jsonl"):
                    if os.path.exists(os.path.join(sub, f)):
                        tar.add(os.path.join(sub, f))
            else:
                tar.add(sub)
print("kd_runs.tgz", os.path.getsize(sys.argv[1]), "bytes")
EOF
tar czf "$OUT/results.tgz" -C "$(dirname "$RES")" "$(basename "$RES")"
echo "[$(elapsed) s] done; $(ls -la "$OUT" | tail -n +2 | wc -l) files in \$OUT"
