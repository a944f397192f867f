# Conveniences over tasks.py (which needs nothing but Python 3.11):
#   make run   = python3 tasks.py run    (set up .venv, simulate the bundled openb trace)
#   make test  = python3 tasks.py test   (set up .venv, run the whole test suite)
PYTHON ?= python3

.PHONY: run test lint clean

run:
	$(PYTHON) tasks.py run

test:
	$(PYTHON) tasks.py test

lint:
	$(PYTHON) -c "import tasks; tasks.ensure_venv()"
	.venv/bin/ruff check models scheduler plugins simulations tests benchmarks tasks.py

clean:
	rm -rf .venv out
