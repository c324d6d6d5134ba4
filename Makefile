# The two set-up commands of the README. Both create/reuse .venv (scripts/setup_env.sh) and are idempotent.
#   make demo   run the main job on the embedded default (synthetic dataset, small encoders)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= outputs/demo

.PHONY: setup demo test bench clean-demo

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/setup_env.sh

demo: setup
	@echo "[demo] running scripts/demo.sh -> $(DEMO_OUT)"
	@PY=$(PY) DEMO_OUT=$(DEMO_OUT) bash scripts/demo.sh

# Two pytest workers (pytest-xdist), one test file per worker at a time so that a file's session fixtures (tiny
# dataset trees, the demo run) are built once; PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
test: setup
	@echo "[test] $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests"
	@$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

# Benchmarks: extra packages for the Mask2Former comparison (maskformer2 comes with `setup`), then every script
# (tables printed, JSON in benchmarks/results).
bench: setup
	@$(PY) -m pip install -q -e ".[bench]"
	@gpu=$$($(PY) -c "import torch; print(int(torch.cuda.is_available()))"); \
	for b in benchmarks/*.py; do \
		args=; [ "$$b" = benchmarks/gpu_check.py ] && [ "$$gpu" = 0 ] && args=--dry-run; \
		echo "[bench] $$b $$args"; $(PY) $$b $$args || exit 1; \
	done

clean-demo:
	rm -rf $(DEMO_OUT)
