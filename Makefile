# dicom-gw: the entry points. `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE := $(CURDIR)/var
export DEBIAN_FRONTEND := noninteractive

# Debian packages the gateway and its tests need (server binaries, DICOM peers).
SYSTEM_PACKAGES := postgresql postgresql-contrib dcmtk openssl nftables iproute2

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort | column -ts $$'\t'

.PHONY: system-deps
system-deps: ## install the Debian packages the gateway and tests need (idempotent)
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# Debian starts its own cluster on install; the gateway and tests run their own, private ones.

$(VENV)/.installed: app/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e 'app[dev]'
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## the Python virtualenv with the app and its dev tools

$(STATE)/gateway.toml: docs/examples/dev.toml
	mkdir -p $(STATE)
	sed -e 's#@STATE@#$(STATE)#g' -e 's#@ROOT@#$(CURDIR)#g' $< > $@

.PHONY: run
run: system-deps venv frontend-build $(STATE)/gateway.toml ## the gateway here: DICOM 11112, UI 8080
	$(VENV)/bin/dicom-gw --config $(STATE)/gateway.toml run

.PHONY: lint-python
lint-python: venv ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check app/src tests
	$(VENV)/bin/ruff format --check app/src tests
	$(VENV)/bin/mypy --config-file app/pyproject.toml app/src/dicom_gw

.PHONY: test-python
test-python: system-deps venv ## unit and integration tests (real PostgreSQL, real dcmtk peers)
	$(PY) -m pytest

.PHONY: test-reliability
test-reliability: system-deps venv ## faults, bad input, flood, TLS: the fast set (tables in tests/reliability/results)
	$(PY) -m pytest tests/reliability -p no:cacheprovider

.PHONY: soak
soak: system-deps venv ## the long reliability cases (10-minute load, 15,000 fuzz cases, 30 s database outage)
	$(PY) -m pytest tests/reliability -m soak -p no:cacheprovider

# Debian's Chromium for the browser tests (Playwright drives it; nothing is downloaded).
BROWSER_PACKAGES := chromium fonts-liberation

.PHONY: browser-deps
browser-deps:
	@missing=""; for p in $(BROWSER_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

.PHONY: test-e2e
test-e2e: system-deps venv browser-deps frontend-build ## the web UI in Chromium against the real stack
	$(PY) -m pytest tests/e2e -p no:cacheprovider

-include mk/*.mk

.PHONY: lint
lint: lint-python $(if $(wildcard mk/ansible.mk),lint-ansible) ## every linter

# What CI runs (.ci/run): the suite below while the appliance image builds beside it (Packer
# under TCG, in its own session), then the image booted and checked (make image-test). The
# recipe is test-beside-image in mk/image.mk.
.PHONY: test
test: test-beside-image ## everything CI runs: test-suite with the VM image built beside it, then image-test

.PHONY: test-suite
test-suite: lint test-python test-reliability frontend-test test-e2e molecule-all ## the suite without the VM image, the Molecule scenarios last
