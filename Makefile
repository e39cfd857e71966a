# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint install protos check-protos bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the whole suite on its embedded defaults (NATS JetStream, SQLite) under .trellis/
run: install
	$(BIN)/trellis up

## Lint, then run every test; starts its own nats-server and PostgreSQL (and a headless Chromium)
test: install lint
	scripts/ensure-postgres
	scripts/ensure-chromium
	$(BIN)/pytest -q

## ruff over the code and tests; mypy --strict over the services listed in pyproject.toml [tool.mypy] files
lint: install
	$(BIN)/ruff check services tests bench
	$(BIN)/mypy

protos: install
	$(BIN)/python scripts/gen_protos.py

bench: install
	$(BIN)/python -m bench.identity

clean:
	rm -rf $(VENV) .trellis .pytest_cache .mypy_cache .ruff_cache
