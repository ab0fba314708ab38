"""The ``trust`` init service of compose: the platform's NATS trust and secrets, before anything else starts.

Run once per ``docker compose up`` (idempotent: an existing trust and admin token are kept):

- ``<secrets>/auth/``: the trust (``trust.json``) and the creds the platform uses, via
  ``services.bus.identity.prepare``: ``platform.creds`` for the services, ``sys.creds`` for the registry's
  account updates;
- ``<secrets>/admin.token``: the first platform admin's API token (access creates the admin from it);
- ``<nats-auth>/auth.conf``: the operator-mode block every NATS node includes (``compose/nats/nats-N.conf``):
  operator JWT, system account, a full account resolver under ``--resolver-dir`` (on each node's own
  volume), both accounts preloaded. It holds JWTs only, no seeds: the NATS nodes never see a secret.

    python render.py --secrets /var/lib/tether/secrets --nats-auth /var/lib/tether/nats-auth
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from services.bus import identity

RESOLVER_DIR = Path("/data/resolver")
"""Where each NATS node keeps account JWTs pushed at runtime (revocations): its own data volume."""


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
    args = parser.parse_args(argv)
    target = render(args.secrets, args.nats_auth, args.resolver_dir)
    if args.grafana_secrets is not None:
        grafana_password(args.grafana_secrets / "admin.password")
    print(f"trust ready in {args.secrets / 'auth'}; NATS auth block in {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
