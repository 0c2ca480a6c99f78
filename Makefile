# Set-up and the main jobs. Everything downloaded is cached under .cache/ (ignored by git).
VENV    := .venv
BIN     := $(VENV)/bin
PYTHON  ?= python3
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PCVHUB_CACHE_DIR ?= $(CURDIR)/.cache

.PHONY: setup liboqs avro-java tlog-verify litewitness chromium demo test fuzz bench lint clean-data

setup: $(VENV)/.installed liboqs avro-java tlog-verify litewitness chromium

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# liboqs (C) for the archive-signature backend, built from registry sources; idempotent.
liboqs:
	bash infra/liboqs/build.sh

# The Java reference reader (Apache Avro for Java, from Maven Central) that tests/interop
# runs over records the hub wrote; cached under .cache/avro-java, a no-op when up to date.
avro-java:
	bash infra/avro-java/build.sh >/dev/null

# The Go verifier (x/mod sumdb/note + sumdb/tlog, transparency-dev/merkle, circl) that
# tests/interop runs over the ledger's checkpoints, tiles and proofs; modules and binary
# cached under .cache/go and .cache/tlog-verify, a no-op when up to date.
tlog-verify:
	bash infra/tlog-verify/build.sh >/dev/null

# torchwood's litewitness, the independent witness of tests/interop/test_litewitness.py;
# cached under .cache/go and .cache/litewitness, a no-op when up to date.
litewitness:
	bash infra/litewitness/build.sh >/dev/null

# Debian's Chromium for the dashboard's browser tests (Playwright drives it; it never
# downloads a browser of its own). Needs root or sudo, as apt does.
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium fonts-liberation fonts-dejavu-core >/dev/null; }

# The demo needs no browser: it skips the chromium step of setup.
demo: $(VENV)/.installed liboqs
	$(BIN)/pcvhub demo

test: setup
	$(BIN)/pcvhub schemas check
	$(BIN)/pytest

# The long fuzzing run: tests/fuzz with the long hypothesis profile (many more examples,
# no deadline; what it finds is kept in .cache/hypothesis and replayed first next time).
# `make test` runs the same tests with the bounded CI profile.
fuzz: $(VENV)/.installed
	PCVHUB_FUZZ=long $(BIN)/pytest tests/fuzz -m fuzz

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check pcvhub tests bench
	$(BIN)/mypy pcvhub

clean-data:
	$(BIN)/pcvhub infra down || true
	rm -rf .pcvhub
