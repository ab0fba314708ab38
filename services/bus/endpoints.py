"""Request/reply endpoints on NATS micro, and the client side that calls them.

Errors become a wire error ``(code, description)`` here, at the edge, and turn
back into the same ``TetherError`` kind on the calling side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind, Tracer

from schemas import tracing
from schemas.errors import TetherError, Unavailable, from_wire
from schemas.messages import M, Message, decode, encode

logger = logging.getLogger(__name__)

BUS_TROUBLE = (NatsTimeout, NoRespondersError, NoStreamResponseError, ServiceUnavailableError)
"""Errors from JetStream that pass (a leader election, a lost node): answered as Unavailable."""

ERROR_CODE = "Nats-Service-Error-Code"
ERROR_TEXT = "Nats-Service-Error"


class ServiceHost:
    """One NATS micro service with typed endpoints. ``stop()`` is safe to call twice."""

    def __init__(self, nc: Client, name: str, version: str, tracer: Tracer) -> None:
        self._nc = nc
        self._name = name
        self._version = version
        self._tracer = tracer
        self._service: Service | None = None
        self._pending: list[tuple[str, str, Callable[[Request], Awaitable[None]]]] = []
        self._inflight: set[asyncio.Task[None]] = set()

    def endpoint(
        self,
        subject: str,
        request_type: type[M],
        handler: Callable[[M], Awaitable[Message]],
    ) -> None:
        """Serve ``subject``: decode ``request_type``, call ``handler``, reply with its message."""
        name = subject.rsplit(".", 2)
        endpoint_name = "-".join(name[-2:]).replace("_", "-")

        async def handle(req: Request) -> None:
            ctx = tracing.extract(req.headers)
            with self._tracer.start_as_current_span(subject, context=ctx, kind=SpanKind.SERVER) as span:
                try:
                    message = decode(req.data, request_type)
                    reply = await handler(message)
                except TetherError as exc:
                    span.set_attribute("tether.error.code", exc.code)
                    await req.respond_error(exc.code, exc.description)
                    return
                except asyncio.CancelledError:
                    raise
                except BUS_TROUBLE as exc:
                    # JetStream did not answer (a leader election, a lost node): the caller may try again.
                    logger.warning("%s: %s", subject, exc or type(exc).__name__)
                    span.record_exception(exc)
                    await req.respond_error(Unavailable.code, f"{self._name}: NATS did not answer in time; try again")
                    return
                except Exception as exc:
                    logger.exception("%s: unexpected error", subject)
                    span.record_exception(exc)
                    await req.respond_error("500", f"internal error in {self._name}: {exc!r}")
                    return
                await req.respond(encode(reply))

        async def concurrent(req: Request) -> None:
            # micro runs one callback at a time per endpoint; handlers wait on
            # KV round trips, so let them overlap.
            task = asyncio.create_task(handle(req), name=f"{self._name}:{endpoint_name}")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        self._pending.append((endpoint_name, subject, concurrent))

    async def start(self) -> None:
        self._service = await add_service(
            self._nc, name=f"tether-{self._name}", version=self._version, queue_group=f"tether-{self._name}"
        )
        for endpoint_name, subject, handler in self._pending:
            await self._service.add_endpoint(name=endpoint_name, subject=subject, handler=handler)

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


async def call(nc: Client, subject: str, message: Message, reply_type: type[M], *, timeout: float = 5.0) -> M:
    """Request/reply with a typed answer; remote errors are raised as their TetherError kind."""
    try:
        msg = await nc.request(subject, encode(message), timeout=timeout, headers=tracing.inject())
    except NoRespondersError:
        raise Unavailable(f"no service answers on {subject}") from None
    except NatsTimeout:
        raise Unavailable(f"no reply on {subject} within {timeout:g}s") from None
    headers = msg.headers or {}
    if ERROR_CODE in headers:
        raise from_wire(headers[ERROR_CODE], headers.get(ERROR_TEXT, ""))
    return decode(msg.data, reply_type)


async def ping(nc: Client, service: str, *, timeout: float = 1.0) -> bool:
    """True when at least one instance of ``service`` answers the micro PING."""
    try:
        await nc.request(f"$SRV.PING.tether-{service}", b"", timeout=timeout)
    except (NoRespondersError, NatsTimeout):
        return False
    return True
