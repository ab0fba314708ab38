"""Declaring a bucket at start on a JetStream cluster: a bucket just made whose stream is not found yet (a
replica's first look, before the stream's group has a leader) is looked at again, not the end of the start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import BucketNotFoundError, NotFoundError

from schemas.messages import Presence
from services.bus import limits, streams

pytestmark = pytest.mark.usefixtures("patience_without_waiting")


class JetStream:
    """The calls ``ensure_bucket`` makes, answered as a cluster whose new stream is not found for a while."""

    def __init__(self, *, not_found: int, exists: bool = False) -> None:
        self.not_found = not_found
        self.exists = exists
        self.created = 0
        self.infos = 0

    async def key_value(self, name: str) -> object:
        if not self.exists:
            raise BucketNotFoundError()
        return SimpleNamespace(bucket=name)

    async def create_key_value(self, config: Any) -> object:
        self.created += 1
        self.exists = True
        return SimpleNamespace(bucket=config.bucket)

    async def stream_info(self, name: str) -> object:
        self.infos += 1
        if self.not_found > 0:
            self.not_found -= 1
            raise NotFoundError(code=404, err_code=streams.STREAM_NOT_FOUND, description="stream not found")
        config = SimpleNamespace(allow_direct=False, max_bytes=limits.BUCKET_MAX_BYTES, max_consumers=-1)
        return SimpleNamespace(config=config)


async def test_a_new_bucket_not_found_yet_is_looked_at_again() -> None:
    js = JetStream(not_found=2)
    bucket = await streams.ensure_bucket(js, "t-presence", Presence, replicas=3)  # type: ignore[arg-type]
    assert bucket.kv.bucket == "t-presence"  # type: ignore[attr-defined]
    assert (js.created, js.infos) == (1, 3)


async def test_a_bucket_that_really_is_gone_is_made_again() -> None:
    js = JetStream(not_found=1, exists=True)

    async def vanish(name: str) -> object:
        js.exists = False  # deleted between the open and the look at its stream
        return await JetStream.stream_info(js, name)

    js.stream_info = vanish  # type: ignore[method-assign]
    await streams.ensure_bucket(js, "t-presence", Presence, replicas=3)  # type: ignore[arg-type]
    assert js.created == 1
