# Two entry points for a fresh Debian machine: `make demo` and `make test`.
# Every target installs what is missing first (apt packages as root, a venv, the package).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := docker.io mosquitto mosquitto-clients docker-registry busybox-static openssl
# A binary per package, to tell whether the package is installed.
APT_BINARIES := /usr/sbin/dockerd /usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/docker-registry /bin/busybox /usr/bin/openssl

.PHONY: setup system-packages venv test lint typecheck unit integration demo bench schema mutation clean

setup: system-packages venv

system-packages:
	@missing=0; for b in $(APT_BINARIES); do [ -x $$b ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "error: missing system packages ($(APT_PACKAGES)); run as root or install them" >&2; exit 1; fi; \
	  echo "installing system packages: $(APT_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Only the directories that exist: git keeps no empty directory (bench/, scripts/).
LINT_PATHS := $(wildcard src devtools tests bench scripts)

lint: venv
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports --no-cache

typecheck: venv
	$(VENV)/bin/mypy --strict src devtools

unit: venv
	$(VENV)/bin/pytest -m unit -q

integration: setup
	$(VENV)/bin/pytest -m integration -q

test: setup lint typecheck
	$(VENV)/bin/pytest -q

demo: setup
	PYTHONPATH=devtools $(PY) -m cua_dev.demo

bench: setup
	PYTHONPATH=devtools $(PY) bench/run.py

# Mutation testing of the pure core (docs/testing.md); not part of `make test`. Scope and
# tests are [tool.mutmut] in pyproject.toml. One module: make mutation MUTANTS='cua.api.envelope.*'
MUTANTS ?=
mutation: venv
	rm -rf mutants && mkdir mutants
	$(VENV)/bin/mutmut run --max-children 2 $(MUTANTS) >mutants/run.log 2>&1 \
	  || { tail -n 40 mutants/run.log; exit 1; }
	@echo "mutants not killed (mutmut show <name> prints the change):"
	@$(VENV)/bin/mutmut results | grep -v ': not checked$$' | tee mutants/survivors.txt
	@echo "not killed, by status:"; awk '{print $$NF}' mutants/survivors.txt | sort | uniq -c

schema: venv
	$(PY) -m cua.api.schema docs/schema

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache mutants
