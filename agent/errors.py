"""The agent's own error kinds.

A ``PermanentError`` means retrying cannot help (a revoked cluster, a bad or
spent connect token, a duplicate cluster): the agent stops with its message and
a non-zero exit.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class PermanentError(AgentError):
    """Retrying cannot help: stop the agent and tell the operator why."""


class DriverError(AgentError):
    """The driver cannot reach or model its cluster, or refused to apply something.

    ``str(error)`` is the message for people; ``reason`` a short CamelCase word
    for machines (it becomes ``CommandResult.reason``). A ``transient`` error
    (the cluster's API is unreachable) is worth retrying the same command
    later; any other one is a permanent failure of that command.
    """

    def __init__(self, message: str, *, reason: str = "DriverError", transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.transient = transient


class ClusterUnreachable(DriverError):
    """The cluster's API cannot be reached right now: a transient DriverError."""

    def __init__(self, message: str, *, reason: str = "ClusterUnreachable") -> None:
        super().__init__(message, reason=reason, transient=True)
