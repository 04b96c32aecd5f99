PYTHON ?= python3
VENV := .venv
# Three test workers: most of the suite waits (sockets, subprocesses), so 3 fit on 2 cores. worksteal:
# a worker that runs out takes tests queued for another, so the long crash tests do not end alone.
PYTEST_ARGS ?= -n 3 --dist worksteal
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/distbot serve --config config.toml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	$(BIN)/python bench/webhook.py

clean:
	rm -rf $(VENV) data/*.db data/*.db-wal data/*.db-shm
