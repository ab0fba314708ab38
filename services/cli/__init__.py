"""The ``tether`` command: talks to the HTTP API like kubectl talks to an API server."""
