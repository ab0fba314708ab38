"""Connecting a platform service to NATS: reconnect forever, with jittered backoff.

A connection the server closes for good (nats-py does not reconnect after some server errors, e.g. an
authorization violation) ends the process with a non-zero code (``running.connection_lost``): a service
that is alive but off the bus helps nobody, and its supervisor restarts a dead one."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

from nats.aio.client import Client
from nats.errors import SlowConsumerError

from schemas.errors import describe
from schemas.retrying import backoff_delay
from services.bus import running
from services.bus.limits import GuardedClient
from services.bus.settings import BusSettings
from services.bus.watchdog import LinkWatchdog, WatchdogTimes

logger = logging.getLogger(__name__)

SLOW_CONSUMER_REPORT_EVERY = 5.0
"""Seconds between log lines about one subscription's dropped messages (not one line per message)."""


class _Drops:
    """nats-py calls the error callback once per message it drops (a subscription's pending limit reached):
    counted per subscription (``GuardedClient.dropped``), said once in a while rather than once a message."""

    def __init__(self, name: str, nc: GuardedClient) -> None:
        self._name, self._nc = name, nc
        self._reported: dict[int, tuple[float, int]] = {}
        """Per subscription id: when its drops were last said, and how many there were then."""

    def count(self, exc: SlowConsumerError) -> None:
        dropped = self._nc.dropped
        dropped[exc.sid] += 1
        at, told = self._reported.get(exc.sid, (-SLOW_CONSUMER_REPORT_EVERY, 0))
        now = time.monotonic()
        if now - at >= SLOW_CONSUMER_REPORT_EVERY:
            self._reported[exc.sid] = (now, dropped[exc.sid])
            logger.warning(
                "nats (%s): slow consumer on %s: %d message(s) dropped since the last report",
                self._name,
                exc.subject,
                dropped[exc.sid] - told,
            )


def _jittered_reconnects(watchdog: LinkWatchdog) -> tuple[Any, Any]:
    """A server picker with jittered exponential delay, and the callback that resets it."""
    attempts = 0

    def pick(servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        nonlocal attempts
        delay = backoff_delay(attempts, base=0.25, cap=5.0) if attempts else 0.0
        attempts += 1
        watchdog.attempt()
        return servers[attempts % len(servers)], delay

    async def reset() -> None:
        nonlocal attempts
        attempts = 0

    return pick, reset


async def connect(settings: BusSettings, name: str, watchdog_times: WatchdogTimes = WatchdogTimes()) -> Client:
    """Connect as service ``name``; the first connect retries until it succeeds."""
    nc = GuardedClient()
    nc.watchdog = watchdog = LinkWatchdog(name, nc, watchdog_times)
    pick, reset = _jittered_reconnects(watchdog)

    drops = _Drops(name, nc)

    async def on_error(exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            drops.count(exc)
            return
        # A connect that timed out is a bare TimeoutError: its text is empty, so say what it was.
        logger.warning("nats (%s): %s", name, describe(exc))

    async def on_reconnected() -> None:
        await reset()
        watchdog.up()
        logger.info("nats (%s): reconnected", name)
        for hook in list(nc.reconnected_hooks):
            hook()

    async def on_disconnected() -> None:
        logger.warning("nats (%s): disconnected", name)
        if not nc.closing:
            watchdog.down()

    async def on_closed() -> None:
        if nc.closing:
            return
        logger.critical("nats (%s): the server closed the connection for good (%s)", name, nc.last_error)
        running.connection_lost(name)

    auth: dict[str, Any] = {}
    if settings.ca_file or any(s.startswith("tls://") for s in settings.servers):
        auth["tls"] = ssl.create_default_context(cafile=settings.ca_file)
    if settings.creds_file:
        auth["user_credentials"] = settings.creds_file
    elif settings.user:
        auth["user"] = settings.user
        auth["password"] = settings.password
    await nc.connect(
        settings.servers,
        name=f"tether-{name}",
        max_reconnect_attempts=-1,
        allow_reconnect=True,
        connect_timeout=settings.connect_timeout,
        reconnect_to_server_handler=pick,
        error_cb=on_error,
        reconnected_cb=on_reconnected,
        disconnected_cb=on_disconnected,
        closed_cb=on_closed,
        ping_interval=10,
        max_outstanding_pings=3,
        **auth,
    )
    return nc


async def close(nc: Client, timeout: float = 5.0) -> None:
    """Drain (finish handling what was received, flush what was sent), then close; never hang."""
    if isinstance(nc, GuardedClient):
        nc.closing = True
        if nc.watchdog is not None:
            await nc.watchdog.stop()
    try:
        await asyncio.wait_for(nc.drain(), timeout)
    except Exception as exc:  # TimeoutError, or the connection already gone
        logger.warning("nats: drain did not finish (%s); closing", describe(exc))
    finally:
        if not nc.is_closed:
            try:
                await nc.close()
            except OSError as exc:  # stopped mid-reconnect: the socket is already gone, so closed is what we wanted
                logger.warning("nats: close found the connection already broken (%s)", describe(exc))
