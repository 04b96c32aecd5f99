PYTHON ?= python3
VENV := .venv
# Four test workers: much of the suite waits (sockets, subprocesses, Chromium), so 4 fit on 2 cores
# (5 min 37 s against 6 min 04 s with 3, same machine, same hour). worksteal:
# a worker that runs out takes tests queued for another, so the long crash tests do not end alone.
PYTEST_ARGS ?= -n 4 --dist worksteal
BIN := $(VENV)/bin
# Some shells set PYTHONDONTWRITEBYTECODE: then every `distbot` the tests start compiles the whole
# project again, and every test worker rewrites every test module's asserts again (collection
# 13 s instead of 6 s a worker). The caches are ignored by git.
unexport PYTHONDONTWRITEBYTECODE

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
