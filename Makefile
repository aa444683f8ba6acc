# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-fashion test bench install clean fashion-data

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

# Fashion-MNIST IDX files from Debian (needs root or sudo).
fashion-data:
	test -d /usr/share/datasets/fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }

demo-fashion: $(STAMP) fashion-data
	$(VPY) -m jaxdiff.bench --config=configs/bench_fashion_mnist.py --workdir=runs/fashion

test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=4 $(VPY) -m pytest -q tests

# The peer, installed light: PyPI's Linux torch wheel pulls ~3 GB of CUDA libraries, so a
# CPU-only torch wheel is taken first when pip finds one without an index (find-links);
# otherwise PyPI's default. k-diffusion comes without its training/evaluation deps
# (torchvision, clip, wandb, ...): its samplers need only the packages listed here.
bench: $(STAMP)
	$(VPY) -m pip install --quiet --no-index --no-deps 'torch>=2.3' 2>/dev/null \
	  || echo "bench: no local CPU-only torch wheel; installing PyPI's default torch"
	$(VPY) -m pip install --quiet 'torch>=2.3' torchsde torchdiffeq safetensors scipy tqdm pillow
	$(VPY) -m pip install --quiet --no-deps 'k-diffusion>=0.1.1'
	$(VPY) -m benchmarks.kdiffusion_vs_jaxdiff --out=benchmarks/results/kdiffusion.json

clean:
	rm -rf $(VENV) runs
