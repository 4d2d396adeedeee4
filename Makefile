PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 0.0.0.0
PORT ?= 8000

.PHONY: setup serve test lint data clean peers

# Idempotent: re-running only installs what changed in pyproject.toml.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	@$(BIN)/python -m model.engine >/dev/null 2>&1 || echo "model/engine/engine.c not built (no C compiler or no AVX2): PyTorch alone will run the models"
	touch $@

setup: $(VENV)/.installed

serve: setup
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m app

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

data: setup
	$(BIN)/python -m model.training.data

clean:
	rm -rf $(VENV) .pytest_cache

# Optional peers for bench.quality / bench.engine / bench.serve_peers; `make test` never needs them.
peers: setup
	apt-get update && apt-get install -y apertium apertium-eng-spa apertium-apy
	$(BIN)/pip install --quiet ctranslate2 matplotlib
