"""Applying one command: decode, check, apply through the driver, report, acknowledge.

A command is a desired-state record of this cluster (``command_of``): the agent's durable consumer follows
its cluster's records in its desired-state bucket (``desired_bucket``), from the last record of each object
when it is created, then every write in order. A record already observed at its generation (lifecycle's own
write of a result, or a tombstone) asks for nothing and is only acknowledged; a deletion marker likewise.

The order is what makes a command *exactly once in effect* (promises 3 and 8):

1. the driver applies idempotently: an object already at the command's
   generation (or a later one) is left alone, so a redelivery never applies
   twice;
2. the agent asks lifecycle to record the result in the desired state
   (a request on its own cluster's subject, ``Lifecycle.AGENT_RESULT``),
   and asks again, with jittered exponential backoff and the message kept
   in progress, until lifecycle answers: it answers once the record is
   durable, and a repeated result is answered "already" without a second
   write;
3. only then is the command acknowledged.

A ``kill -9`` anywhere therefore never applies twice (step 1) and never loses a
result (the command is redelivered, the driver finds it done, and the result is
asked for again). A lifecycle outage holds the cluster's next command until
lifecycle is back: nothing is lost, nothing applied twice.

Pure of ``nats``: the delivery and the request are small protocols, so this
is tested with fakes; ``agent.bus`` provides the real ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import msgspec
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Tracer

from agent.drivers import Driver
from agent.errors import DriverError
from agent.telemetry import AgentMetrics
from schemas import subjects, tracing
from schemas.errors import Internal, InvalidInput, Overloaded, TetherError, Unavailable
from schemas.messages import (
    MAX_KEPT_TEXT,
    MAX_SHORT,
    Command,
    CommandResult,
    ResultRecorded,
    WorkloadKind,
    WorkloadRecord,
    clip,
    decode,
    desired_key,
    workload_key,
)
from schemas.names import dns1123_label_error
from schemas.retrying import Retries, backoff_delay

logger = logging.getLogger(__name__)

KEEPALIVE_EVERY = 10.0
"""Seconds between "still working on it" signals while a command is applied and reported
(a third of the consumer's 30 s ack wait)."""
NAK_BACKOFF = (1.0, 60.0)
"""(base, cap) seconds before a command whose cluster was unreachable is delivered again."""
RECORD_BACKOFF = (0.2, 10.0)
"""(base, cap) seconds between requests to record a result that got no answer."""
OVERLOAD_JITTER = 0.25
"""A busy lifecycle's retry-after is stretched by up to this fraction at random (callers told the same time
do not come back together)."""
ACK_RETRY_FOR = 15.0
"""Seconds an applied command's acknowledgement is retried before it is left to the server's redelivery
(a repeated ack is harmless: the server confirms it again)."""
ACK_BACKOFF = (0.25, 2.0)
"""(base, cap) seconds between attempts to acknowledge."""

Disposition = Literal["acked", "nacked", "terminated", "skipped"]

KV_OPERATION = "KV-Operation"
REMOVED = ("DEL", "PURGE")
"""A key deleted or purged: a marker, no record."""
MARKER_REASON = "Nats-Marker-Reason"
"""Set on the markers the server itself leaves when it removes an entry."""


class Receipt(Protocol):
    """One delivered command and its acknowledgements (``agent.bus.Delivery``)."""

    subject: str
    data: bytes
    num_delivered: int

    async def ack(self) -> None: ...

    async def nak(self, delay: float | None = None) -> None: ...

    async def term(self) -> None: ...

    async def in_progress(self) -> None: ...


RecordOnce = Callable[[CommandResult], Awaitable[ResultRecorded]]
"""Ask lifecycle once to record a result; its answer. Raises Unavailable (Overloaded: with a retry-after)
when there was none, or the ``TetherError`` lifecycle answered with."""


class _AttributableSpec(msgspec.Struct, kw_only=True):
    kind: WorkloadKind
    project: str
    name: str


class _Attributable(msgspec.Struct, kw_only=True):
    """The least of a command that names what it was about (to report a malformed one)."""

    op_id: str
    generation: int
    spec: _AttributableSpec


def command_of(subject: str, data: bytes, headers: Mapping[str, str], cluster: str) -> Command | None:
    """What one delivered desired-state record asks this agent to apply; None when nothing: a deletion
    marker, or a record observed or failed at its generation (lifecycle's write of the result this agent
    reported, a tombstone). InvalidInput when it is no record, or not stored where its own content says (its key is
    ``<cluster>.<kind>.<project>.<name>`` of the record, and the cluster is this agent's)."""
    if headers.get(KV_OPERATION) in REMOVED or MARKER_REASON in headers or not data:
        return None
    record = decode(data, WorkloadRecord)
    spec = record.spec
    where = f"{subjects.desired_prefix(spec.cluster)}{desired_key(spec.cluster, workload_key(spec))}"
    if subject != where or spec.cluster != cluster:
        raise InvalidInput(f"a record of {spec.cluster}/{spec.kind}/{spec.project}/{spec.name} arrived on {subject!r}")
    if record.observed is not None and record.observed.generation >= record.generation:
        return None
    if record.failure is not None and record.failure.generation >= record.generation:
        return None  # lifecycle's write of the failure this agent reported; asking again clears it (resend)
    return Command(
        op_id=record.op_id,
        generation=record.generation,
        spec=spec,
        issued_at=record.updated_at,
        operation=record.operation,
    )


def check_command(command: Command, cluster: str) -> None:
    """InvalidInput naming the problem when ``command`` cannot be applied by this agent."""
    spec = command.spec
    if not command.op_id.strip():
        raise InvalidInput("invalid command: empty op_id")
    if command.generation < 1:
        raise InvalidInput(f"invalid command {command.op_id}: generation must be at least 1, not {command.generation}")
    for value, what in ((spec.project, "project"), (spec.name, "name")):
        problem = dns1123_label_error(value)
        if problem:
            raise InvalidInput(f"invalid command {command.op_id}: {what} {value!r} {problem}")
    if spec.cluster != cluster:
        raise InvalidInput(
            f"command {command.op_id} is for cluster {spec.cluster!r}, but this agent serves cluster {cluster!r}"
        )


class Keepalive:
    """Tells the server every ``every`` seconds that ``receipt`` is still being worked on, until ``stop()``.

    A timer, not a task per command: most commands are done long before the first signal is due, and a task
    started and cancelled for each was a measurable share of a busy agent's CPU."""

    def __init__(self, receipt: Receipt, every: float) -> None:
        self._receipt = receipt
        self._every = every
        self._loop = asyncio.get_running_loop()
        self._sending: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(every, self._due)

    def _due(self) -> None:
        if self._sending is None or self._sending.done():
            self._sending = self._loop.create_task(self._send(), name="agent-command-keepalive")
        self._timer = self._loop.call_later(self._every, self._due)

    async def _send(self) -> None:
        try:
            await self._receipt.in_progress()
        except Unavailable as exc:
            logger.debug("%s", exc.description)

    async def stop(self) -> None:
        """No more signals; waits for one being sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sending, self._sending = self._sending, None
        if sending is not None and not sending.done():
            sending.cancel()
            await asyncio.wait({sending})


@dataclass(frozen=True)
class Handled:
    """What became of one delivery (for logs and tests)."""

    disposition: Disposition
    result: CommandResult | None = None


class CommandApplier:
    """Handles deliveries one at a time: the agent's half of the command path."""

    def __init__(
        self,
        cluster: str,
        driver: Driver,
        record: RecordOnce,
        *,
        keepalive_every: float = KEEPALIVE_EVERY,
        clock: Callable[[], float] = time.time,
        tracer: Tracer | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self.cluster = cluster
        self.driver = driver
        self._record = record
        self._keepalive_every = keepalive_every
        self._clock = clock
        self.applied = 0
        """Commands applied by this process (for logs and tests)."""

    async def handle(self, receipt: Receipt) -> Handled:
        """Apply one delivered command and settle it; raises only CancelledError."""
        # The command carries the trace of the API call that caused it; the result carries it on.
        headers = getattr(receipt, "headers", None) or {}
        if self._tracer is None:
            # No span of its own (none would be exported), but the trace goes on in the result's request.
            if not headers:
                return await self._handle(receipt)
            token = otel_context.attach(tracing.extract(headers))
            try:
                return await self._handle(receipt)
            finally:
                otel_context.detach(token)
        with self._tracer.start_as_current_span(
            f"agent apply {receipt.subject}", context=tracing.extract(headers), kind=SpanKind.CONSUMER
        ) as span:
            span.set_attribute("tether.cluster", self.cluster)
            return await self._handle(receipt)

    async def _handle(self, receipt: Receipt) -> Handled:
        keepalive = Keepalive(receipt, self._keepalive_every)
        try:
            try:
                command = command_of(
                    receipt.subject, receipt.data, getattr(receipt, "headers", None) or {}, self.cluster
                )
                if command is not None:
                    check_command(command, self.cluster)
            except InvalidInput as exc:
                return await self._reject(receipt, exc.description)
            if command is None:
                await self._settle(receipt, "ack")  # nothing new to apply
                return Handled("skipped")
            return await self._apply(receipt, command)
        finally:
            await keepalive.stop()

    # --- steps ------------------------------------------------------------------------------
    async def _apply(self, receipt: Receipt, command: Command) -> Handled:
        spec = command.spec
        what = (
            f"{command.operation or 'apply'} {spec.kind} {spec.project}/{spec.name} "
            f"(op {command.op_id}, generation {command.generation})"
        )
        started = time.monotonic()
        try:
            outcome = await self.driver.apply(command)
        except DriverError as exc:
            if exc.transient:
                delay = backoff_delay(max(0, receipt.num_delivered - 1), base=NAK_BACKOFF[0], cap=NAK_BACKOFF[1])
                logger.warning("%s: %s; trying again in %.1fs", what, exc, delay)
                await self._settle(receipt, "nak", delay)
                return Handled("nacked")
            logger.error("%s failed: %s: %s", what, exc.reason, exc)
            result = self._result(command, ok=False, applied=False, reason=exc.reason, message=str(exc))
        except Exception as exc:
            # A bug in the driver: report it and move on rather than block the queue forever.
            logger.exception("%s failed unexpectedly", what)
            result = self._result(
                command, ok=False, applied=False, reason="AgentError", message=f"{type(exc).__name__}: {exc}"
            )
        else:
            if outcome.applied:
                self.applied += 1
                logger.info("%s: applied (%s%s)", what, outcome.state, f" {outcome.version}" if outcome.version else "")
            else:
                logger.info("%s: already at generation %d (%s); nothing to do", what, outcome.generation, outcome.state)
            result = self._result(
                command, ok=True, applied=outcome.applied, state=outcome.state, version=outcome.version
            )
            if not outcome.settled:
                result = msgspec.structs.replace(
                    result,
                    settled=False,
                    reason=clip(outcome.reason, MAX_SHORT),
                    message=clip(outcome.message, MAX_KEPT_TEXT),
                )
        self._count(result, time.monotonic() - started)
        await self.report(result)
        await self._settle(receipt, "ack")
        return Handled("acked", result)

    def _count(self, result: CommandResult, seconds: float) -> None:
        if self._metrics is None:
            return
        if not result.ok:
            self._metrics.failed.add(1)
        elif result.applied:
            self._metrics.applied.add(1)
            self._metrics.apply_seconds.record(seconds)

    async def _reject(self, receipt: Receipt, problem: str) -> Handled:
        """A command that cannot be applied: report it when it says what it was about, then drop it."""
        logger.error("dropping a command on %s: %s", receipt.subject, problem)
        result: CommandResult | None = None
        try:
            about = msgspec.json.decode(receipt.data, type=_Attributable)
        except msgspec.MsgspecError:
            about = None
        if about is not None and about.op_id.strip():
            result = CommandResult(
                op_id=about.op_id,
                cluster=self.cluster,
                kind=about.spec.kind,
                project=about.spec.project,
                name=about.spec.name,
                generation=about.generation,
                ok=False,
                applied=False,
                reason="InvalidCommand",
                message=clip(problem, MAX_KEPT_TEXT),
                at=self._clock(),
            )
            await self.report(result)
        await self._settle(receipt, "term")
        return Handled("terminated", result)

    def _result(
        self,
        command: Command,
        *,
        ok: bool,
        applied: bool,
        state: Literal["running", "sleeping", "deleted"] | None = None,
        version: str | None = None,
        reason: str = "",
        message: str = "",
    ) -> CommandResult:
        spec = command.spec
        return CommandResult(
            op_id=command.op_id,
            cluster=self.cluster,
            kind=spec.kind,
            project=spec.project,
            name=spec.name,
            generation=command.generation,
            ok=ok,
            applied=applied,
            state=spec.state if state is None else state,
            version=spec.version if version is None else version,
            # Within the platform's bounds (schemas.messages): a longer one would be refused whole.
            reason=clip(reason, MAX_SHORT),
            message=clip(message, MAX_KEPT_TEXT),
            at=self._clock(),
        )

    async def report(self, result: CommandResult) -> ResultRecorded | None:
        """Ask lifecycle to record ``result`` until it answers; its answer (None: it refused the result,
        logged: asking again would get the same answer). Unanswered requests are asked again with jittered
        exponential backoff (a busy lifecycle's retry-after, when it gives one); the caller keeps its
        command in progress meanwhile."""
        what = f"result of {result.kind} {result.project}/{result.name} generation {result.generation}"
        attempt = 0
        # Soon again while nobody listens (lifecycle restarting), doubling after a timeout.
        retries = Retries(RECORD_BACKOFF)
        while True:
            try:
                answer = await self._record(result)
            except Overloaded as exc:
                delay = exc.retry_after * random.uniform(1.0, 1.0 + OVERLOAD_JITTER)
                logger.info("%s: %s; asking again in %.1fs", what, exc.description, delay)
            except (Unavailable, Internal) as exc:
                delay = retries.after(exc)
                attempt += 1
                level = logging.WARNING if attempt in (1, 10) or attempt % 100 == 0 else logging.DEBUG
                logger.log(level, "%s not recorded yet (attempt %d): %s; asking again", what, attempt, exc.description)
            except TetherError as exc:
                logger.error("%s refused by the platform: %s", what, exc.description)
                return None
            else:
                if attempt:
                    logger.info("%s recorded after %d attempts (%s)", what, attempt + 1, answer.outcome)
                elif answer.outcome in ("superseded", "unknown"):
                    logger.info("%s: %s (%s)", what, answer.outcome, answer.detail)
                return answer
            await asyncio.sleep(delay)

    @staticmethod
    async def _settle(receipt: Receipt, how: Literal["ack", "nak", "term"], delay: float | None = None) -> None:
        # An ack lost in a NATS failover (the consumer's leader moves) is tried again for a few seconds:
        # with one command in flight, an unacknowledged one holds the whole queue for the ack wait.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + (ACK_RETRY_FOR if how == "ack" else 0.0)
        attempt = 0
        while True:
            try:
                if how == "ack":
                    await receipt.ack()
                elif how == "nak":
                    await receipt.nak(delay)
                else:
                    await receipt.term()
                return
            except Unavailable as exc:
                pause = backoff_delay(attempt, base=ACK_BACKOFF[0], cap=ACK_BACKOFF[1])
                if loop.time() + pause > give_up:
                    # The server redelivers it after its ack wait; the revision check makes that harmless.
                    logger.warning("%s", exc.description)
                    return
                attempt += 1
                logger.info("%s; trying again", exc.description)
                await asyncio.sleep(pause)
