# One target for each thing a person does. CI runs `make test` (see .ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
VENV91 := $(CURDIR)/.venv-pytest91
VENV80 := $(CURDIR)/.venv-pytest80
VPY := $(VENV)/bin/python
# Caches stay inside the checkout.
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export CARGO_TARGET_DIR := $(CURDIR)/target
# Keep builds lean on small machines.
export CARGO_BUILD_JOBS ?= 2

.PHONY: all demo test test-quick test-rust test-python test-pytest91 test-pytest80 bench lint rust-lint-tools fuzz fuzz-seeds develop system-deps clean

all: develop

$(VENV)/.installed: requirements-dev.txt
	@echo "make: creating .venv and installing requirements-dev.txt"
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $@

$(VENV91)/.installed: requirements-pytest91.txt
	$(PYTHON) -m venv $(VENV91)
	$(VENV91)/bin/python -m pip install -q -r requirements-pytest91.txt
	touch $@

$(VENV80)/.installed: requirements-pytest80.txt
	$(PYTHON) -m venv $(VENV80)
	$(VENV80)/bin/python -m pip install -q -r requirements-pytest80.txt
	touch $@

## Build the extension (release) and install pytest-blackbox into .venv (editable).
develop: $(VENV)/.installed
	@echo "make: building the extension module (release; the first build takes about 2 minutes on 2 cores)"
	VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin develop --release -q -m python-bindings/Cargo.toml
	@echo "make: building the blackbox CLI (release)"
	cargo build --release -q -p blackbox-core --bin blackbox

## Chromium for the HTML report test (Debian packages; needs root, as on CI).
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
		else echo "make: chromium and chromium-driver are missing; install them (apt-get install chromium chromium-driver)"; fi; \
	fi

## A small suite of passing, failing and crashing tests under -n 2 and --forked, then its summary.
demo: develop
	bash examples/demo/run.sh $(VPY)

## Everything CI checks.
test: test-rust test-python test-pytest91 test-pytest80

test-rust:
	cargo test -p blackbox-core --release

test-python: develop system-deps
	$(VPY) -m pytest tests

## The end-to-end suite's core on pytest 9.1.x (the plugin from the same build).
test-pytest91: develop $(VENV91)/.installed
	VIRTUAL_ENV=$(VENV91) $(VENV)/bin/maturin develop --release -q -m python-bindings/Cargo.toml
	$(VENV91)/bin/python -m pytest tests -m "not chromium and not slow" -p no:cacheprovider

## The same on the lowest pytest pyproject allows (8.0.0).
test-pytest80: develop $(VENV80)/.installed
	VIRTUAL_ENV=$(VENV80) $(VENV)/bin/maturin develop --release -q -m python-bindings/Cargo.toml
	$(VENV80)/bin/python -m pytest tests -m "not chromium and not slow" -p no:cacheprovider

## Criterion benches of the core and Python peers; results in benches/results/.
bench: develop
	cargo bench -p blackbox-benches
	$(VPY) benches/python/run_all.py

## rustfmt, clippy (warnings are errors), ruff, and mypy on the shipped package (mypy.ini).
lint: $(VENV)/.installed rust-lint-tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python-bindings/python tests benches examples
	$(VENV)/bin/ruff format --check python-bindings/python tests benches examples
	$(VENV)/bin/mypy

# rustfmt and clippy are rustup components a minimal toolchain may lack.
rust-lint-tools:
	@if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then \
		rustup component add rustfmt clippy; \
	fi

## A short run of the segment-reader fuzzer (needs nightly-free cargo-fuzz; see fuzz/README).
fuzz:
	bash fuzz/run.sh 60

## The fuzz seeds (and any corpus or crash in fuzz/) through the fuzz target's checks, as a
## plain cargo test on stable: no libFuzzer, no cargo-fuzz. Built into target/, where the
## core's release dependencies already are.
fuzz-seeds:
	cargo test --release --manifest-path fuzz/Cargo.toml --no-default-features

clean:
	rm -rf target .venv .venv-pytest91 .venv-pytest80 .cache
