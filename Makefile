# Everything a fresh machine needs: `make demo` and `make test` create the venv and install first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# No model hub here (and often none in CI): fail fast instead of a ~50 s hub lookup per model.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1

STORE ?= $(CURDIR)/mlruns.db
PORT ?= 5000

.PHONY: help install demo test lint ui clean bench bench-overhead bench-serve eval-all report

help:  ## list the targets
	@grep -E '^[a-z%-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/; s/\$$\(PORT\)/$(PORT)/g' | expand -t 18

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,baselines]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import common, torch, lightning, hydra, mlflow, faiss, open_clip, transformers, peft"
	touch $@

install: $(STAMP)  ## create .venv and install the project (editable) with dev extras; idempotent

demo: install  ## the main job on the embedded default: python -m vlm.train +exp=freeze_llm
	$(PY) -m vlm.train +exp=freeze_llm

test: install  ## the whole test suite (fails on any failure, and on zero tests), two workers, a file at a time; the 25 slowest listed
	$(PY) -m pytest -n 2 --dist loadfile --durations=25

lint: install  ## ruff, and lint-imports (the import contracts in pyproject.toml: package independence, layers)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

ui: install  ## MLflow UI on 127.0.0.1:$(PORT) for STORE (default: ./mlruns.db)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath $(STORE)) --host 127.0.0.1 --port $(PORT)

report: install  ## tuning log from MLflow: make report EXP=vlm [ARGS='--sweep latest']
	$(PY) -m common.report --experiment $(or $(EXP),vlm) --out reports/$(or $(EXP),vlm)_runs $(ARGS)

eval-all: install  ## latest run of every package (training defaults first when none) -> reports/eval_all.{md,html}
	$(PY) -m common.eval_all $(ARGS)

bench: bench-vlm bench-textcls bench-retrieval bench-overhead bench-serve  ## all benchmark tables

bench-overhead: install  ## framework vs a bare torch loop on one config (textcls): per-epoch and fixed cost -> docs/bench/overhead.md
	$(PY) -m textcls.overhead

bench-serve: install  ## vlm.serve under 200 requests at once, batched vs unbatched (echo backend) -> docs/bench/vlm.md
	$(PY) -m vlm.bench_serve $(ARGS)

bench-%: install  ## one package's benchmark tables: bench-vlm, bench-textcls, bench-retrieval
	$(PY) -m $*.bench

clean:  ## remove run outputs, caches and the venv (keeps mlruns.db; `rm mlruns.db` by hand)
	rm -rf $(VENV) logs .cache .pytest_cache .ruff_cache reports
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
