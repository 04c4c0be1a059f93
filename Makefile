# Routine commands. `make test` and `make demo` set up the virtualenv first (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch from this machine's local disk; on a GPU host install your CUDA torch first instead.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test demo lint bench-gpu clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test,postgres]"
	touch $@

test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider

# the service on localhost with the demo flag search queued: open the printed URL; Ctrl-C stops everything
demo: setup
	$(BIN)/tuner demo --serve

lint: setup
	$(BIN)/pip install -q ruff==0.17.6 mypy && $(BIN)/ruff check tuner tests && $(BIN)/mypy tuner

clean:
	rm -rf $(VENV) build *.egg-info
