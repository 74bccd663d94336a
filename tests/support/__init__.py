"""What more than one test module uses: real server processes (servers), one poller (polling), GraphQL
over HTTP and WebSocket against a server process (graphql), the REST checks (rest), the browser pages'
checks (web) and the app in-process with its lifespan (app). Test modules import from here or get
fixtures from conftest.py, never from each other (tests/test_layout.py checks it)."""
