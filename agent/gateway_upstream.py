"""Where the Kubernetes gateway reaches an API server, and with which credentials (no ``kubernetes`` here)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Upstream:
    """One Kubernetes API server as the agent reaches it (its own credentials, never a member's)."""

    url: str
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    authorization: str = ""
    """The ``Authorization`` header value (``Bearer ...``), empty with client certificates."""
    verify: bool = True

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https://"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        return ctx

    @property
    def tls_key(self) -> tuple[str, str, str, str, bool]:
        """What a client's connections depend on (a new token needs no new client)."""
        return (self.url, self.ca_file, self.cert_file, self.key_file, self.verify)
