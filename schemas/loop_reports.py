"""The event loop's reports of errors nobody retrieved, without the noise of cancellations.

nats-py's ``drain()`` gathers one task per subscription. When a drain is cut short (the server went away
mid-drain, or the close's deadline passed), that gathering future ends cancelled and nothing of nats-py's
retrieves it, so asyncio's default handler logs "_GatheringFuture exception was never retrieved" at ERROR,
with a traceback, in every service and agent stopped beside a stopping NATS (nats-io/nats.py#469). A
cancellation nobody looked at is not an error: such reports go to DEBUG. Every other report (an exception
of any other kind nobody retrieved, a callback that raised) keeps asyncio's default handling.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)


def report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: see the module's docstring."""
    if isinstance(context.get("exception"), asyncio.CancelledError) and "never retrieved" in str(
        context.get("message", "")
    ):
        logger.debug("%s (a cancellation)", context.get("message"))
        return
    loop.default_exception_handler(context)


def quiet_cancellations(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """``loop``, reporting unretrieved cancellations at DEBUG only."""
    loop.set_exception_handler(report)
    return loop
