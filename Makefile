# Two entry points for a fresh machine with Python 3.11:
#   make run   - create .venv, install toposched, run a simulation on the bundled cluster and trace
#   make test  - create .venv, install toposched with its dev extra, run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/toposched: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(BIN)/toposched
	$(BIN)/toposched simulate openb --pods default --policy BestFit,FGD,toposched --seeds 42 --out out/quickstart

test: $(BIN)/toposched
	$(BIN)/python -m pytest -q

lint: $(BIN)/toposched
	$(BIN)/ruff check models scheduler plugins simulations tests benchmarks

clean:
	rm -rf $(VENV) out
