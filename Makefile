# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv on first use;
# `make test` also builds llama.cpp's llama-server once (cached in ~/.cache/loadbench).
# The first interpreter that runs and is 3.11+ (pyenv shims can exist without working).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11 python; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
ifeq ($(OS),Windows_NT)
  BIN := $(VENV)/Scripts
else
  BIN := $(VENV)/bin
endif
PY := $(BIN)/python
STAMP := $(VENV)/.installed
SCENARIO ?= scenarios/demo.toml

.PHONY: demo test test-fast test-all bench lint clean sweep report gate

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "loadbench needs Python 3.11 or newer: set PYTHON=/path/to/python3.11"; exit 2; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,plot,fast,ray,workload]'
	@touch $(STAMP)

## demo: against the built-in simulator, a concurrency sweep and a model comparison (the Foundry
## Local workshop's three models, one broken, one missing), each with results/ and a report
demo: $(STAMP)
	$(BIN)/loadbench run scenarios/demo.toml --report-dir results/demo-report
	$(BIN)/loadbench run scenarios/foundry-local-sim.toml --report-dir results/models-report

## test: every test CI runs: the default suite (real sockets against the simulator), then the
## real-engine tier against llama.cpp's llama-server (built once, 6-12 min, then cached)
test: test-fast
	@if [ "$$(uname -s)" = Linux ] && [ "$$(uname -m)" = x86_64 ]; then \
		$(MAKE) --no-print-directory test-real; \
	else \
		echo "test: skipping the real-engine tier (its llama-server build is for Linux x86-64)"; \
	fi
	@if why="$$(bash scripts/foundry_local.sh supported)"; then \
		$(MAKE) --no-print-directory test-foundry; \
	else \
		echo "test: skipping the Foundry Local tier ($$why)"; \
	fi

## test-fast: the default suite alone, about 2 minutes on 2 cores
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not real and not foundry"

## test-all: every tier that runs without a real engine, slow tests included
test-all: $(STAMP)
	$(PY) -m pytest -q -m "not real"

## bench: client overhead, timing error, start-up and https, in rounds (~10 min; BENCH_ARGS=--quick ~2)
bench: $(STAMP)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

## sweep: run any scenario, a [load] search too (make sweep SCENARIO=scenarios/search.toml
## REPORT_DIR=results/search-report); OUTPUT= names the result file, ARGS= adds options
sweep: $(STAMP)
	$(BIN)/loadbench run $(SCENARIO) $(if $(OUTPUT),-o $(OUTPUT)) $(if $(REPORT_DIR),--report-dir $(REPORT_DIR)) $(ARGS)

## report: Markdown report and plots of result files (make report RESULT="results/a.json results/b.json")
report: $(STAMP)
	@test -n "$(RESULT)" || { echo "usage: make report RESULT=results/<file>.json [REPORT_DIR=...]"; exit 2; }
	$(BIN)/loadbench report $(RESULT) -o $(or $(REPORT_DIR),results/report)/benchmark_report.md --plot $(or $(REPORT_DIR),results/report)

## gate: fail (exit 1) when CANDIDATE regressed against BASELINE beyond noise and MAX_REGRESSION
gate: $(STAMP)
	@test -n "$(BASELINE)" -a -n "$(CANDIDATE)" || { echo "usage: make gate BASELINE=a.json CANDIDATE=b.json [MAX_REGRESSION=10%]"; exit 2; }
	$(BIN)/loadbench compare $(BASELINE) $(CANDIDATE) --max-regression $(or $(MAX_REGRESSION),10%)

## lint: ruff and mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check loadbench tests benchmarks
	$(BIN)/ruff format --check loadbench tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info build dist

.PHONY: real-server real-server-stop test-real

## real-server: build llama.cpp's llama-server once (6-12 min), start it on 127.0.0.1:18090 (PORT=, SLOTS=)
real-server: $(STAMP)
	bash scripts/llama_server.sh build && bash scripts/llama_server.sh start $(if $(PORT),--port $(PORT)) $(if $(SLOTS),--slots $(SLOTS))

## real-server-stop: stop the server that real-server started
real-server-stop:
	bash scripts/llama_server.sh stop

## test-real: the integration tier against a real llama-server (builds it first if needed)
test-real: $(STAMP)
	bash scripts/llama_server.sh build
	LOADBENCH_REAL_REQUIRED=1 $(PY) -m pytest -q -m real tests/test_real.py tests/test_real_delivery.py

.PHONY: foundry-local foundry-local-stop test-foundry

## foundry-local: install the real Foundry Local runtime once (~350 MB venv), serve a tiny model on 127.0.0.1 (PORT=)
foundry-local:
	bash scripts/foundry_local.sh install && bash scripts/foundry_local.sh start $(if $(PORT),--port $(PORT))

## foundry-local-stop: stop the runtime that foundry-local started
foundry-local-stop:
	bash scripts/foundry_local.sh stop

## test-foundry: the tier against the real Foundry Local runtime (installs it first if needed),
## on a runtime of its own beside any that foundry-local started
test-foundry: $(STAMP)
	bash scripts/foundry_local.sh install
	@run="$$(mktemp -d)"; export FOUNDRY_LOCAL_RUN_DIR="$$run"; \
	bash scripts/foundry_local.sh start >/dev/null || exit 1; \
	LOADBENCH_FOUNDRY_REQUIRED=1 $(PY) -m pytest -q -m foundry tests/test_foundry_real.py; rc=$$?; \
	bash scripts/foundry_local.sh stop; rm -rf "$$run"; exit $$rc
