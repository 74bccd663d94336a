"""What more than one test module uses: real server processes (servers), one poller (polling), GraphQL
over HTTP and WebSocket against a server process (graphql), the REST checks (rest), the browser pages'
checks (web), the app in-process with its lifespan (app, inprocess), a WebSocket GraphQL client (wsclient),
a three-node replica set (replset), a TCP proxy that drops connections (dropping_proxy), lifecycle helpers
(lifecycle_helpers) and the crash test's worker process (crash_worker). Test modules import from here or
get fixtures from conftest.py, never from each other; the top of tests/ holds only conftest.py and test
modules (tests/test_layout.py checks both)."""
