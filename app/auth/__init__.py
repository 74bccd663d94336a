"""Authentication: API keys (`keys`) and the middleware (credentials → Principal)."""
