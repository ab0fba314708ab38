"""A typed JetStream KV bucket holding msgspec messages, with compare-and-set updates."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, Header, StreamState
from nats.js.errors import (
    APIError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, MSG_ROLLUP_SUBJECT, KeyValue

from schemas import tracing
from schemas.errors import Conflict, InvalidInput, Unavailable
from schemas.messages import M, decode, encode
from schemas.retrying import backoff_delay
from services.bus import publishing
from services.bus.records import Keep, Latest, Records, View
from services.bus.watching import PROBE, BucketWatch

logger = logging.getLogger(__name__)

MARKER_REASON = "Nats-Marker-Reason"
"""Set on the markers the server leaves when it removes an entry (TTL, purge)."""
WRONG_LAST_SEQUENCE = 10071
"""JetStream's error when an expected last sequence does not hold."""
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_LAST_OF = "Nats-Expected-Last-Subject-Sequence-Subject"
"""With ``EXPECTED_LAST``: the subjects (wildcards allowed) whose newest message the expectation is about."""


def _removed(headers: dict[str, str] | None, data: bytes | None) -> bool:
    """A deletion or purge marker, or one the server left (TTL)."""
    headers = headers or {}
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or MARKER_REASON in headers or not data


class Bucket(Records[M]):
    """Records of one type in one JetStream KV bucket. Writes are compare-and-set on the key's revision."""

    def __init__(self, kv: KeyValue, type_: type[M]) -> None:
        self.kv = kv
        self.type = type_
        self.skipped = 0
        """Stored records ``items`` passed over because they no longer decode (for tests and metrics)."""
        self._views: list[BucketWatch[M]] = []
        """Views of this bucket (``view``), told of each of its writes when acknowledged."""
        self._readers: dict[float, JetStreamContext] = {}
        """``_reader``'s contexts, one per read budget (made once: lifecycle reads dozens of times a second)."""

    def _reader(self, timeout: float) -> JetStreamContext:
        """The bucket's JetStream context whose requests (a read's consumer creation, its stream info) may take
        the read's whole budget, not nats-py's 5 s: on a server busy with a fleet's reconnects their answers
        came after 5-10 s, and each creation given up on was made again (three times in a row for access's
        load after a restart)."""
        if (js := self._readers.get(timeout)) is None:
            base = self.kv._js
            js = self._readers[timeout] = base._nc.jetstream(prefix=base._prefix, timeout=timeout)
        return js

    async def get(self, key: str) -> tuple[M, int] | None:
        """The record and its revision, or None."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return decode(entry.value, self.type), entry.revision or 0

    async def create(self, key: str, value: M) -> int:
        """Create ``key``; raise Conflict if it exists (atomic: two creators, one winner)."""
        try:
            return self._wrote(key, value, await self.kv.create(key, encode(value)))
        except KeyWrongLastSequenceError:
            raise Conflict(f"{key!r} already exists") from None
        except KeyNotFoundError:
            # Refused because the key is taken, yet not there to read: on a cluster the stream's leader checks a
            # create against writes it has proposed but not applied yet, so another creator's write is in flight.
            raise Conflict(f"{key!r} is being created concurrently") from None

    async def update(self, key: str, value: M, revision: int) -> int:
        """Write ``key`` only if it is still at ``revision``; raise Conflict otherwise."""
        try:
            return self._wrote(key, value, await self.kv.update(key, encode(value), last=revision))
        except KeyWrongLastSequenceError:
            raise Conflict(f"{key!r} changed concurrently") from None

    async def put(self, key: str, value: M) -> int:
        return self._wrote(key, value, await self.kv.put(key, encode(value)))

    async def latest(self, pattern: str) -> Latest[M] | None:
        """One message get of the last message on the pattern's subjects (direct when the bucket allows it,
        like ``get``: no JetStream API queue)."""
        prefix = self.kv._pre
        try:
            msg = await self.kv._js.get_msg(self.kv._stream, subject=f"{prefix}{pattern}", direct=self.kv._direct)
        except NotFoundError:
            return None
        key = (msg.subject or "")[len(prefix) :]
        if _removed(msg.headers, msg.data):
            return Latest(key, None, msg.seq or 0)
        return Latest(key, self._stored(key, msg.data or b""), msg.seq or 0)

    async def write_over(self, key: str, value: M, guard: str, revision: int) -> int:
        prefix = self.kv._pre
        expect = {EXPECTED_LAST: str(revision)}
        if guard != key:
            # A guard over other keys too (a wildcard): the server matches it against every key of the bucket.
            expect[EXPECTED_LAST_OF] = f"{prefix}{guard}"
        # The trace of the call that wrote it goes with the record: the agent that applies it continues it.
        headers = tracing.inject(expect)
        try:
            ack = await publishing.stored(self.kv._js, f"{prefix}{key}", encode(value), headers)
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                raise Conflict(f"{guard!r} changed concurrently") from None
            raise
        return self._wrote(key, value, ack.seq)

    async def delete(self, key: str) -> None:
        await self._remove(key, {KV_OP: KV_DEL})

    async def purge(self, key: str) -> None:
        await self._remove(key, {KV_OP: KV_PURGE, Header.ROLLUP: MSG_ROLLUP_SUBJECT})

    async def _remove(self, key: str, headers: dict[str, str]) -> None:
        """A deletion or purge marker (nats-py's ``delete``/``purge``), its revision kept for the views."""
        ack = await publishing.stored(self.kv._js, f"{self.kv._pre}{key}", b"", headers)
        self._wrote(key, None, ack.seq)

    def _wrote(self, key: str, value: M | None, revision: int) -> int:
        for kept in self._views:
            kept.wrote(key, value, revision)
        return revision

    async def view(self, keep: Keep[M] | None = None, *, probe: float = PROBE, timeout: float = 10.0) -> View[M]:
        """Loaded from the last entry of every key, then kept by a watch of the bucket (``watching``)."""
        js = self._reader(timeout)
        kept = BucketWatch(js, self.kv._stream, self.kv._pre, self._entry, self._newest, keep, self._views)
        state = await self._stream_state(js, self.kv._stream, timeout)
        await kept.start(state.last_seq if state.messages else 0, probe, timeout)
        return kept

    async def _newest(self) -> int:
        """The bucket's newest revision, by one message get (direct where the bucket allows it)."""
        newest = await self.latest(">")
        return newest.revision if newest is not None else 0

    def _entry(self, key: str, headers: dict[str, str] | None, data: bytes) -> M | None:
        return None if _removed(headers, data) else self._stored(key, data)

    async def items(self, timeout: float = 10.0) -> dict[str, M]:
        """Every live record, read in one pass.

        Not through nats-py's watcher: on a JetStream cluster its "that was all" marker comes from the
        ordered consumer's first info, which can report nothing pending before the consumer has looked, so
        a full bucket reads as empty. Here the stream leader names the last sequence first, and the latest
        entry of every key is read until that sequence has been seen.
        """
        state = await self._stream_state(self._reader(timeout), self.kv._stream, timeout)
        if not state.messages:
            return {}
        return await self._last_entries(">", lambda msg: msg.metadata.sequence.stream >= state.last_seq, timeout)

    async def _last_entries(self, keys: str, last: Callable[[Msg], bool], timeout: float) -> dict[str, M]:
        """The live records of ``keys`` (a key pattern) through an ordered consumer of the last entry per key,
        read until ``last`` says a message was the last one wanted."""
        js = self._reader(timeout)
        stream, prefix = self.kv._stream, self.kv._pre
        queue: asyncio.Queue[Msg] = asyncio.Queue()

        async def received(msg: Msg) -> None:
            await queue.put(msg)

        sub = await js.subscribe(
            f"{prefix}{keys}",
            stream=stream,
            cb=received,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            # The server reaps the consumer this long after the read ends. Short: a stream allows 1,000
            # consumers (nats-server 2.15's default), and a busy lifecycle reads the bucket dozens of times
            # a second (a create, an inventory), so 30 s of leftovers ran into that limit.
            inactive_threshold=2.0,
        )
        out: dict[str, M] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await queue.get()
                    self._take(out, msg.subject[len(prefix) :], msg.headers, msg.data)
                    if last(msg):
                        return out
        except TimeoutError:
            raise Unavailable(f"could not read bucket {self.kv._name} within {timeout:g}s") from None
        finally:
            await sub.unsubscribe()

    def _take(self, out: dict[str, M], key: str, headers: dict[str, str] | None, data: bytes) -> None:
        """Keep ``key``'s entry in ``out`` when it is a live record this version reads, else drop the key."""
        if _removed(headers, data) or (record := self._stored(key, data)) is None:
            out.pop(key, None)
        else:
            out[key] = record

    def _stored(self, key: str, data: bytes) -> M | None:
        """A stored record, or None when it fails this version's bounds (written by an older one, or by hand):
        one such record must not stop a service loading all the others."""
        try:
            return decode(data, self.type)
        except InvalidInput as exc:
            self.skipped += 1
            logger.warning("bucket %s: skipped the stored record %r: %s", self.kv._name, key, exc.description)
            return None

    @staticmethod
    async def _stream_state(js: JetStreamContext, stream: str, timeout: float) -> StreamState:
        """The bucket stream's state. Right after another replica created the bucket on a JetStream cluster,
        or during a leader election, it can read as missing or time out for a moment: retry, within bounds."""
        give_up = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                return (await js.stream_info(stream)).state
            except (NotFoundError, NatsTimeout, ServiceUnavailableError) as exc:
                if time.monotonic() > give_up:
                    raise Unavailable(f"bucket stream {stream} unavailable: {exc}") from None
                await asyncio.sleep(backoff_delay(attempt, base=0.1, cap=1.0))
                attempt += 1
