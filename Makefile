# Set-up and the main jobs. Everything downloaded is cached under .cache/ (ignored by git).
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PCVHUB_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: setup demo test bench lint clean-data

setup: $(VENV)/.installed liboqs

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# liboqs (C) for the archive-signature backend, built from registry sources; idempotent.
liboqs:
	bash infra/liboqs/build.sh

demo: setup
	$(BIN)/pcvhub demo

test: setup
	$(BIN)/pcvhub schemas check
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check pcvhub tests bench
	$(BIN)/mypy pcvhub

clean-data:
	$(BIN)/pcvhub infra down || true
	rm -rf .pcvhub
