"""A JetStream KV bucket kept in this process (``records.View``): one ordered consumer loads the last entry of
every key, then goes on delivering the bucket's new writes.

Not nats-py's ``KeyValue.watch``: it cannot be told to resume from a revision, it says "loaded" from the
consumer's first info (on a JetStream cluster that can report nothing pending before the consumer has looked,
``Bucket.items``), which also needs a consumer-info permission the services do not hold, and its subscription
drops deliveries over nats-py's pending limits without a gap its ordered consumer would notice. Here the
subscription has no such limit (the consumer's flow control bounds what is in flight), "loaded" is the stream's
last sequence seen, and a watchdog makes sure the view cannot go stale silently: nats-py's ordered consumer
recreates itself after a gap or missed heartbeats, but if that fails (JetStream not back yet after a restart,
a recreate refused during a leader election) it only tells the error callback. So at every reconnect, and
whenever the view has not reached within ``probe`` seconds the stream's last sequence seen before, the
consumer is made again from the view's position, and again at each probe until that succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from schemas.errors import Unavailable, describe
from schemas.messages import M
from services.bus.patience import until_done
from services.bus.records import Keep, View

logger = logging.getLogger(__name__)

PROBE = 5.0
"""Seconds between the watchdog's looks at the stream's last sequence (one stream-info request each)."""
HEARTBEAT = 2.0
"""The consumer's idle heartbeat: nats-py's ordered consumer recreates itself after two missed ones."""
V1_TOKENS = 9
"""Tokens of a delivery's reply subject without domain and account hash."""
INACTIVE = 30.0
"""Seconds the server keeps a consumer nobody listens to any more (the process gone)."""
STALL = 1.0
"""Seconds a ``caught_up`` waits with the view not moving before it has the consumer made again (rather than
leave it to the watchdog, which needs two probes to see a stuck consumer): after a JetStream node's loss, the
consumers that lived on it are gone, and a list waiting on them must not outlast its caller's timeout."""
RETRY = 1.0
"""Seconds before the watchdog first tries again to make a lost consumer (JetStream electing leaders after a
node's loss answers within seconds), doubled at each failure up to the probe (a long outage is not hammered)."""
NEWEST_ATTEMPT = 1.0
"""Seconds one ask for the bucket's newest revision may take before it is asked again, within ``caught_up``'s
deadline: while a stream elects a new leader after its node's loss (4-9 s, nats-server's election timeout), the
followers leave direct gets unanswered or there are no responders at all; a new leader answers at once."""

Decode = Callable[[str, dict[str, str] | None, bytes], M | None]
"""A delivered entry as a record; None for a removal (or a record this version cannot read)."""
Newest = Callable[[], Awaitable[int]]
"""The bucket's newest revision (0: empty), read with one request."""


class BucketWatch(View[M]):
    """The view of one bucket (``Bucket.view``); the bucket tells it of its own writes (``View.wrote``)."""

    def __init__(
        self,
        js: JetStreamContext,
        stream: str,
        prefix: str,
        decode: Decode[M],
        newest: Newest,
        keep: Keep[M] | None,
        views: list[BucketWatch[M]],
    ) -> None:
        super().__init__(keep)
        self._js, self._stream, self._prefix, self._decode, self._newest = js, stream, prefix, decode, newest
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        """``caught_up`` calls: the revision each waits for."""
        self._views = views
        """The bucket's views, which it tells of its own writes: this one is among them while it watches."""
        self._sub: JetStreamContext.PushSubscription | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._nudge = asyncio.Event()
        self._lost = False
        self._loaded_at = 0
        self._loaded = asyncio.Event()
        self.resumed = 0
        """How often the consumer was made again (for tests and logs)."""

    async def start(self, last: int, probe: float, timeout: float) -> None:
        """Load every key's last entry (the stream's last sequence is ``last``), then keep watching."""
        self._loaded_at = last
        if last == 0:
            self._loaded.set()
        self._sub = await self._subscribe(ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT))
        try:
            async with asyncio.timeout(timeout):
                await self._loaded.wait()
        except TimeoutError:
            await self.stop()
            raise Unavailable(f"could not load stream {self._stream} within {timeout:g}s") from None
        hooks = getattr(self._js._nc, "reconnected_hooks", None)
        if hooks is not None:
            hooks.append(self._reconnected)
        self._watchdog = asyncio.create_task(self._watch(probe), name=f"view {self._stream}")
        self._views.append(self)

    async def _subscribe(self, config: ConsumerConfig) -> JetStreamContext.PushSubscription:
        return await self._js.subscribe(
            f"{self._prefix}>",
            stream=self._stream,
            cb=self._received,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=HEARTBEAT,
            inactive_threshold=INACTIVE,
            # No limit here: a delivery dropped past it would leave a gap the ordered consumer never sees.
            pending_msgs_limit=0,
            pending_bytes_limit=0,
        )

    async def _received(self, msg: Msg) -> None:
        key = msg.subject[len(self._prefix) :]
        revision = _stream_sequence(msg.reply)
        self.watched(key, revision, lambda: self._decode(key, msg.headers, msg.data))
        if revision >= self._loaded_at:
            self._loaded.set()
        if self._waiting:
            self._release()

    def _release(self) -> None:
        still = []
        for revision, waiter in self._waiting:
            if revision <= self.position:
                if not waiter.done():
                    waiter.set_result(None)
            elif not waiter.done():
                still.append((revision, waiter))
        self._waiting = still

    async def caught_up(self, timeout: float = 5.0) -> None:
        waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                newest = await self._newest_through_election()
                if newest <= self.position:
                    return
                self._waiting.append((newest, waiter))
                await self._stalled_resumes(waiter)
        except TimeoutError:
            raise Unavailable(f"view of {self._stream}: not caught up within {timeout:g}s") from None
        finally:
            waiter.cancel()  # dropped from ``_waiting`` at the next delivery

    async def _newest_through_election(self) -> int:
        """The bucket's newest revision, asked again while the stream has no leader to say (``patience.busy``:
        no responders, a timed-out ask); the caller's deadline ends the asking (it once ended at the first "no
        responders", a list's 503)."""
        return await until_done(
            f"view of {self._stream}: newest revision",
            lambda: asyncio.wait_for(self._newest(), NEWEST_ATTEMPT),
        )

    async def _stalled_resumes(self, waiter: asyncio.Future[None]) -> None:
        """Wait for ``waiter``; each ``STALL`` the view has not moved, have its consumer made again, also when
        the watchdog is already at it: after failed tries it waits up to a probe before the next, longer than a
        read's deadline (a list's 503 after a JetStream node's loss, once in CI)."""
        while True:
            seen = self.position
            try:
                await asyncio.wait_for(asyncio.shield(waiter), STALL)
            except TimeoutError:
                if self.position == seen:
                    if not self._lost:
                        logger.info("view of %s: not moving at %d while read; watching again", self._stream, seen)
                    self._lost = True
                    self._nudge.set()
                continue
            return

    def _reconnected(self) -> None:
        # The consumer may be gone with the server it lived on (a restart): made again from where the view is.
        self._lost = True
        self._nudge.set()

    async def _watch(self, probe: float) -> None:
        behind = failures = 0
        while not self._js._nc.is_closed:
            wait = min(probe, RETRY * 2**failures) if self._lost else probe
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._nudge.wait()
            self._nudge.clear()
            try:
                if self._lost:
                    await self._resume()
                    behind = failures = 0
                    continue
                last = (await self._js.stream_info(self._stream)).state.last_seq
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = min(failures + 1, 8)
                wait = min(probe, RETRY * 2**failures) if self._lost else probe
                logger.warning("view of %s: %s; trying again in %gs", self._stream, describe(exc), wait)
                continue
            if behind and self.position < behind:
                # Writes seen a probe ago still not delivered: the consumer is lost or stuck.
                logger.warning("view of %s: at %d, behind %d since the last look", self._stream, self.position, behind)
                self._lost = True
                self._nudge.set()
            behind = last if last > self.position else 0

    async def _resume(self) -> None:
        """A new consumer from the view's position on (the writes since, in order), the old one dropped."""
        old, self._sub = self._sub, None
        if old is not None:
            await _drop(old)
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.position + 1)
        self._sub = await self._subscribe(config)
        self._lost = False
        self.resumed += 1
        logger.info("view of %s: watching again from %d", self._stream, self.position + 1)

    async def stop(self) -> None:
        if self in self._views:
            self._views.remove(self)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        hooks = getattr(self._js._nc, "reconnected_hooks", None)
        if hooks is not None and self._reconnected in hooks:
            hooks.remove(self._reconnected)
        sub, self._sub = self._sub, None
        if sub is not None:
            await _drop(sub)


def _stream_sequence(reply: str) -> int:
    """A delivery's stream sequence, from its reply subject (``msg.metadata`` builds every field: 5 us against
    0.5, on each delivery): ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>...``, or with a domain and
    an account hash before the stream (12 tokens)."""
    tokens = Msg.Metadata._get_metadata_fields(reply)
    return int(tokens[5] if len(tokens) == V1_TOKENS else tokens[7])


async def _drop(sub: JetStreamContext.PushSubscription) -> None:
    """Unsubscribe, whatever the connection's state; its heartbeat and flow-control tasks end too."""
    try:
        await sub.unsubscribe()
    except Exception as exc:  # closed, draining, or already unsubscribed
        logger.debug("view: unsubscribe: %s", describe(exc))
    jsi = sub._sub._jsi
    for task in (jsi._hbtask, jsi._fctask) if jsi is not None else ():
        if task is not None:
            task.cancel()
