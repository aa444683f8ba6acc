# Two entry points: `make demo` and `make test`. Both create .venv when missing.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VPY) -m jaxdiff.bench --config=configs/bench_digits.py --workdir=runs/demo

test: $(STAMP)
	XLA_FLAGS=--xla_force_host_platform_device_count=4 $(VPY) -m pytest -q tests

bench: $(STAMP)
	$(VPY) -m pip install --quiet -e '.[test,bench]'
	$(VPY) -m benchmarks.kdiffusion_vs_jaxdiff --out=benchmarks/results/kdiffusion.json

clean:
	rm -rf $(VENV) runs
