# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
FLASK  := $(BIN)/flask --app wsgi
PORT   ?= 5000
WORKERS ?= 2

.PHONY: run test serve-prod migrate keys bootstrap lint typecheck format clean lock bench

# Installs the exact, hash-checked versions in requirements-dev.lock (`make lock` remakes it).
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check  # a dependency added to pyproject.toml but not locked fails here
	touch $@

.venv: $(VENV)/.installed

migrate: .venv
	$(FLASK) db upgrade

keys: migrate
	$(FLASK) keys init

bootstrap: keys
	$(FLASK) admin bootstrap

# `flask dev serve` makes the first admin itself and shows its secret once, in
# the box of URLs it prints after the banner; PORT also moves the default ISSUER.
run: keys
	PORT=$(PORT) $(FLASK) dev serve

# serve.py checks the port, runs `db upgrade` and `keys init` itself and logs
# JSON; granian (chosen by `make bench`); gunicorn.conf.py stays usable.
serve-prod: .venv
	PORT=$(PORT) WORKERS=$(WORKERS) $(BIN)/python serve.py

# Loopback load on the production server + the oidc-provider peer; not part of `make test`.
# Knobs: BENCH_DURATION, BENCH_CLIENTS, BENCH_ALGS, BENCH_SERVERS, ... (see bench/run.py).
bench: .venv
	$(BIN)/python -m bench.run

test: .venv
	$(BIN)/pytest -q

lint: .venv
	$(BIN)/ruff check app tests migrations bench
	$(BIN)/ruff format --check app tests migrations bench
	$(BIN)/lint-imports  # layers and no import cycles (.importlinter)
	$(MAKE) --no-print-directory typecheck

# mypy over app/ ([tool.mypy] in pyproject.toml).
typecheck: .venv
	$(BIN)/mypy

format: .venv
	$(BIN)/ruff format app tests migrations bench
	$(BIN)/ruff check --fix app tests migrations bench

LOCK_FLAGS := --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
lock: .venv
	$(BIN)/pip-compile $(LOCK_FLAGS) -o requirements.lock pyproject.toml
	$(BIN)/pip-compile $(LOCK_FLAGS) --extra dev -o requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
