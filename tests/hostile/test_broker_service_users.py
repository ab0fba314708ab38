"""Defence in depth: each platform service connects as its own NATS user, which may not delete or purge the
platform's streams and buckets, nor write buckets it does not own, whatever reply subject it is handed."""

from __future__ import annotations

import nats
import pytest

from schemas import subjects
from services.bus import identity
from tests.harness import wait_for
from tests.hostile.conftest import Hostile


@pytest.mark.parametrize("service", ["registry", "access", "lifecycle", "health", "api"])
async def test_a_services_own_user_cannot_destroy_platform_state(hostile: Hostile, service: str) -> None:
    h = hostile
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    creds = h.stack.auth / identity.service_creds_file(service)
    nc = await nats.connect(h.stack.nats_url, user_credentials=str(creds), error_cb=on_error)
    try:
        attempts = [
            f"$JS.API.STREAM.DELETE.{subjects.AUDIT_STREAM}",
            f"$JS.API.STREAM.PURGE.{subjects.AUDIT_STREAM}",
            f"$JS.API.STREAM.DELETE.KV_{subjects.BUCKET_TOKENS}",
            f"$JS.API.STREAM.PURGE.KV_{subjects.BUCKET_DESIRED}",
            f"$JS.API.STREAM.DELETE.{subjects.cmd_stream(h.victim)}",
        ]
        if service != "registry":
            stream = subjects.cmd_stream(h.victim)
            attempts.append(f"$JS.API.CONSUMER.DELETE.{stream}.{subjects.agent_consumer(h.victim)}")
        for bucket in identity.ALL_BUCKETS:
            if bucket not in identity.SERVICE_BUCKETS[service]:
                attempts.append(f"$KV.{bucket}.forged")
        for subject in attempts:
            before = len(errors)
            await nc.publish(subject, b"", reply="_INBOX.x")
            await nc.flush()
            await wait_for(lambda n=before: len(errors) > n, timeout=5, what=f"the broker to refuse {subject}")
            assert "permissions violation" in errors[-1].lower(), (subject, errors)
    finally:
        await nc.close()
    await h.intact()
