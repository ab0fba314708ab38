"""Scale benchmark: ``python -m tests.bench [--agents N] [--json out.json]`` (``make bench``)."""
