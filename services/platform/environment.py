"""The environment a platform service process is started with: known here, and only here.

``tether up`` (supervisor) and the tests' harness both start services with it; each variable is read by the
service's settings (``env(...)`` fields in its ``Settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.bus import identity

SERVICES = ("registry", "access", "lifecycle", "health", "api")
"""Every platform service, in start order (each runs as ``python -m services.<name>``)."""


@dataclass(frozen=True)
class PlatformPaths:
    """Where one platform's processes find the bus and its secrets."""

    nats_url: str
    """The URL(s) services dial."""

    auth_dir: Path
    """The NATS trust (``identity.prepare``): every service's ``.creds`` file and the system user's."""

    admin_token_file: Path
    """The first platform admin's API token (access creates the admin from it)."""

    ca_file: str = ""
    """The NATS CA (PEM) when NATS speaks TLS; empty otherwise."""


def platform_env(paths: PlatformPaths) -> dict[str, str]:
    """What every process of the platform gets (services and the local agent)."""
    return {
        "TETHER_NATS_URL": paths.nats_url,
        "TETHER_NATS_CREDS": str(paths.auth_dir / "platform.creds"),
        "TETHER_NATS_CA": paths.ca_file,
        "TETHER_PUBLIC_CA_FILE": paths.ca_file,
    }


@dataclass(frozen=True)
class HttpServing:
    """Where the API listens and, for HTTPS, its certificate and key (``services.platform.tls``)."""

    port: int
    host: str = ""
    """Listen address; empty: the API's default (loopback)."""
    cert: Path | None = None
    key: Path | None = None


def service_env(
    name: str,
    paths: PlatformPaths,
    *,
    http_port: int,
    public_nats_url: str = "",
    metrics_port: int | None = None,
    http: HttpServing | None = None,
) -> dict[str, str]:
    """What service ``name`` gets on top of ``platform_env``; ``http`` (the API's) wins over ``http_port``."""
    if name not in SERVICES:
        raise ValueError(f"no platform service {name!r}")
    # Its own NATS user: an allow-list of what it uses (services.bus.grants).
    extra = {"TETHER_NATS_CREDS": str(paths.auth_dir / identity.service_creds_file(name))}
    if metrics_port is not None:
        extra["TETHER_PROMETHEUS_PORT"] = str(metrics_port)
    if name == "registry":
        extra["TETHER_AUTH_DIR"] = str(paths.auth_dir)
    if name == "access":
        extra["TETHER_ADMIN_TOKEN_FILE"] = str(paths.admin_token_file)
    if name == "api":
        extra.update(_http_env(http or HttpServing(port=http_port)))
        if public_nats_url:
            extra["TETHER_PUBLIC_NATS_URL"] = public_nats_url
    return extra


def _http_env(http: HttpServing) -> dict[str, str]:
    env = {"TETHER_HTTP_PORT": str(http.port)}
    if http.host:
        env["TETHER_HTTP_HOST"] = http.host
    if http.cert and http.key:
        env.update(TETHER_HTTP_TLS_CERT=str(http.cert), TETHER_HTTP_TLS_KEY=str(http.key))
    return env
