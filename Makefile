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

.PHONY: help run test deps sync nbtest pytest clean-venv widget widget-test docs docs-screenshots notebooks lab

help:
	@echo "make run   — set up .venv and start leadchat (embedded defaults, demo.env); CALENDAR=local adds a CalDAV calendar"
	@echo "make test  — set up, check notebooks and package are in sync, run nbdev-test and pytest"
	@echo "make docs  — render the notebooks into the docs site in _docs/ (Quarto if installed, else pandoc)"
	@echo "make lab   — JupyterLab on nbs/ with the demo profile (demo.env) and its embedded database migrated and ingested"
	@echo "make notebooks [NB=nbs/X.ipynb] — re-execute the notebooks committed with outputs and save them"

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

# The <growth-chat> widget (widget/): `npm ci` only when the lockfile changed (stamp in node_modules),
# a build only when a source changed. The build fails, writing nothing, when a bundle is over its size budget.
WIDGET_STAMP := widget/node_modules/.leadchat-npm-ci
WIDGET_DIST  := widget/dist/manifest.json
WIDGET_SRC   := $(shell find widget/src widget/scripts -type f 2>/dev/null) widget/package.json widget/tsconfig.json

$(WIDGET_STAMP): widget/package-lock.json widget/package.json
	@command -v npm >/dev/null || { echo "!! npm (Node.js >= 20.19) is needed to build the chat widget" >&2; exit 1; }
	@echo "==> [widget] npm ci (widget/package-lock.json)"
	@cd widget && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(WIDGET_DIST): $(WIDGET_STAMP) $(WIDGET_SRC)
	@echo "==> [widget] build: chat.js (launcher) and the chat panel, with their size budgets"
	@cd widget && npm run --silent build

widget: $(WIDGET_DIST)

widget-test: $(WIDGET_STAMP)
	@echo "==> [test] widget unit tests (vitest)"
	@cd widget && npm test --silent

CONSOLE_PORT ?= 8501
# `make run CALENDAR=local` also starts a local CalDAV server (Radicale, tools/local_caldav.py) and books meetings
# into it through calendar.example.yaml: hot leads in business hours are offered three slots in the chat.
CALENDAR ?=
CALDAV_PORT ?= 5232
# The ops console (Streamlit) runs beside the API on the same settings and embedded database; it stops with the API.
run: $(STAMP) widget
	@echo "==> [run] checking the demo configuration"
	@$(BIN)/leadchat check --env-file demo.env
	@echo "==> [run] starting leadchat: embedded PostgreSQL in .leadchat/, migrations, knowledge ingest, chat API"
	@echo "==> [run] ops console (staff only): http://127.0.0.1:$(CONSOLE_PORT)"
	@echo "==> [run]   first staff user: $(BIN)/leadchat staff add USERNAME --env-file demo.env  (asks for the password)"
# Ctrl-C (INT) or TERM ends the recipe with 0; the EXIT trap stops the background services (under -e a kill of
# one that the Ctrl-C already stopped must not fail: it was the "Error 1"). A real failure keeps its status.
	@pids=""; trap 'kill $$pids 2>/dev/null || true; wait $$pids 2>/dev/null || true' EXIT; trap 'exit 0' INT TERM; \
	  if [ "$(CALENDAR)" = local ]; then \
	    $(BIN)/python tools/local_caldav.py --port $(CALDAV_PORT) --dir .leadchat/radicale & pids="$$pids $$!"; \
	    export LEADCHAT_CALENDAR_CONFIG=calendar.example.yaml; \
	    echo "==> [run] booking into the local CalDAV calendars of calendar.example.yaml (ana, ben)"; \
	  elif [ -n "$(CALENDAR)" ]; then echo "!! CALENDAR must be 'local' (or unset)" >&2; exit 2; fi; \
	  LEADCHAT_ENV_FILE=demo.env $(BIN)/streamlit run console/app.py --server.address 127.0.0.1 \
	    --server.port $(CONSOLE_PORT) --server.headless true --browser.gatherUsageStats false \
	    --server.fileWatcherType none --client.toolbarMode viewer & pids="$$pids $$!"; \
	  $(BIN)/leadchat serve --env-file demo.env --host 127.0.0.1 --port 8000

# nbdev-clean + nbdev-export + README must leave the tree exactly as it was.
sync: $(STAMP)
	@tools/check-sync.sh $(BIN)

# Notebooks committed with outputs (tools/nbedit.py with-outputs) are run by tools/nbedit.py instead of nbdev-test: the
# same execution (cwd nbs/, --flags pg), and every output must be what is committed, so a stale or non-deterministic
# output fails the test. `make notebooks` refreshes them (NB=nbs/X.ipynb: that one, giving it outputs the first time).
nbtest: $(STAMP)
	@echo "==> [test] nbdev-test (notebooks are the source and their tests)"
	@skip=$$($(BIN)/python tools/nbedit.py with-outputs --skip-re); \
	  $(BIN)/nbdev-test --n-workers 2 --flags pg --skip-file-re "$$skip"
	@echo "==> [test] notebooks committed with outputs: re-executed, every output as committed"
	@$(BIN)/python tools/nbedit.py run --check --workers 2

NB ?=
notebooks: $(STAMP)
	@echo "==> [notebooks] re-executing $(or $(NB),the notebooks committed with outputs) and saving the outputs"
	@$(BIN)/python tools/nbedit.py run --workers 2 $(NB)

# Then the storage, API and hand-off suites again against a PostgreSQL started as a separate service
# (tests/external_pg.py: pg_ctl, a loopback TCP port, password authentication), reached through DATABASE_URL.
EXTERNAL_PG_SUITES := tests/test_db.py tests/test_api.py tests/test_handoff.py tests/test_handoff_live.py

pytest: $(STAMP) widget
	@echo "==> [test] pytest tests/"
	@$(BIN)/pytest tests/ -q
	@echo "==> [test] storage, API and hand-off suites on an external PostgreSQL (TCP, password authentication)"
	@LEADCHAT_TEST_PG=external $(BIN)/pytest $(EXTERNAL_PG_SUITES) -q

test: sync nbtest widget-test pytest
	@echo "==> [test] all green"

# The docs site in _docs/: nbdev's processing of the notebooks (_proc/), then Quarto as nbdev-docs does when `quarto`
# is on the PATH, else pandoc (Debian package; tools/make_docs.py: sidebar, module index, outputs, API reference).
docs: $(STAMP)
	@tools/bootstrap-system.sh
	@echo "==> [docs] rendering the notebooks into _docs/"
	@$(BIN)/python tools/make_docs.py --out _docs --proc _proc
	@echo "==> [docs] serve it: python -m http.server -d _docs 8080   (then open http://127.0.0.1:8080)"

# The README's screenshots of the site (index, state, calibrate with its histogram; Chromium, 1280x800) into nbs/images/.
docs-screenshots: $(STAMP)
	@tools/bootstrap-system.sh
	@$(BIN)/python tools/make_docs.py --out _docs --proc _proc --screenshots nbs/images

# JupyterLab on nbs/ with the demo profile: demo.env, its data home .leadchat/ (absolute: the kernels run in nbs/),
# the embedded PostgreSQL migrated and the knowledge base ingested, so `await open_database(get_settings())` works.
LAB_PORT ?= 8888
lab: $(STAMP)
	@$(BIN)/leadchat check --env-file demo.env
	@echo "==> [lab] embedded PostgreSQL in .leadchat/: migrations and knowledge ingest (only new or changed text)"
	@LEADCHAT_HOME=$(CURDIR)/.leadchat $(BIN)/leadchat db migrate --env-file demo.env
	@LEADCHAT_HOME=$(CURDIR)/.leadchat $(BIN)/leadchat ingest --env-file demo.env
	@echo "==> [lab] JupyterLab on nbs/ (LEADCHAT_ENV_FILE=demo.env): http://127.0.0.1:$(LAB_PORT)/lab (the link with its token is below)"
	@LEADCHAT_ENV_FILE=$(CURDIR)/demo.env LEADCHAT_HOME=$(CURDIR)/.leadchat \
	  $(BIN)/jupyter lab --notebook-dir nbs --ServerApp.ip 127.0.0.1 --ServerApp.port $(LAB_PORT) \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

clean-venv:
	rm -rf $(VENV)
