"""The platform's CA is made once and kept; its server certificate is issued again only when it must be."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
from pathlib import Path

import pytest
from cryptography import x509

from services.cli.config import Context, known_ca_file, load_context, save_context, save_up_context
from services.cli.kubeconfig import build
from services.platform.tls import ensure_tls


def names(cert: Path) -> set[str]:
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return {str(n.value) for n in sans.value}


def test_the_ca_is_kept_and_the_server_certificate_follows_the_names_asked_for(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path)
    ca, cert = first.ca.read_bytes(), first.cert.read_bytes()
    assert {"localhost", "127.0.0.1", "::1"} <= names(first.cert)
    assert os.stat(first.key).st_mode & 0o777 == 0o600 and os.stat(tmp_path / "ca-key.pem").st_mode & 0o777 == 0o600

    again = ensure_tls(tmp_path)
    assert again.cert.read_bytes() == cert, "a certificate that still covers every name is kept"

    wider = ensure_tls(tmp_path, hosts=["tether.example.com", "10.1.2.3"])
    assert wider.ca.read_bytes() == ca, "the CA never changes: kubeconfigs and contexts carry it"
    assert wider.cert.read_bytes() != cert
    assert {"tether.example.com", str(ipaddress.ip_address("10.1.2.3"))} <= names(wider.cert)
    issued = x509.load_pem_x509_certificate(wider.cert.read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))


def test_a_server_certificate_near_its_end_or_not_the_cas_is_issued_again(tmp_path: Path) -> None:
    ensure_tls(tmp_path)
    (tmp_path / "server.pem").unlink()
    first = ensure_tls(tmp_path, days=20)  # inside the 30 days before its end: renewed at the next start
    cert = first.cert.read_bytes()
    assert ensure_tls(tmp_path).cert.read_bytes() != cert
    foreign = ensure_tls(tmp_path / "other")
    (tmp_path / "server.pem").write_bytes(foreign.cert.read_bytes())
    (tmp_path / "server-key.pem").write_bytes(foreign.key.read_bytes())
    fixed = ensure_tls(tmp_path)
    x509.load_pem_x509_certificate(fixed.cert.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(fixed.ca.read_bytes())
    )
    end = x509.load_pem_x509_certificate(fixed.cert.read_bytes()).not_valid_after_utc
    assert end - dt.datetime.now(dt.UTC) > dt.timedelta(days=800)


def test_contexts_carry_the_ca_and_kubeconfigs_embed_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_CONFIG", str(tmp_path / "config.json"))
    for var in ("TETHER_CONTEXT", "TETHER_SERVER", "TETHER_TOKEN", "TETHER_CA_FILE"):
        monkeypatch.delenv(var, raising=False)
    files = ensure_tls(tmp_path / "data" / "tls")
    save_up_context("https://127.0.0.1:8080", "tat_admin", tmp_path / "data", str(files.ca))
    assert load_context().ca_file == str(files.ca)
    # Another user of the same platform: the CA is found by server; another server has none.
    assert known_ca_file("https://127.0.0.1:8080/") == str(files.ca)
    assert known_ca_file("https://elsewhere:8080") == ""
    save_context("https://127.0.0.1:8080", "tat_bob", "bob@127.0.0.1:8080", user="bob", ca_file=str(files.ca))
    stored = json.loads((tmp_path / "config.json").read_text())["contexts"]["bob@127.0.0.1:8080"]
    assert stored["ca_file"] == str(files.ca)

    ctx = Context(server="https://127.0.0.1:8080", token="tat_bob", name="bob@127.0.0.1:8080", ca_file=str(files.ca))
    config = build("space", "demo", "s1", ctx)
    cluster = config["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == files.ca.read_bytes()
    args = config["users"][0]["user"]["exec"]["args"]
    assert args[-5:] == ["--context", "bob@127.0.0.1:8080", "token", "--server", "https://127.0.0.1:8080"]
    assert "tat_bob" not in json.dumps(config)
    plain = build("space", "demo", "s1", Context(server="http://127.0.0.1:8080", token="t", ca_file=str(files.ca)))
    assert "certificate-authority-data" not in plain["clusters"][0]["cluster"]
