"""Property-based API test: schemathesis against a running platform, from its own ``/openapi.json``.

Every operation gets generated requests (examples, boundary values, random data, then stateful
sequences built from earlier responses) with the admin's token. The run fails on a server error,
a response that breaks its documented schema, or a status code the document does not list.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.harness import ROOT, Stack

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
REPORTS = ROOT / "artifacts" / "schemathesis"
CHECKS = ("no_server_error", "response_schema_conformance", "status_code_conformance")
EXAMPLES = int(os.environ.get("TETHER_SCHEMATHESIS_EXAMPLES", "25"))
# Streams never end, so a request to one never completes: not a request/response operation.
EXCLUDED_PATHS = ("/api/v1/events/stream",)


async def test_the_api_conforms_to_its_openapi_document(stack: Stack, tmp_path: Path) -> None:
    # Something to find: an online cluster, a project on it, a tenant cluster and a space.
    await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "clusters": ["c1"]})
    await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t1", "version": "v1.35"})
    await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "s1"})

    REPORTS.mkdir(parents=True, exist_ok=True)
    argv = [
        str(SCHEMATHESIS),
        "run",
        f"{stack.api}/openapi.json",
        "--header",
        f"Authorization: Bearer {stack.admin_token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20260101",
        "--request-timeout",
        "15",
        "--workers",
        "2",
        "--report",
        "junit",
        "--report-dir",
        str(REPORTS),
        "--output-sanitize",
        "true",
    ]
    for path in EXCLUDED_PATHS:
        argv += ["--exclude-path", path]
    env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), NO_COLOR="1", COLUMNS="120")
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    (REPORTS / "output.txt").write_text(text)
    assert proc.returncode == 0, f"schemathesis found problems (exit {proc.returncode}):\n{text[-20000:]}"
    assert "No issues found" in text or " passed" in text, text[-3000:]
