"""The one error ``tether up`` reports to its user: its own modules raise it, the CLI prints it."""

from __future__ import annotations


class PlatformError(Exception):
    """``tether up`` could not start."""
