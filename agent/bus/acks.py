"""The acknowledgement that rides on the next pull.

An ack on its own was a request (the ack, the server's confirmation, nats-py's request machinery) and then a
pull of its own, for each of the two records a command brings (the command, then lifecycle's write of its
result on the same key): four messages per command for nats-server and the agent that one ``+NXT`` each does
in two. Unconfirmed (the pull ended by a reconnect, or lost) it goes with the next pull again, for up to
``ACK_GIVE_UP`` seconds, as the request was asked again (a fetch refused with 503 may be JetStream starting
or a leader election, not a consumer gone for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.msg import Msg
from nats.errors import Error as NatsError

from agent.bus.connection import Connection
from agent.bus.pull import ACK

logger = logging.getLogger(__name__)

ACK_GIVE_UP = 15.0
"""Seconds an unconfirmed ack is sent again with each pull (a reconnect, a JetStream restart or leader change
answering 503 meanwhile); then it is left to the server's redelivery, which the revision check makes harmless."""


class RidingAck:
    """A delivery acknowledged (``Delivery.ack``) and not yet confirmed: the next pull carries its ack."""

    def __init__(self) -> None:
        self._msg: Msg | None = None
        self._since = 0.0

    def hold(self, msg: Msg) -> None:
        """``msg`` is acknowledged: its ack goes with the next pull."""
        self._msg, self._since = msg, asyncio.get_running_loop().time()

    def to_send(self) -> Msg | None:
        """The ack the next pull carries, if any (none once ``ACK_GIVE_UP`` has passed)."""
        if self._msg is not None and asyncio.get_running_loop().time() - self._since > ACK_GIVE_UP:
            logger.info("an acknowledgement was not confirmed within %gs; left to the redelivery", ACK_GIVE_UP)
            self._msg = None
        return self._msg

    def confirmed(self) -> None:
        """A pull carrying it was answered: the server has it."""
        self._msg = None

    async def send_alone(self, conn: Connection) -> None:
        """No next pull (the queue is closing): sent alone, or the command would wait for the ack wait after the
        next start before anything else is delivered. The connection's drain takes it out."""
        msg, self._msg = self._msg, None
        if msg is not None and conn.is_connected:
            with contextlib.suppress(NatsError):
                await conn.client.publish(msg.reply, ACK)
