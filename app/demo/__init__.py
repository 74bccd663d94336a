"""The demo, at the edge beside the command line: seed data for `make run`, the tests and the benchmarks.

- `workflow`: the demo workflow (a podcast episode part-way through production, with its history of
  events) and its loader, which `agent-tasks serve --demo` (`make run`) and `agent-tasks demo` call;
- `documents`: documents in the stored shape (`state_doc`, `synthetic_tree`, `write_documents`) for the
  demo, the tests and the benchmarks;
- `agent`: `agent-tasks demo-agent`, the demo's agents on the Python client, over HTTP.

It builds its documents with the services' own constructors and writes them through the store, so it sits
above them; nothing of the server (the lifespan, the resources, the ways in, the services, the store)
imports it: an import-linter contract in pyproject.toml keeps it out, and the command line hands the demo
to a server it starts (`app/cli.py`).
"""
