# leadchat — the two README commands:
#   make run    set up .venv and start leadchat on its embedded defaults (demo.env)
#   make test   set up everything the tests need, check notebooks ⇄ package sync, run all tests
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.leadchat-deps
PYTHON  ?= $(shell command -v python3.11 || command -v python3)

.PHONY: help run test deps sync nbtest pytest clean-venv

help:
	@echo "make run   — set up .venv and start leadchat (embedded defaults, demo.env)"
	@echo "make test  — set up, check notebooks and package are in sync, run nbdev-test and pytest"

# Python environment: torch==2.13.0 (local CPU build) goes in first, so that nothing
# that depends on it can pull a CUDA build; then leadchat with its pinned deps.
$(STAMP): pyproject.toml
	@tools/bootstrap-system.sh
	@echo "==> [setup] virtualenv in $(VENV) (python: $(PYTHON))"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> [setup] torch==2.13.0 (CPU build) first"
	@$(BIN)/pip install --quiet torch==2.13.0
	@echo "==> [setup] leadchat and its pinned dependencies (pip install -e .[dev])"
	@$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@
	@echo "==> [setup] done"

deps: $(STAMP)

run: $(STAMP)
	@echo "==> [run] checking the demo configuration"
	@$(BIN)/leadchat check --env-file demo.env
	@echo "==> [run] starting leadchat: embedded PostgreSQL in .leadchat/, migrations, knowledge ingest, chat API"
	@$(BIN)/leadchat serve --env-file demo.env --host 127.0.0.1 --port 8000

# nbdev-clean + nbdev-export + README must leave the tree exactly as it was.
sync: $(STAMP)
	@tools/check-sync.sh $(BIN)

nbtest: $(STAMP)
	@echo "==> [test] nbdev-test (notebooks are the source and their tests)"
	@$(BIN)/nbdev-test --n-workers 2 --flags pg

pytest: $(STAMP)
	@echo "==> [test] pytest tests/"
	@$(BIN)/pytest tests/ -q

test: sync nbtest pytest
	@echo "==> [test] all green"

clean-venv:
	rm -rf $(VENV)
