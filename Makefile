# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-fashion test lint bench bench-deps tables install clean fashion-data

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

# Fashion-MNIST IDX files from Debian (needs root or sudo). Only the jobs that name it
# need it (demo-fashion, tables); no test does: tests use fixtures (tests/idx_files.py).
fashion-data:
	test -d /usr/share/datasets/fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }

demo-fashion: $(STAMP) fashion-data
	$(VPY) -m jaxdiff.bench --config=configs/bench_fashion_mnist.py --workdir=runs/fashion

# Tests read no data set installed on the machine: conftest.py points JAXINFRA_DATA_PATH
# at fixture files it writes (.ci/run also hides the default folder). --dist loadscope
# sends each test module to one worker, so module-scoped fixtures (tiny training runs)
# are computed once. Two workers more than cores: most tests are bound by XLA compiles,
# which run on one thread, or wait on subprocesses (notebook kernels, the two-process
# launches); with one more than cores the 2 cores were 85% busy (2026-12-04).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 2 )))
test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=4 $(VPY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=15 tests

lint: $(STAMP)
	$(VPY) -m ruff check .

# The peers, installed light: PyPI's Linux torch wheel pulls ~3 GB of CUDA libraries, so a
# CPU-only torch wheel is taken first when pip finds one without an index (find-links);
# otherwise PyPI's default. k-diffusion comes without its training/evaluation deps
# (torchvision, clip, wandb, ...): its samplers need only the packages listed here.
# Each benchmark runs our code and the peer in one process; results land in
# benchmarks/results/ (JSON + Markdown).
bench-deps: $(STAMP)
	$(VPY) -m pip install --quiet --no-index --no-deps 'torch>=2.3' 2>/dev/null \
	  || echo "bench: no local CPU-only torch wheel; installing PyPI's default torch"
	$(VPY) -m pip install --quiet 'torch>=2.3' torchsde torchdiffeq safetensors scipy tqdm pillow \
	  'pykeen>=1.10' 'torch_geometric>=2.5' 'diffusers>=0.27'
	$(VPY) -m pip install --quiet --no-deps 'k-diffusion>=0.1.1'

bench: bench-deps
	$(VPY) -m benchmarks.kdiffusion_vs_jaxdiff --out=benchmarks/results/kdiffusion.json
	$(VPY) -m benchmarks.kd_step_torch --out=benchmarks/results/kd_step.json
	$(VPY) -m benchmarks.kge_vs_pykeen --models=distmult,transe --dim=32 --train_steps=20 --epochs=2
	$(VPY) -m benchmarks.kge_eval_time --dims=32,64
	$(VPY) -m benchmarks.gnn_vs_pyg --threads=2

# The measured tables of the README (long CPU jobs; each resumes finished cells).
tables: $(STAMP) fashion-data
	$(VPY) -m jaxdiff.guide --config=configs/guide_digits.py --workdir=runs/guide_digits --config.publish=True
	$(VPY) -m jaxdiff.detect --config=configs/detect_digits.py --workdir=runs/detect_digits
	$(VPY) -m benchmarks.kd_fashion --workdir=runs/kd_fashion_e3 --out=benchmarks/results/kd_fashion_e3.json --student_epochs=3 --student_milestones=2
	$(VPY) -m jaxkd.kt --config=configs/kd/kt.py:cpu --workdir=runs/kt_cpu
	$(VPY) -m benchmarks.kge_table --data=wn18rr --dims=32 --seeds=0,1,2 --epochs=20 --select_lr=0.001,0.003,0.01,0.03 --tag=_e20
	$(VPY) -m benchmarks.kge_table --data=wn18rr --dims=64 --seeds=0,1,2 --epochs=20 --select_lr=0.001,0.003,0.01,0.03 --tag=_e20
	$(VPY) -m benchmarks.kge_table --report
	$(VPY) -m benchmarks.oad_table --workdir=runs/oad_table

clean:
	rm -rf $(VENV) runs
