"""The command loop: this cluster's desired-state records from its consumer, one at a time, and the statuses of
workloads that settle after their command was applied.

Each command is applied in its own task, shielded, so an orderly stop lets the
apply, its result and its ack finish (``finish``, up to ``shutdown_timeout``);
anything cut short is redelivered on the next start and made harmless by the
revision check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
from opentelemetry.trace import Tracer

from agent.bus import CommandQueue, Connection
from agent.commands import CommandApplier
from agent.drivers import Driver, StatusReporting
from agent.errors import DriverError
from agent.statuses import StatusReporter
from agent.telemetry import AgentMetrics
from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import MAX_EARLIER_RESULTS, CommandResult, ResultRecorded

logger = logging.getLogger(__name__)

LEFT_OUT_OBJECTS = 10_000
"""Objects whose left-out results (``ResultRecorded.later``) this agent remembers at most (the oldest go)."""
RECORD_TIMEOUT = 5.0
"""Seconds to wait for lifecycle's answer to a result (it answers a queued one within 2 s or says when to
come back)."""
LINK_WAIT = 60.0
"""Seconds a result waits for a link that is down before it is asked anyway (and fails, and is retried)."""
STATUS_INTERVAL = 2.0
"""Seconds at most between two looks at the workloads' status (a tenant becoming Ready is reported within it)."""


class LeftOut:
    """Per object, the generations this agent applied (or failed) whose results lifecycle left out of the record
    while a newer generation waited for this cluster (``ResultRecorded.later``: written then, the record would
    be a copy of the waiting command at a later position of the stream). They go with the object's next result
    (``CommandResult.earlier``), so their operations end applied, not superseded. In memory only: after a
    restart they end superseded (the audit says less, nothing is applied differently)."""

    def __init__(self, limit: int = LEFT_OUT_OBJECTS) -> None:
        self._limit = limit
        self._by_object: dict[tuple[str, str, str], tuple[int, ...]] = {}

    def attach(self, result: CommandResult) -> CommandResult:
        """``result`` with the object's left-out generations, if any."""
        earlier = self._by_object.get((result.kind, result.project, result.name))
        return msgspec.structs.replace(result, earlier=earlier) if earlier else result

    def note(self, result: CommandResult, answer: ResultRecorded) -> None:
        """After lifecycle's ``answer`` to ``result`` (sent through ``attach``): any answer but ``later`` took
        the generations carried (or no longer needs them); ``later`` adds the result's own."""
        key = (result.kind, result.project, result.name)
        carried = self._by_object.pop(key, ())
        if not answer.later:
            return
        self._by_object[key] = tuple(sorted({*carried, result.generation}))[-MAX_EARLIER_RESULTS:]
        while len(self._by_object) > self._limit:
            self._by_object.pop(next(iter(self._by_object)))


class CommandLoop:
    """Fetches, applies and settles this cluster's commands until ``stop()``."""

    def __init__(
        self,
        conn: Connection,
        cluster: str,
        driver: Driver,
        *,
        on_missing: Callable[[], None],
        tracer: Tracer | None = None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self._conn = conn
        self._driver_name = driver.name
        # A consumer found missing (its stream re-created) is created again by the platform at a hello.
        self.queue = CommandQueue(conn, cluster, on_missing=on_missing)
        conn.on_reconnected(self.queue.invalidate)
        self._result_subject = subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, cluster)
        self.left_out = LeftOut()
        self._one_result = asyncio.Lock()
        """One result request at a time, command path and statuses together: lifecycle gets them in order."""
        self.applier = CommandApplier(cluster, driver, self.record_result, tracer=tracer, metrics=metrics)
        self.statuses: StatusReporter | None = None
        if isinstance(driver, StatusReporting):
            self.statuses = StatusReporter(cluster, driver, self._record)
        self.in_flight: asyncio.Task[object] | None = None
        self._stopping = asyncio.Event()

    async def _record(self, result: CommandResult) -> ResultRecorded:
        async with self._one_result:
            # Asked once the link is back, not into an outage: there each attempt timed out and doubled the
            # next wait (up to 10 s), and a result applied just before NATS restarted was recorded ~20 s
            # after the others (a restart at 10,000 agents: the last of 1,000 pending at 56 s, p90 36 s).
            await self._conn.linked(LINK_WAIT)
            answer = await self._conn.request(
                self._result_subject, self.left_out.attach(result), ResultRecorded, RECORD_TIMEOUT
            )
            self.left_out.note(result, answer)
            return answer

    async def record_result(self, result: CommandResult) -> ResultRecorded:
        answer = await self._record(result)
        if self.statuses is not None:
            self.statuses.note(result)
        return answer

    def stop(self) -> None:
        """Fetch no more; the command being applied goes on (``finish``)."""
        self._stopping.set()

    async def run(self) -> None:
        """This cluster's commands, one at a time, until the loop is stopped."""
        while not self._stopping.is_set():
            delivery = await self.queue.next()
            if delivery is None:
                continue
            if self._stopping.is_set():
                # Fetched as the stop began: leave it for the next start, at once.
                with contextlib.suppress(Unavailable):
                    await delivery.nak()
                return
            # Its own task, shielded: an orderly stop lets the apply and its result finish.
            self.in_flight = asyncio.create_task(self.applier.handle(delivery), name="agent-command-apply")
            try:
                await asyncio.shield(self.in_flight)
            finally:
                if self.in_flight.done():
                    self.in_flight = None

    async def finish(self, timeout: float) -> None:
        """Let the command being applied finish (apply, result, ack), for up to ``timeout``."""
        task = self.in_flight
        if task is None or task.done():
            return
        logger.info("stopping: finishing the command being applied")
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            logger.warning(
                "stopping: the command being applied did not finish within %gs; it will be delivered again", timeout
            )
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            logger.error("the command being applied failed: %r", task.exception())

    async def report_statuses(self, interval: Callable[[], float]) -> None:
        """Every few seconds: what settled since (a tenant became Ready, a namespace is gone) goes out."""
        reporter = self.statuses
        if reporter is None:
            return
        every = min(interval(), STATUS_INTERVAL)
        while True:
            await asyncio.sleep(every)
            if not self._conn.is_connected:
                continue
            try:
                await reporter.check()
            except asyncio.CancelledError:
                raise
            except DriverError as exc:
                logger.debug("cannot read the workloads' status: %s", exc)
            except Exception:
                logger.exception("the %s driver failed to report its workloads' status", self._driver_name)

    async def close(self) -> None:
        await self.queue.close()
