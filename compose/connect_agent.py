"""The ``sim-1-connect`` init job of compose: a one-time connect token for the demo agent's cluster.

Once the API is healthy, it connects the cluster as the platform admin (``POST /api/v1/clusters``, as
``tether cluster connect`` does) and writes the one-time token into the agent's state volume, where the
agent's entrypoint reads it. Nothing to do when the agent already has its own credentials (the token is
spent by the agent's first connect; later starts need none).

    python connect_agent.py --api http://api-1:8080 --cluster sim-1 \
        --admin-token-file /var/lib/tether/secrets/admin.token --state-dir /var/lib/tether/agent
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CREDENTIALS = "credentials.json"
"""The agent's own credentials in its state dir (``agent/identity/files.py``)."""
TOKEN_FILE = "connect.token"


def wait_healthy(http: httpx.Client, deadline: float) -> None:
    last = ""
    while time.monotonic() < deadline:
        try:
            resp = http.get("/healthz")
            if resp.status_code == 200:
                return
            last = resp.text
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(1)
    raise SystemExit(f"the API did not become healthy in time: {last}")


def connect(http: httpx.Client, body: dict[str, Any]) -> str:
    resp = http.post("/api/v1/clusters", json=body)
    if resp.status_code == 409:
        # Connected before, but the agent's state volume was wiped: start that cluster over.
        http.post(f"/api/v1/clusters/{body['name']}/disconnect").raise_for_status()
        resp = http.post("/api/v1/clusters", json=body)
    if resp.status_code != 201:
        raise SystemExit(f"connecting {body['name']} failed: {resp.status_code} {resp.text}")
    return str(resp.json()["token"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--api", required=True, help="API base URL")
    parser.add_argument("--cluster", required=True, help="cluster name")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="cluster label")
    parser.add_argument("--admin-token-file", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True, help="the agent's state dir")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the API")
    args = parser.parse_args(argv)

    token_file = args.state_dir / TOKEN_FILE
    if (args.state_dir / CREDENTIALS).exists():
        token_file.unlink(missing_ok=True)
        print(f"{args.cluster}: the agent has its credentials; no connect token needed", file=sys.stderr)
        return 0
    admin = args.admin_token_file.read_text().strip()
    labels = dict(item.split("=", 1) for item in args.label)
    body = {"name": args.cluster, "display_name": f"Simulated cluster {args.cluster}", "labels": labels}
    headers = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=args.api, headers=headers, timeout=10) as http:
        wait_healthy(http, time.monotonic() + args.timeout)
        token = connect(http, body)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    tmp = token_file.with_name(TOKEN_FILE + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(token + "\n")
    tmp.replace(token_file)
    print(f"{args.cluster}: connect token written to {token_file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
