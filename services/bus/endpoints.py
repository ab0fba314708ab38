"""Request/reply endpoints on NATS micro, and the client side that calls them.

Errors become a wire error ``(code, description)`` here, at the edge, and turn
back into the same ``TetherError`` kind on the calling side.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig
from opentelemetry.trace import Span, SpanKind, Tracer

from schemas import subjects, tracing
from schemas.credentials import agent_inbox_prefix
from schemas.errors import RETRY_AFTER_HEADER, Overloaded, TetherError, Unavailable, describe, from_wire
from schemas.messages import M, Message, decode, encode
from schemas.names import dns1123_label_error
from services.bus.admission import Admission
from services.bus.interface import Endpoint, Endpoints, Host
from services.bus.limits import wire_size
from services.bus.patience import until_done

logger = logging.getLogger(__name__)

BUS_TROUBLE = (NatsTimeout, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
"""Errors from JetStream that pass (a leader election, a lost node): answered as Unavailable."""

ERROR_CODE = "Nats-Service-Error-Code"
ERROR_TEXT = "Nats-Service-Error"


PLATFORM_INBOX = "_INBOX."
"""Where the platform's own callers (services, API, CLI through the API) get their replies: nats-py's default
inbox prefix. Agents use their own (``_INBOX_<cluster>``), so no agent can read a platform reply."""


def error_body(code: str, description: str) -> bytes:
    """An error reply is never empty: the JetStream API takes an empty body as a valid request (delete,
    purge), so an empty error reflected there would be one."""
    return json.dumps({"error": {"code": code, "description": description}}).encode()


class ServiceHost(Host):
    """One NATS micro service with typed endpoints. ``stop()`` is safe to call twice.

    Every reply goes only where its caller could read it: a platform endpoint answers only platform inboxes
    (``_INBOX.``), an agent endpoint only the inbox of the cluster named in its subject, which the broker
    lets only that cluster's agent publish on. Anything else is dropped with a log line: a reply subject is
    the caller's choice, and this service's NATS user may publish where the caller may not.
    """

    def __init__(self, nc: Client, name: str, version: str, tracer: Tracer) -> None:
        self._nc = nc
        self._name = name
        self._version = version
        self._tracer = tracer
        self._service: Service | None = None
        self._pending: list[tuple[str, str, Callable[[Request], Awaitable[None]]]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self.refused_replies = 0
        """Requests dropped because of where they wanted the reply (the bus contract suite reads it)."""

    def endpoint(
        self,
        subject: str,
        request_type: type[M],
        handler: Callable[[M], Awaitable[Message]],
    ) -> None:
        """Serve ``subject`` to the platform: decode ``request_type``, call ``handler``, reply with its message."""
        name = subject.rsplit(".", 2)
        endpoint_name = "-".join(name[-2:]).replace("_", "-")

        async def handle(req: Request) -> None:
            if not self._reply_allowed(req, PLATFORM_INBOX):
                return
            await self._answer(req, subject, lambda: self._decoded(req, request_type, handler))

        self._pending.append((endpoint_name, subject, self._concurrent(handle, endpoint_name)))

    def agent_endpoint(self, served: Endpoint) -> None:
        """Serve ``subjects.agent_call(base, <cluster>)`` for every cluster: ``handler(message, cluster)``, where
        ``cluster`` is the one in the subject (the broker's word for who is calling, not the message's).
        With ``admission``, a bounded queue: beyond it callers are told when to come back (``Overloaded``)."""
        base, request_type, handler = served.subject, served.request_type, served.handler
        parts = base.rsplit(".", 2)
        endpoint_name = "-".join(parts[-2:]).replace("_", "-")
        limits = served.admission
        queue = Admission(f"{self._name} {endpoint_name}", limits) if limits else None

        async def handle(req: Request) -> None:
            cluster = agent_caller(base, req.subject)
            if cluster is None:
                logger.warning("%s: dropped a request on %r: not a cluster's subject", self._name, req.subject)
                return
            if not self._reply_allowed(req, f"{agent_inbox_prefix(cluster)}."):
                return

            async def run() -> Message:
                return await handler(decode(req.data, request_type), cluster)

            await self._answer(req, base, run if queue is None else lambda: queue.run(run))

        self._pending.append((endpoint_name, subjects.agent_calls(base), self._concurrent(handle, endpoint_name)))

    def add(self, endpoints: Endpoints) -> None:
        for item in endpoints.items:
            if item.caller == "agent":
                self.agent_endpoint(item)
            else:
                self.endpoint(item.subject, item.request_type, item.handler)

    def _reply_allowed(self, req: Request, prefix: str) -> bool:
        reply = _reply_of(req)
        if reply_allowed(reply, prefix):
            return True
        self.refused_replies += 1
        logger.warning(
            "%s: dropped a request on %s: its reply subject %r is not under %r", self._name, req.subject, reply, prefix
        )
        return False

    @staticmethod
    async def _decoded(req: Request, request_type: type[M], handler: Callable[[M], Awaitable[Message]]) -> Message:
        return await handler(decode(req.data, request_type))

    def _concurrent(
        self, handle: Callable[[Request], Coroutine[Any, Any, None]], name: str
    ) -> Callable[[Request], Awaitable[None]]:
        async def concurrent(req: Request) -> None:
            # micro runs one callback at a time per endpoint; handlers wait on
            # KV round trips, so let them overlap.
            task = asyncio.create_task(handle(req), name=f"{self._name}:{name}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return concurrent

    async def _answer(self, req: Request, subject: str, run: Callable[[], Awaitable[Message]]) -> None:
        ctx = tracing.extract(req.headers)
        with self._tracer.start_as_current_span(subject, context=ctx, kind=SpanKind.SERVER) as span:
            data, headers = await answer(self._name, subject, run, self._nc.max_payload, span)
        await _send(req, data, headers)

    async def start(self) -> None:
        # A description and metadata always (nats-py sends null for unset ones, which the micro schema
        # io.nats.micro.v1.info_response refuses: `nats schema validate` and stricter clients reject the reply).
        config = ServiceConfig(
            name=f"tether-{self._name}",
            version=self._version,
            description=f"Tether {self._name} service",
            metadata={"tether.service": self._name},
            queue_group=f"tether-{self._name}",
        )
        self._service = service = Service(self._nc, config)
        # Its start subscribes, then flushes (10 s); a start again after a flush that timed out on a busy server
        # finds the subscriptions made and returns (the flush below is behind them too).
        await until_done("starting the service", service.start)
        for endpoint_name, subject, handler in self._pending:
            await service.add_endpoint(name=endpoint_name, subject=subject, handler=handler)
        # Started means subscribed: nats-py only buffers the subscriptions, and a request another connection
        # sends before the server has read them finds no responders. A flush is a round trip behind them; on a
        # server busy with a fleet's reconnects it took longer than one flush waits (10 s), and that ended a
        # restarted registry and health (tests/bench/RESULTS.md, thirty-seventh stop).
        await until_done("subscribing the endpoints", self._nc.flush)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking requests, then let in-flight ones finish (up to ``timeout``)."""
        service, self._service = self._service, None
        if service is not None:
            await service.stop()
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                task.cancel()

    async def __aenter__(self) -> ServiceHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


MAX_ERROR_TEXT = 4096
"""Characters of an error description sent back (a header: it must stay well below the max payload)."""


def agent_caller(base: str, subject: str) -> str | None:
    """The cluster an agent call on ``subject`` comes from (None: not a cluster's subject)."""
    cluster = subjects.cluster_of_agent_call(base, subject)
    if cluster is None or dns1123_label_error(cluster) is not None:
        return None
    return cluster


def reply_allowed(reply: str, prefix: str) -> bool:
    """True when ``reply`` is a concrete subject under ``prefix`` (the only inboxes a caller may name)."""
    return reply.startswith(prefix) and len(reply) > len(prefix) and not any(c in reply for c in "*> \t")


def error_reply(code: str, description: str) -> tuple[bytes, dict[str, str]]:
    description = description[:MAX_ERROR_TEXT]
    return error_body(code, description), {ERROR_CODE: code, ERROR_TEXT: description}


async def answer(
    service: str, subject: str, run: Callable[[], Awaitable[Message]], max_payload: int, span: Span
) -> tuple[bytes, dict[str, str] | None]:
    """Run a handler; its reply, or the wire error ``(code, description)`` it became: errors turn into
    the wire form here, at the edge, and nowhere else."""
    try:
        reply = await run()
    except Overloaded as exc:
        span.set_attribute("tether.error.code", exc.code)
        data, headers = error_reply(exc.code, exc.description)
        return data, {**headers, RETRY_AFTER_HEADER: f"{exc.retry_after:.3f}"}
    except TetherError as exc:
        span.set_attribute("tether.error.code", exc.code)
        return error_reply(exc.code, exc.description)
    except asyncio.CancelledError:
        raise
    except BUS_TROUBLE as exc:
        # JetStream did not answer (a leader election, a lost node): the caller may try again.
        logger.warning("%s: %s", subject, describe(exc))
        span.record_exception(exc)
        return error_reply(Unavailable.code, f"{service}: NATS did not answer in time; try again")
    except Exception as exc:
        logger.exception("%s: unexpected error", subject)
        span.record_exception(exc)
        return error_reply("500", f"internal error in {service}: {exc!r}")
    data = encode(reply)
    if wire_size(data, None) > max_payload:
        logger.error("%s: reply of %d bytes is over the server's max payload; answered an error", subject, len(data))
        return error_reply("500", f"{service}: the answer is too large to send ({len(data)} bytes)")
    return data, None


def remote_error(headers: Mapping[str, str] | None) -> TetherError | None:
    """The error a reply carries, as its ``TetherError`` kind (None: a normal reply)."""
    if headers and ERROR_CODE in headers:
        return from_wire(headers[ERROR_CODE], headers.get(ERROR_TEXT, ""), headers.get(RETRY_AFTER_HEADER))
    return None


def _reply_of(req: Request) -> str:
    # nats-py's micro Request keeps its Msg private and exposes no reply subject.
    return str(req._msg.reply or "")


async def _send(req: Request, data: bytes, headers: dict[str, str] | None = None) -> None:
    try:
        await req.respond(data, headers=headers)
    except NatsError as exc:
        logger.warning("reply on %s not sent: %s", req.subject, describe(exc))


async def call(nc: Client, subject: str, message: Message, reply_type: type[M], *, timeout: float = 5.0) -> M:
    """Request/reply with a typed answer; remote errors are raised as their TetherError kind."""
    try:
        msg = await nc.request(subject, encode(message), timeout=timeout, headers=tracing.inject())
    except NoRespondersError:
        raise Unavailable(f"no service answers on {subject}") from None
    except NatsTimeout:
        raise Unavailable(f"no reply on {subject} within {timeout:g}s") from None
    error = remote_error(msg.headers)
    if error is not None:
        raise error
    return decode(msg.data, reply_type)


async def ping(nc: Client, service: str, *, timeout: float = 1.0) -> bool:
    """True when at least one instance of ``service`` answers the micro PING."""
    try:
        await nc.request(f"$SRV.PING.tether-{service}", b"", timeout=timeout)
    except (NoRespondersError, NatsTimeout):
        return False
    return True
