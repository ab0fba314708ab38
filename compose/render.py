"""The ``trust`` init service of compose: the platform's NATS trust and secrets, before anything else starts.

Run once per ``docker compose up`` (idempotent: an existing trust and admin token are kept):

- ``<secrets>/auth/``: the trust (``trust.json``) and the creds the platform uses, via
  ``services.bus.identity.prepare``: ``platform.creds`` for the services, ``sys.creds`` for the registry's
  account updates;
- ``<secrets>/admin.token``: the first platform admin's API token (access creates the admin from it);
- ``<nats-auth>/auth.conf``: the operator-mode block every NATS node includes (``compose/nats/nats-N.conf``):
  operator JWT, system account, a full account resolver under ``--resolver-dir`` (on each node's own
  volume), both accounts preloaded. It holds JWTs only, no seeds: the NATS nodes never see a secret.
- TLS for NATS (``--pki``, ``--nats-tls``, ``--nats-ca``): a private CA and one server certificate for
  nats-1..3, localhost and 127.0.0.1 (``services.platform.tls.ensure_tls``, made once under ``<pki>``, where
  the CA's key stays); the certificate, its key and the CA go to ``<nats-tls>`` (the NATS nodes only), the CA
  certificate alone to ``<nats-ca>`` (services and agents verify NATS with it).

    python render.py --secrets /var/lib/tether/secrets --nats-auth /var/lib/tether/nats-auth
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import shutil
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.bus import identity
from services.platform.tls import ensure_tls, general_names

RESOLVER_DIR = Path("/data/resolver")
"""Where each NATS node keeps account JWTs pushed at runtime (revocations): its own data volume."""
NATS_HOSTS = ["nats-1", "nats-2", "nats-3", "localhost", "127.0.0.1"]
"""The names the NATS certificate is valid for: the nodes on the compose network, and this machine."""


def _publish(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically, readable by the NATS nodes' and services' own users: each
    target volume is mounted only by who may read it (the compose file says which)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def route_certificate(pki_dir: Path, days: int = 825) -> tuple[Path, Path]:
    """A certificate for the cluster routes, signed by the CA ``ensure_tls`` made, once.

    A node that dials a route presents its certificate as a TLS client and nats-server verifies it, so the
    route certificate needs client auth besides server auth; ensure_tls's is a server certificate only."""
    cert_path, key_path = pki_dir / "route.pem", pki_dir / "route-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca-key.pem").read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{pki_dir / 'ca-key.pem'}: not the EC key ensure_tls makes")
    sans = general_names(NATS_HOSTS)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tether-nats-route")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    identity.write_secret(key_path, key_pem.decode())
    identity.write_secret(cert_path, cert.public_bytes(serialization.Encoding.PEM).decode())
    return cert_path, key_path


def nats_tls(pki_dir: Path, nats_tls_dir: Path, ca_dir: Path) -> None:
    """Make the CA and the NATS certificates once (kept on later runs), then hand each volume its part."""
    files = ensure_tls(pki_dir, hosts=NATS_HOSTS)
    route_cert, route_key = route_certificate(pki_dir)
    _publish(files.cert, nats_tls_dir / "server.pem")
    _publish(files.key, nats_tls_dir / "server-key.pem")
    _publish(route_cert, nats_tls_dir / "route.pem")
    _publish(route_key, nats_tls_dir / "route-key.pem")
    _publish(files.ca, nats_tls_dir / "ca.pem")
    _publish(files.ca, ca_dir / "ca.pem")


def admin_token(path: Path) -> bool:
    """Create the admin token file unless it exists; True when created."""
    if path.exists():
        return False
    identity.write_secret(path, "tat_" + secrets.token_urlsafe(32) + "\n")
    return True


def grafana_password(path: Path) -> bool:
    """Create Grafana's admin password file unless it exists; True when created.

    Readable by Grafana's own user (another uid than this job's): the file sits alone in a volume only this
    job and Grafana mount, so nothing else sees it."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(secrets.token_urlsafe(24))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def render(secrets_dir: Path, nats_auth_dir: Path, resolver_dir: Path = RESOLVER_DIR) -> Path:
    """Prepare the trust and secrets; write the NATS auth block. Returns the auth block's path."""
    trust = identity.prepare(secrets_dir / "auth")
    admin_token(secrets_dir / "admin.token")
    nats_auth_dir.mkdir(parents=True, exist_ok=True)
    target = nats_auth_dir / "auth.conf"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(
        "# Rendered by compose/render.py from the platform's trust: do not edit.\n"
        + trust.server_config(resolver_dir)
        + "\n"
    )
    os.chmod(tmp, 0o644)  # JWTs only, no seeds; the NATS nodes run as another user
    os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--secrets", type=Path, required=True, help="the platform's secrets volume")
    parser.add_argument("--nats-auth", type=Path, required=True, help="the volume the NATS nodes include from")
    parser.add_argument("--resolver-dir", type=Path, default=RESOLVER_DIR, help="account resolver dir on each node")
    parser.add_argument("--grafana-secrets", type=Path, help="Grafana's volume for its admin password")
    parser.add_argument("--pki", type=Path, help="where the CA (and its key) is kept: this job's own volume")
    parser.add_argument("--nats-tls", type=Path, help="the NATS nodes' volume for their certificate and key")
    parser.add_argument("--nats-ca", type=Path, help="the volume services and agents read the CA certificate from")
    args = parser.parse_args(argv)
    tls_dirs = (args.pki, args.nats_tls, args.nats_ca)
    if any(d is not None for d in tls_dirs) and not all(d is not None for d in tls_dirs):
        parser.error("--pki, --nats-tls and --nats-ca go together")
    target = render(args.secrets, args.nats_auth, args.resolver_dir)
    if args.pki is not None and args.nats_tls is not None and args.nats_ca is not None:
        nats_tls(args.pki, args.nats_tls, args.nats_ca)
    if args.grafana_secrets is not None:
        grafana_password(args.grafana_secrets / "admin.password")
    print(f"trust ready in {args.secrets / 'auth'}; NATS auth block in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
