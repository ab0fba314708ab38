"""The HTTP API (OpenAPI) and web UI: the only door for people and for the CLI."""
