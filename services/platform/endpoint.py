"""Where ``tether up``'s API listens and how this machine reaches and verifies it (HTTPS by default)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from services.platform.environment import HttpServing
from services.platform.tls import TlsFiles


@dataclass
class ApiEndpoint:
    host: str
    """Listen address."""
    port: int
    files: TlsFiles | None = None
    """The CA, certificate and key it serves HTTPS with; None: plain HTTP."""

    @property
    def url(self) -> str:
        """Where this machine reaches the API (loopback when it listens on every address)."""
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"{'https' if self.files else 'http'}://{host}:{self.port}"

    @property
    def ca_file(self) -> str:
        """The CA the API's certificate verifies with ("" over plain HTTP)."""
        return str(self.files.ca) if self.files else ""

    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client of this machine verifies the API with: the platform's CA, only it."""
        return ssl.create_default_context(cafile=self.ca_file) if self.files else True

    def serving(self) -> HttpServing:
        files = self.files
        return HttpServing(self.port, self.host, files.cert if files else None, files.key if files else None)

    def lines(self, public_hosts: list[str]) -> list[str]:
        """What ``tether up`` prints for members and other machines."""
        if not self.files:
            return ["the API speaks plain HTTP (--insecure-http): kubectl will send it no credentials"]
        lines = [f"API CA certificate (clients verify the API with it): {self.files.ca}"]
        lines += [f"from other machines: https://{host}:{self.port}" for host in public_hosts]
        if public_hosts and self.host.startswith(("127.", "localhost", "::1")):
            lines.append(f"the API listens on {self.host} only: --http-host 0.0.0.0 lets other machines reach it")
        return lines
