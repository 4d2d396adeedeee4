PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: setup serve test data train evaluate clean

# Idempotent: re-running only installs what changed in pyproject.toml.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

serve: setup
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m app

test: setup
	$(BIN)/python -m pytest -q

data: setup
	$(BIN)/python -m model.data

clean:
	rm -rf $(VENV) .pytest_cache
