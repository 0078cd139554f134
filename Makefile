# Two commands do all set-up on a fresh machine: `make demo` and `make test` (`make test-fast`: the
# quick tier for the edit-test loop).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo

.PHONY: demo demo-compare test test-fast typecheck lint bench bench-gpu install clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/handprop demo --workdir $(RUN)

# the demo plus the comparison methods (config synthetic_compare), in the same run folder: after
# `make demo` only the comparison phases, the evaluation and the report run
demo-compare: $(STAMP)
	$(VENV)/bin/handprop demo --compare --workdir $(RUN)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pyright (basic mode) on the folders [tool.pyright] names in pyproject.toml
typecheck: $(STAMP)
	$(VENV)/bin/pyright

# everything (CI): lint, types, every test including the slow end-to-end ones
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright
	$(VENV)/bin/pytest -q -n 2 --dist loadfile tests

# the edit-test loop: lint and the tests not marked slow (<= 3 min on 2 cores)
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not slow" tests

# Benchmarks compare against PyTorch (benchmarks/torch_step.py) when it is installed: `pip install torch`.
bench: $(STAMP)
	$(PY) benchmarks/mano_throughput.py
	$(PY) benchmarks/data_throughput.py
	$(PY) benchmarks/train_step.py

# On a machine with a GPU (no network needed; docs/benchmarks.md): <= 8 minutes, JSON in $$OUT if set.
bench-gpu:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
