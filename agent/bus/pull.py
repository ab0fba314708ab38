"""One pull request at a time on a durable pull consumer, each answered on its own reply subject.

nats-py's ``fetch`` made two tasks, a ``uuid4`` and a ``wait_for`` per pull and read its answers from one
shared inbox; an idle pull expiring every 20 s cost a bare nats-py connection 39 us of CPU per second (its
PINGs 21, a heartbeat every 5 s 51) and nats-server 29, and it took every 409 (the consumer's leader changed,
the server shut down, the consumer was deleted) as a timeout to wait out on a pull that would never be
answered. Here a pull is a publish and a future: its answer (a message, or a status: 408 expired, 409 over,
503 no consumer) ends it at once, and an answer to an earlier pull (one asked before a reconnect) is never
lost nor taken for the current one's: a message is the consumer's next whichever pull it answers (kept when
no pull waits), a status ends only its own pull.

A pull may also acknowledge the message handled before it (``next(acking=...)``): one ``+NXT`` on that
message's ack subject is the acknowledgement and the pull request at once (nats-server processes the ack,
then the request). Whatever answers that pull, a message or a status, comes after the ack was processed, so
the answer confirms it (``answered``); a pull that ended unanswered leaves it unconfirmed for the caller to
send again (an ack of a message already acknowledged changes nothing, and its pull is still served).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

STATUS = "Status"
DESCRIPTION = "Description"
EXPIRED = ("404", "408")
"""No message within the pull's expiry (404 only answers a pull that does not wait)."""
OVER = "409"
"""The pull will not be answered (leader changed, server shut down, too many pulls waiting); 'Consumer
Deleted' means the consumer is gone."""
NO_CONSUMER = "503"
"""No responders: the consumer (or its stream) does not exist."""
OVER_PAUSE = (0.05, 0.25)
"""Seconds (at random in this range) before a pull the server ended is asked again."""
GRACE = 2.0
"""Seconds a pull is waited for after its expiry before it is taken as lost."""
ACK = b"+ACK"
ACK_NEXT = b"+NXT "
"""An acknowledgement followed by a pull request (its JSON) on the acknowledged message's ack subject."""


class PullRefused(Exception):
    """The consumer is gone (deleted, or no responders): look it up and bind again."""


class Puller:
    """Pulls one message at a time from ``stream``'s durable ``consumer`` for ``next()``."""

    def __init__(self, nc: Client, stream: str, consumer: str) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._prefix = nc.new_inbox()
        self._tokens = itertools.count(1)
        self._token = ""
        self._waiter: asyncio.Future[Msg | None] | None = None
        self._kept: deque[Msg] = deque(maxlen=8)
        self._sub: Subscription | None = None
        self.answered = False
        """Whether the consumer answered the last pull (a message, or a status other than its absence): an ack the
        pull carried was processed."""

    async def open(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_answer)

    async def _on_answer(self, msg: Msg) -> None:
        status = (msg.headers or {}).get(STATUS)
        waiter = self._waiter
        if waiter is None or waiter.done():
            if status is None:
                self._kept.append(msg)  # delivered for a pull that ended meanwhile: the next pull's
            return
        # A message is this consumer's next, whichever pull it answers; a status ends only its own pull.
        if status is None or msg.subject[len(self._prefix) + 1 :] == self._token:
            waiter.set_result(msg)

    async def next(self, expires: float, acking: Msg | None = None) -> Msg | None:
        """The next message; None when the pull expired or was ended (a status, ``end()``); PullRefused when
        the consumer is gone. ``acking``: a message this pull acknowledges (``+NXT``); ``answered`` says
        afterwards whether that acknowledgement is confirmed."""
        self.answered = False
        if self._kept:
            if acking is not None and acking.reply:
                # Sent alone, unconfirmed. The kept message came for an ended pull, so it is the one after
                # ``acking`` (one unacknowledged at a time) or ``acking`` itself delivered again.
                await self._nc.publish(acking.reply, ACK)
            return self._kept.popleft()
        loop = asyncio.get_running_loop()
        self._token = str(next(self._tokens))
        waiter: asyncio.Future[Msg | None] = loop.create_future()
        self._waiter = waiter
        request = b'{"batch":1,"expires":%d}' % int(expires * 1e9)
        subject = self._subject
        if acking is not None and acking.reply:
            subject, request = acking.reply, ACK_NEXT + request
        lost = loop.call_later(expires + GRACE, _settle, waiter)
        try:
            await self._nc.publish(subject, request, reply=f"{self._prefix}.{self._token}")
            msg = await waiter
        finally:
            lost.cancel()
            self._waiter = None
        if msg is None:
            return None
        status = (msg.headers or {}).get(STATUS)
        if status is None:
            self.answered = True
            return msg
        description = (msg.headers or {}).get(DESCRIPTION, "")
        if status == NO_CONSUMER or (status == OVER and "deleted" in description.lower()):
            raise PullRefused(f"{status} {description or 'no responders'}".strip())
        self.answered = True
        if status == OVER:
            # Asked again soon, not in a loop the server answers at once (too many pulls waiting, ...).
            await asyncio.sleep(random.uniform(*OVER_PAUSE))
        return None  # expired, or over

    def end(self) -> None:
        """End the pull in progress as a quiet one (after a reconnect its request may be gone). Safe from a
        callback."""
        waiter = self._waiter
        if waiter is not None:
            _settle(waiter)

    async def close(self) -> None:
        self.end()
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()


def _settle(waiter: asyncio.Future[Msg | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
