"""Everything that crosses the bus or the HTTP API: messages, subjects, errors.

This package imports nothing else of ours (checked by import-linter).
"""
