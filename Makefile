# The two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test smoke lint format bench fuzz soak install clean
FUZZ_EXAMPLES ?= 500
SOAK_SECONDS ?= 300

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "DMS needs Python 3.11+ (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP)

# The links the service gives out (status_url, the error report in mails, the login hint)
# name where `make run` listens, unless DMS_PUBLIC_URL is set (say, behind a proxy).
run: export DMS_PUBLIC_URL ?= http://$(HOST):$(PORT)
run: install
	$(BIN)/flask --app dms db upgrade
	$(BIN)/flask --app dms users ensure-admin
	@echo "Serving on http://$(HOST):$(PORT) (Ctrl-C stops it)"
	$(BIN)/flask --app dms serve --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest

# The embedded-PostgreSQL path, whatever DMS_TEST_DATABASE_URL says (CI runs it on every landing).
smoke: install
	env -u DMS_TEST_DATABASE_URL $(BIN)/python -m pytest -m smoke

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

bench: install
	$(BIN)/python -m bench

# schemathesis against /openapi.json on every endpoint, with many more examples than CI runs.
fuzz: install
	DMS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/fuzz -p no:cacheprovider

# Mixed load on loopback (gunicorn, two dramatiq workers, Redis), bounded to SOAK_SECONDS.
soak: install
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
