"""The first connect: retried forever with jittered backoff; refused for good only for a reason that
waiting cannot fix (an invalid URL, an unverifiable certificate, credentials the broker refuses).

nats-py (2.16) retries a failed *first* connect on its own, forever and at a
fixed ``reconnect_time_wait`` when ``max_reconnect_attempts=-1``. To get the
jitter there too, each first-connect attempt is one bounded pass over the
servers (``max_reconnect_attempts=1``) followed by our own backoff; once
connected, the client is switched to ``-1`` so reconnects never stop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
from typing import Any

import nkeys
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoServersError

from agent.bus.client import PatchedClient, is_auth_error, servers_text
from agent.bus.events import LinkEvents
from agent.bus.messages import NatsIdentity
from agent.errors import PermanentError
from agent.settings import AgentSettings
from schemas.credentials import read_creds
from schemas.errors import Unauthenticated
from schemas.retrying import backoff_delay
from schemas.tasks import unless

logger = logging.getLogger(__name__)

FIRST_CONNECT_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between first-connect attempts."""


def _unverifiable(detail: object) -> PermanentError:
    return PermanentError(
        f"the NATS server's TLS certificate cannot be verified ({detail}): pass the platform's CA with --ca-file"
    )


class UserCreds:
    """A NATS user's JWT and the nonce signature, read afresh at every connect (a renewal replaces the file;
    a reconnect presents the new JWT) in one buffered read of the ``.creds`` file.

    nats-py's own reader (``user_credentials=path``) finds the seed reading the unbuffered file line by line:
    one system call per byte, about 1,100 per connect, 0.55 ms of CPU measured (8.6 % of the benchmark's
    agent workers while 1,000 agents connected, more than the rest of the handshake)."""

    def __init__(self, identity: NatsIdentity) -> None:
        self.identity = identity

    def _read(self) -> tuple[str, str]:
        ident = self.identity
        if ident.in_memory:
            text = ident.creds
        else:
            with open(ident.creds, encoding="utf-8") as f:  # OSError: retried like an unreachable server
                text = f.read()
        try:
            return read_creds(text)
        except Unauthenticated:
            where = "the connect token" if ident.in_memory else ident.creds
            raise PermanentError(f"malformed NATS credentials in {where}") from None

    def jwt(self) -> bytes:
        return self._read()[0].encode()

    def sign(self, nonce: str) -> bytes:
        key = nkeys.from_seed(bytearray(self._read()[1].encode()))
        try:
            return base64.b64encode(key.sign(nonce.encode()))
        finally:
            key.wipe()


class Dialer:
    """Connects one client with the link's callbacks, as ``identity`` (or none, on an open NATS)."""

    def __init__(
        self, settings: AgentSettings, events: LinkEvents, identity: NatsIdentity | None, inbox_prefix: str | None
    ) -> None:
        self.settings = settings
        self.events = events
        self.identity = identity
        self.inbox_prefix = inbox_prefix

    def _options(self, servers: list[str]) -> dict[str, Any]:
        settings, options = self.settings, dict[str, Any]()
        if settings.ca_file or any(s.startswith("tls://") for s in servers):
            try:
                options["tls"] = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise PermanentError(f"cannot use CA file {settings.ca_file}: {exc}") from None
        if self.inbox_prefix:
            options["inbox_prefix"] = self.inbox_prefix
        if (ident := self.identity) is not None:
            creds = UserCreds(ident)
            options["user_jwt_cb"], options["signature_cb"] = creds.jwt, creds.sign
            options["inbox_prefix"] = ident.inbox_prefix
        return options

    async def _attempt(self, servers: list[str]) -> Client:
        nc, events = PatchedClient(), self.events
        try:
            await nc.connect(
                servers,
                name=events.name,
                **self._options(servers),
                allow_reconnect=True,
                # One bounded pass over the servers; switched to -1 (forever) once connected.
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=5,
                # A silently dead link is found after 3 unanswered PINGs (45-60 s). Every 5 s doubled each idle
                # agent's messages beside its heartbeat (10,000 agents: 2,000 PINGs and PONGs a second); whether
                # the cluster is online is health's judgement on heartbeats (15 s), not this.
                ping_interval=15,
                max_outstanding_pings=3,
                drain_timeout=max(1, round(self.settings.shutdown_timeout)),
                reconnect_to_server_handler=events.pick_server,
                error_cb=events.error,
                disconnected_cb=events.disconnected,
                reconnected_cb=events.reconnected,
                closed_cb=events.closed,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 2  # only bounds how long close() waits for a reconnect task
        return nc

    async def _attempt_or_fatal(self, servers: list[str]) -> Client:
        """One connect attempt, abandoned at once when the server's certificate cannot be verified
        (nats-py reports that through the error callback and keeps the attempt waiting)."""
        self.events.fatal.clear()
        attempt = await unless(self._attempt(servers), self.events.fatal.wait())
        if attempt is None:
            error = self.events.last_error
            raise _unverifiable(error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else error)
        return attempt.result()

    def _no_server(self) -> object:
        """Why no server took us; PermanentError when waiting cannot help."""
        error = self.events.last_error
        if isinstance(error, ssl.SSLCertVerificationError):
            raise _unverifiable(error.verify_message)
        if is_auth_error(error):
            refused = (
                self.identity.refused
                if self.identity is not None
                else "NATS requires credentials and this agent has none: use the whole connect token "
                "printed by 'tether cluster connect'"
            )
            raise PermanentError(f"{refused} (NATS: {error})")
        return error or "no server answered"

    async def dial(self) -> Client:
        """Connect, retrying forever with jittered backoff.

        PermanentError on an invalid URL, or when the broker refuses our credentials.
        """
        servers = self.settings.servers
        if not servers:
            raise PermanentError("no NATS server given: pass --server (or set TETHER_AGENT_SERVER)")
        base, cap = FIRST_CONNECT_BACKOFF
        attempt = 0
        while True:
            self.events.last_error = None
            try:
                return await self._attempt_or_fatal(servers)
            except NoServersError:
                try:
                    reason = self._no_server()
                except PermanentError as exc:
                    raise exc from None
            except NatsError as exc:
                # Raised before any dial: the URL list itself is unusable.
                raise PermanentError(f"invalid NATS server URL in {servers_text(servers)}: {exc}") from None
            except ssl.SSLCertVerificationError as exc:
                raise _unverifiable(exc.verify_message) from None
            except (TimeoutError, OSError) as exc:
                reason = exc
            delay = backoff_delay(attempt, base=base, cap=cap)
            attempt += 1
            logger.warning(
                "cannot connect to NATS at %s (attempt %d): %s; retrying in %.1fs",
                servers_text(servers),
                attempt,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
