# The two commands a newcomer needs: `make run` and `make test`. Each builds .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint schema demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/agent-tasks serve --demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

schema: $(STAMP)
	$(BIN)/agent-tasks export-schema > schema/schema.graphql

demo: $(STAMP)
	$(BIN)/agent-tasks demo

bench: $(STAMP)
	$(BIN)/python -m bench.tree
	$(BIN)/python -m bench.subscribers
	$(BIN)/python -m bench.writes

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache
