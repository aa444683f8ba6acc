#!/usr/bin/env bash
# Builds .devcarry/, what benchmarks/device_session.sh expects beside the working tree on
# a lent accelerator (pass carry=[".devcarry"] to the device call), on the development
# machine (network for pip; root or sudo for `make fashion-data`):
#
#   .devcarry/whl/                wheels the device image lacks (downloaded, no deps)
#   .devcarry/data/fashion-mnist/ the four Fashion-MNIST IDX .gz files (30 MB)
#   .devcarry/kd/                 finished KD teachers, when runs/kd_fashion_full has them
#
#   bash benchmarks/devcarry.sh            # then: du -sh .devcarry (the carry limit: 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p .devcarry/whl .devcarry/data .devcarry/kd
"$PY" -m pip download --quiet --no-deps -d .devcarry/whl \
  ml_collections jraph tensorboardX k-diffusion torchsde trampoline
test -d /usr/share/datasets/fashion-mnist || make fashion-data
cp -r /usr/share/datasets/fashion-mnist .devcarry/data/
for t in runs/kd_fashion_full/teacher_s*; do   # teachers of benchmarks.kd_fashion, if any
  [ -d "$t" ] && cp -r "$t" .devcarry/kd/
done
du -sh .devcarry
