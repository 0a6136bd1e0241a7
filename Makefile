# Quick start: `make run` (set up + the default run, about 2.5 minutes and 2 more to install), `make bench` (the
# report suite the run points to), `make test` (set up + the layer contract + every test), `make test-fast` (the
# same without the slow and the Flower deployment tests, under 2 minutes).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
FORTUNES := /usr/share/games/fortunes

.PHONY: setup run bench test test-fast lint-imports lint

setup: $(VENV)/.installed $(FORTUNES)

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $@

# The offline default corpus: Debian's fortunes (real quotes in ~40 categories).
$(FORTUNES):
	@command -v apt-get >/dev/null || { echo "install Debian's 'fortunes' package, or run with --set data.source=..."; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq fortunes

run: setup
	$(VENV)/bin/potara run

test: lint-imports
	$(PY) -m pytest

test-fast: lint-imports
	$(PY) -m pytest -m "not slow and not deploy"

# The layers (pyproject.toml, [tool.importlinter]): a module imports only from the layers below its own.
lint-imports: setup
	$(VENV)/bin/lint-imports

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

# The larger comparison: the report suite (19 methods, 3 settings, 10 seeds, 300 test examples a client; hours on 2 cores,
# resumable: run again to continue).
bench: setup
	$(VENV)/bin/potara bench --suite report --out runs/bench-report
