"""This cluster's commands: its desired-state records, from its durable pull consumer on the desired-state
stream, one at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import APIError
from nats.js.errors import NotFoundError as JsNotFound

from agent.bus.acks import RidingAck
from agent.bus.client import api_text
from agent.bus.connection import Connection
from agent.bus.events import Hook
from agent.bus.pull import Puller, PullRefused
from schemas import subjects
from schemas.errors import Unavailable, describe
from schemas.retrying import backoff_delay, jittered

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 60.0
"""Seconds one pull waits for a command. A command arriving meanwhile is delivered at once; the wait only
sets how many pull requests an idle agent sends (10,000 idle agents: 167/s; an expiring pull cost nats-server
and the agent more than a heartbeat). Each pull's wait is jittered (``jittered``): a fleet that reconnected
together would otherwise expire its pulls together, every minute. A pull does not wait this long when it
cannot be answered: a reconnect ends it, and so does the server's 409 (leader changed, server shut down,
consumer deleted)."""
ACK_TIMEOUT = 10.0
"""Seconds an acknowledgement waits for the server's confirmation."""
DECLARE_TIMEOUT = 30.0
"""Seconds a consumer lookup or declaration may take. Generous on purpose: nats-server answers JetStream
API requests one after another (10,000 agents connecting at once queue for seconds); a request asked again
after a short timeout is still processed, so impatience only lengthens the queue."""
RECHECK_AFTER = 300.0
"""Seconds of idle fetching after which the consumer's existence is checked again."""
ASKED_PATIENCE = 120.0
"""Seconds an agent that asked the platform for its gone consumer waits for the answer naming it before it
looks the consumer up itself. After a lone NATS server's restart every agent's consumer is gone, and the
platform's services start on the same server: 10,000 agents looking theirs up every few backoff steps (27,000
look-ups) held JetStream's API, the services' start behind them (27-30 s instead of 6-18), and so the answers
they waited for."""
BIND_BACKOFF = (1.0, 30.0)
"""(base, cap) seconds between attempts to set up the consumer."""


STREAM_NOT_FOUND = 10059
"""JetStream's error code for a missing stream (a missing consumer is 10014)."""


class Delivery:
    """One record delivered from the desired-state stream, with its acknowledgements.

    The acknowledgements raise Unavailable when they cannot be sent; an
    acknowledgement that never arrives only means a redelivery, which the
    revision check makes harmless.
    """

    def __init__(self, msg: Msg, ack_timeout: float = 5.0, ack_with_next: Callable[[Msg], None] | None = None) -> None:
        self._msg = msg
        self._ack_timeout = ack_timeout
        self._ack_with_next = ack_with_next
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        self.headers: dict[str, str] = dict(msg.headers or {})
        try:
            meta = msg.metadata
            self.stream_seq: int = meta.sequence.stream
            self.num_delivered: int = meta.num_delivered
        except Exception:  # not a JetStream message: no metadata to read
            self.stream_seq, self.num_delivered = 0, 1

    def __repr__(self) -> str:
        return f"Delivery(subject={self.subject!r}, seq={self.stream_seq}, delivered={self.num_delivered})"

    async def _do(self, what: str, step: Callable[[], Any]) -> None:
        try:
            await step()
        except (NatsError, TimeoutError) as exc:
            raise Unavailable(f"cannot {what} command {self.stream_seq}: {describe(exc)}") from None

    async def ack(self) -> None:
        """Done: the server removes the command. From a queue: sent with the queue's next pull, one message
        for both, confirmed by that pull's answer and sent again until it is (``CommandQueue``); otherwise
        sent alone, waiting for the server to confirm."""
        if self._ack_with_next is not None:
            self._ack_with_next(self._msg)
            return
        await self._do("ack", lambda: self._msg.ack_sync(timeout=self._ack_timeout))

    async def nak(self, delay: float | None = None) -> None:
        """Not now: redeliver after ``delay`` seconds (nothing after it is delivered before)."""
        await self._do("nak", lambda: self._msg.nak(delay=delay))

    async def term(self) -> None:
        """Never: the server drops the command without redelivering it."""
        await self._do("terminate", self._msg.term)

    async def in_progress(self) -> None:
        """Still working on it: restart the server's acknowledgement timer."""
        await self._do("extend", self._msg.in_progress)


class Trouble:
    """Backoff for a problem that lasts, logged once when it begins and once when it is over."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.attempt = 0
        self.text: str | None = None

    def began(self, text: str, *, expected: bool = False) -> float:
        """The delay before the next attempt."""
        base, cap = BIND_BACKOFF
        delay = backoff_delay(self.attempt, base=base, cap=cap)
        self.attempt += 1
        if self.text is None:
            level = logging.WARNING if expected else logging.ERROR
            logger.log(level, "%s; retrying with backoff (logged once until it works)", text)
        else:
            logger.debug("%s (attempt %d); retrying in %.1fs", text, self.attempt, delay)
        self.text = text
        return delay

    def over(self) -> None:
        if self.text is not None:
            logger.info("receiving commands for cluster %r again", self.cluster)
        self.text = None
        self.attempt = 0


class CommandQueue:
    """This cluster's commands, one at a time, through its durable pull consumer.

    The consumer (``agent-<cluster>`` on the desired-state stream, filtered on this
    cluster's records, explicit acks, one unacknowledged record at a time) is created
    by the platform when the agent says hello; the agent's JWT may only look it up,
    fetch from it and ack, so no agent can re-filter a consumer onto another cluster's
    records. The agent only looks it up (never re-declares after a reconnect: a
    10,000-agent fleet would keep the server's JetStream API busy after a restart);
    when it is missing, ``on_missing`` asks the platform again. It is pulled from by
    name (``agent.bus.pull``: nothing of its config is ever sent). When the hello's
    answer named the consumer (``confirmed``), the platform has just made sure of it:
    the first bind asks JetStream nothing. The binding survives reconnects (nats-py
    restores the subscription of the pulls' answers); after a reconnect the pull the
    link dropped is asked again at once, and nothing is looked up: a pull from a
    consumer that is gone is answered at once (503, no responders; 409 Consumer
    Deleted), and only then is it looked up.

    ``next()`` never raises for a bus problem: while the desired-state stream does not
    exist yet, JetStream is unavailable or the link is down, it backs off
    with jitter (logging once per outage) and returns None, so the caller's
    loop can look at its stop flag and call again.
    """

    def __init__(
        self,
        conn: Connection,
        cluster: str,
        *,
        fetch_timeout: float = FETCH_TIMEOUT,
        declare_timeout: float = DECLARE_TIMEOUT,
        recheck_after: float = RECHECK_AFTER,
        on_missing: Hook | None = None,
    ) -> None:
        self._conn = conn
        self.cluster = cluster
        self.consumer = subjects.agent_consumer(cluster)
        self.stream = subjects.desired_stream(cluster)
        self._fetch_timeout = fetch_timeout
        self._declare_timeout = declare_timeout
        self._on_missing = on_missing
        self._recheck_after = recheck_after
        self._sub: Puller | None = None
        self._trouble = Trouble(cluster)
        self._idle_since: float | None = None
        self._closed = False
        self._stale = False
        self._confirmed = False
        self._relinked = asyncio.Event()
        """Set by a reconnect: ends a backoff (``_backoff``)."""
        self._ack = RidingAck()
        """The last delivery's ack, sent with the next pull (``agent.bus.acks``)."""
        self.declarations = 0
        """Times this queue found its consumer missing and asked the platform to create it again."""
        self.gone = False
        """A fetch found the consumer gone, and no bind has worked since (told in the hello that asks for it)."""
        self._asked_at: float | None = None
        """When the platform was asked for the gone consumer (the loop's clock)."""

    @property
    def bound(self) -> bool:
        """Whether commands can be fetched (the consumer is declared and bound)."""
        return self._sub is not None

    @property
    def fetching(self) -> bool:
        """Bound, and no fetch has found the consumer gone since (what a hello tells the platform)."""
        return self._sub is not None and not self._stale

    def invalidate(self) -> None:
        """After a reconnect: end the fetch in progress (its pull request did not survive the link); the next
        is asked at once; a backoff in progress ends too. Safe from a callback."""
        self._relinked.set()
        if self._sub is not None:
            self._sub.end()

    def confirmed(self, consumer: str) -> None:
        """A hello's answer named ``consumer`` as made sure of by the platform (or named none: ""): when it is
        this queue's, the next bind needs no look-up (a fetch still finds out at once if it is gone since),
        and a backoff waiting for it ends."""
        self._confirmed = consumer == self.consumer
        if self._confirmed:
            self._relinked.set()

    @staticmethod
    async def _unsubscribe(sub: Puller) -> None:
        try:
            await sub.close()
        except (NatsError, TimeoutError) as exc:
            logger.debug("unbinding the command consumer: %s", describe(exc))

    async def _declare(self) -> None:
        """Make sure the consumer exists. The platform creates it (at bootstrap and at every hello); the
        agent's JWT may not create one. When it is missing, ask the platform again (``on_missing``: a hello)
        and wait."""
        try:
            await self._conn.jetstream.consumer_info(self.stream, self.consumer, timeout=self._declare_timeout)
        except JsNotFound as exc:
            if exc.err_code != STREAM_NOT_FOUND and self._on_missing is not None:
                self.declarations += 1
                self._on_missing()
            raise

    async def _bind(self) -> Puller:
        confirmed, self._confirmed = self._confirmed, False
        if not confirmed:
            await self._declare()
        puller = Puller(self._conn.client, self.stream, self.consumer)
        await puller.open()
        return puller

    async def _still_there(self) -> bool:
        """False when the consumer is gone (the stream was deleted or re-created)."""
        try:
            await self._conn.jetstream.consumer_info(self.stream, self.consumer, timeout=self._declare_timeout)
        except JsNotFound:
            return False
        return True

    async def _backoff(self, text: str, *, expected: bool = True) -> None:
        delay = self._trouble.began(text, expected=expected)
        # Until the delay or a reconnect, whichever comes first: a backoff that grew while NATS was down
        # (1 s doubling) kept pending commands waiting for seconds after the link was back (a restart at 1,000
        # agents: hellos answered 5.5 s after NATS started, the pending commands applied after 12.5 s).
        self._relinked.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._relinked.wait(), delay)

    async def _set_up(self) -> bool:
        """Bind to the consumer (looked up first unless confirmed); False after a backoff."""
        if self._awaiting_answer():
            # Asked for and not yet named by the platform's answer (which ends this backoff): no look-up,
            # which could only find it still missing.
            await self._backoff("the command consumer is gone; the platform was asked to make it again")
            return False
        try:
            self._sub = await self._bind()
            self.gone = False
            logger.info("bound to consumer %s on stream %s for commands", self.consumer, self.stream)
        except JsNotFound as exc:
            await self._backoff(
                f"cannot bind to consumer {self.consumer} on stream {self.stream}: {api_text(exc)} "
                "(the lifecycle service creates the stream); commands wait"
            )
            return False
        except TimeoutError:
            await self._backoff("JetStream did not answer; commands wait")
            return False
        except APIError as exc:
            await self._backoff(f"JetStream refused the command consumer: {api_text(exc)}", expected=False)
            return False
        except NatsError as exc:
            await self._backoff(f"cannot bind to the command consumer: {describe(exc)}")
            return False
        self._idle_since = None
        return True

    def _awaiting_answer(self) -> bool:
        if not self.gone or self._confirmed or self._asked_at is None:
            return False
        return asyncio.get_running_loop().time() - self._asked_at < ASKED_PATIENCE

    async def next(self) -> Delivery | None:
        """The next command, or None after a quiet fetch or a backoff."""
        if self._closed:
            raise Unavailable("the command queue was closed")
        if not self._conn.is_connected:
            await self._backoff("not connected to NATS; commands wait")
            return None
        sub = await self._ready()
        return await self._fetch_one(sub) if sub is not None else None

    async def _ready(self) -> Puller | None:
        """The bound puller, set up or checked first when needed; None when there is none yet."""
        if self._stale:
            await self._unbind()
        if self._sub is None:
            if not await self._set_up():
                return None
        elif self._idle_too_long() and await self._gone():
            logger.warning("consumer %s disappeared; declaring it again", self.consumer)
            self._stale = True
            return None
        return self._sub

    async def _unbind(self) -> None:
        self._stale = False
        self._idle_since = None
        old, self._sub = self._sub, None
        if old is not None:
            await self._unsubscribe(old)

    def _idle_too_long(self) -> bool:
        """A deleted consumer (stream re-created) looks like a quiet one: True once in a while to check."""
        loop = asyncio.get_running_loop()
        if self._idle_since is None or loop.time() - self._idle_since <= self._recheck_after:
            return False
        self._idle_since = None
        return True

    async def _gone(self) -> bool:
        try:
            return not await self._still_there()
        except (NatsError, TimeoutError) as exc:
            logger.debug("checking consumer %s: %s", self.consumer, describe(exc))
            return False

    async def _fetch_one(self, sub: Puller) -> Delivery | None:
        try:
            msg = await sub.next(jittered(self._fetch_timeout), self._ack.to_send())
            if sub.answered:
                self._ack.confirmed()
        except (NatsError, PullRefused) as exc:
            # The consumer gone, a closed connection.
            self._stale = True
            if isinstance(exc, PullRefused) and self._on_missing is not None:
                # Gone (its state is in nats-server's memory: a restart of a lone server loses it): the hello
                # says so, the platform makes it again and names it in the answer (``confirmed``), which ends
                # the backoff. Not a look-up first: 10,000 agents after a restart would each make one.
                self.declarations += 1
                self.gone = True
                self._asked_at = asyncio.get_running_loop().time()
                self._on_missing()
            await self._backoff(f"cannot fetch commands: {describe(exc)}")
            return None
        self._trouble.over()
        if msg is None:
            # Quiet: the pull expired, or was ended by a reconnect or the server.
            if self._idle_since is None:
                self._idle_since = asyncio.get_running_loop().time()
            return None
        self._idle_since = None
        return Delivery(msg, ack_timeout=ACK_TIMEOUT, ack_with_next=self._ack.hold)

    async def close(self) -> None:
        """Stop fetching; the consumer stays (it is durable). Safe twice."""
        self._closed = True
        await self._ack.send_alone(self._conn)
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._unsubscribe(sub)
