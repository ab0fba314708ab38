"""Where the Kubernetes gateway reaches an API server, and with which credentials (no ``kubernetes`` here)."""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path


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
    ca_data: str = ""
    """PEM, inline (a tenant's kubeconfig carries its CA and client certificate as data, never as paths)."""
    cert_data: str = ""
    key_data: str = ""

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https://"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file or None, cadata=self.ca_data or None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        elif self.cert_data:
            _load_inline_chain(ctx, self.cert_data, self.key_data)
        return ctx

    @property
    def tls_key(self) -> tuple[str, str, str, str, bool]:
        """What a client's connections depend on (a new token needs no new client)."""
        inline = hashlib.sha256(f"{self.ca_data}\0{self.cert_data}\0{self.key_data}".encode()).hexdigest()
        return (self.url, self.ca_file, self.cert_file, f"{self.key_file}\0{inline}", self.verify)


def _load_inline_chain(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """``ssl`` loads a client certificate from files only: private files that live for this call alone."""
    with tempfile.TemporaryDirectory(prefix="tether-gw-") as tmp:
        cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        for path, text in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        ctx.load_cert_chain(str(cert_path), str(key_path) if key else None)
