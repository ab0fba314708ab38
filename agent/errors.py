"""The agent's own error kinds.

A ``PermanentError`` means retrying cannot help (a revoked cluster, a bad or
spent connect token, a duplicate cluster): the agent stops with its message and
a non-zero exit. A ``RetryableError`` is worth another try after a backoff.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class PermanentError(AgentError):
    """Retrying cannot help: stop the agent and tell the operator why."""


class RetryableError(AgentError):
    """A transient failure; the same step may succeed after a backoff."""


class DriverError(AgentError):
    """The driver cannot reach or model its cluster."""
