# Two entry points for a fresh Debian machine: `make demo` and `make test`.
# Every target installs what is missing first (apt packages as root, a venv, the package).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := docker.io mosquitto mosquitto-clients docker-registry busybox-static openssl
# A binary per package, to tell whether the package is installed.
APT_BINARIES := /usr/sbin/dockerd /usr/sbin/mosquitto /usr/bin/mosquitto_pub /usr/bin/docker-registry /bin/busybox /usr/bin/openssl

.PHONY: setup system-packages venv test lint typecheck unit integration demo bench schema mutation clean install uninstall

# `make install` (as root): the agent in its own venv under PREFIX, `cua` on the PATH, the
# systemd unit (ExecStart = where it installed) and an example config (never overwritten).
# DESTDIR installs into a staging root (packaging, CI); that venv runs only where it was made.
PREFIX ?= /opt/cua
BINDIR ?= /usr/local/bin
SYSCONFDIR ?= /etc/cua
UNITDIR ?= /etc/systemd/system
DESTDIR ?=
WHEEL_DIR := build/wheel

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
	$(VENV)/bin/mypy --strict src devtools bench

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache mutants build

install:
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then echo "error: make install needs root (or DESTDIR=<staging root>)" >&2; exit 1; fi
	@[ -x $(DESTDIR)$(PREFIX)/bin/python ] || { echo "$(PYTHON) -m venv $(DESTDIR)$(PREFIX)"; $(PYTHON) -m venv $(DESTDIR)$(PREFIX); }
	rm -rf $(WHEEL_DIR)
	@# The wheel: built by the development venv when there is one (fast), else by pip.
	if [ -x $(PY) ] && $(PY) -c 'import hatchling' 2>/dev/null; then \
	  $(PY) -m pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_DIR) .; \
	else \
	  $(DESTDIR)$(PREFIX)/bin/python -m pip wheel -q --no-deps -w $(WHEEL_DIR) .; \
	fi
	$(DESTDIR)$(PREFIX)/bin/python -m pip install -q $(WHEEL_DIR)/*.whl
	$(DESTDIR)$(PREFIX)/bin/python -m pip install -q --force-reinstall --no-deps $(WHEEL_DIR)/*.whl
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)
	ln -sfn $(PREFIX)/bin/cua $(DESTDIR)$(BINDIR)/cua
	sed -e 's|^ExecStart=/opt/cua/bin/cua |ExecStart=$(PREFIX)/bin/cua |' \
	    -e 's|/etc/cua/config.json|$(SYSCONFDIR)/config.json|g' \
	    packaging/cua.service > $(DESTDIR)$(UNITDIR)/cua.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/cua.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/config.json ]; then \
	  echo "kept the existing $(SYSCONFDIR)/config.json"; \
	else \
	  install -m 0600 packaging/config.json $(DESTDIR)$(SYSCONFDIR)/config.json; \
	  echo "installed an example $(SYSCONFDIR)/config.json: edit it, then"; \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed cua in $(PREFIX); start it with: systemctl enable --now cua"

uninstall:
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" != 0 ]; then echo "error: make uninstall needs root (or DESTDIR=<staging root>)" >&2; exit 1; fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl disable --now cua 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(UNITDIR)/cua.service
	@if [ "$$(readlink $(DESTDIR)$(BINDIR)/cua)" = "$(PREFIX)/bin/cua" ]; then rm -f $(DESTDIR)$(BINDIR)/cua; fi
	rm -rf $(DESTDIR)$(PREFIX)
	@if cmp -s packaging/config.json $(DESTDIR)$(SYSCONFDIR)/config.json; then \
	  rm -f $(DESTDIR)$(SYSCONFDIR)/config.json; rmdir $(DESTDIR)$(SYSCONFDIR) 2>/dev/null || true; \
	elif [ -e $(DESTDIR)$(SYSCONFDIR)/config.json ]; then \
	  echo "kept $(SYSCONFDIR)/config.json (changed since install; remove it by hand)"; \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "uninstalled cua (the state directory /var/lib/cua, if any, is left)"
