# envoykit: `make up` runs the local mesh, `make test` runs lint, types and tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast lint typecheck pytest up demo bench clean wasm

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	@# zig (from the ziglang wheel) compiles its wasi-libc on first use: do it now, building the demo filter
	$(BIN)/envoykit wasm build add_header >/dev/null || echo "warning: the demo Wasm filter did not build (see envoykit wasm build add_header)"
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check envoykit tests bench examples
	$(BIN)/ruff format --check envoykit tests bench examples
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# Build the example filters first: a cold zig cache compiles wasi-libc (~1 min), which must not
# count against the first wasm test's timeout.
pytest: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/envoykit wasm build > /dev/null
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The tests that start no Envoy, Redis or server process (markers in tests/conftest.py), in a minute or two.
test-fast: venv
	PATH=$(CURDIR)/$(BIN):$$PATH ENVOYKIT_TEST_FAST=1 $(BIN)/pytest -m "not envoy and not redis and not server and not docker" $(PYTEST_ARGS)

up: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/envoykit up examples/mesh.yaml

demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/envoykit demo

bench: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/run.py

wasm: venv
	$(BIN)/envoykit wasm build

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
