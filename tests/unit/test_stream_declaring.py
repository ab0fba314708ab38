"""Declaring a bucket at start on a JetStream cluster: a bucket just made whose stream is not found yet (a
replica's first look, before the stream's group has a leader) is looked at again, not the end of the start."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError

from schemas import subjects
from schemas.messages import Presence
from services.bus import limits, streams

pytestmark = pytest.mark.usefixtures("patience_without_waiting")


class JetStream:
    """The calls ``ensure_bucket`` makes, answered as a cluster whose new stream is not found for a while."""

    def __init__(self, *, not_found: int = 0, exists: bool = False) -> None:
        self.not_found = not_found
        """Looks that miss a stream that exists (a replica's first look, before the stream's group has a leader)."""
        self.exists = exists
        self.created = 0
        self.infos = 0

    async def create_key_value(self, config: Any) -> object:
        self.created += 1  # the server answers an identical config with the stream as it is
        self.exists = True
        return SimpleNamespace(bucket=config.bucket)

    async def stream_info(self, name: str) -> object:
        self.infos += 1
        if not self.exists or self.not_found > 0:
            self.not_found -= self.exists
            raise NotFoundError(code=404, err_code=streams.STREAM_NOT_FOUND, description="stream not found")
        config = SimpleNamespace(
            allow_direct=False, max_bytes=limits.BUCKET_MAX_BYTES, max_consumers=-1, max_msgs_per_subject=1
        )
        return SimpleNamespace(config=config)


async def test_a_new_bucket_not_found_yet_is_looked_at_again() -> None:
    js = JetStream(not_found=2)
    bucket = await streams.ensure_bucket(js, "t-presence", Presence, replicas=3)  # type: ignore[arg-type]
    assert bucket.kv._name == "t-presence" and bucket.kv._stream == "KV_t-presence"
    assert js.infos == 4 and js.created >= 1


async def test_an_existing_bucket_is_opened_with_one_look() -> None:
    js = JetStream(exists=True)
    await streams.ensure_bucket(js, "t-presence", Presence, replicas=3)  # type: ignore[arg-type]
    assert (js.created, js.infos) == (0, 1), "a restarted platform asks a busy server once per bucket"


async def test_a_bucket_that_is_gone_is_made_again() -> None:
    js = JetStream()
    await streams.ensure_bucket(js, "t-presence", Presence, replicas=3)  # type: ignore[arg-type]
    assert (js.created, js.infos) == (1, 2)


class Retiring:
    """A server busy for a while: each call times out ``busy`` times before it is answered (nothing to retire)."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.calls = 0

    def _answer(self) -> None:
        self.calls += 1
        if self.busy > 0:
            self.busy -= 1
            raise NatsTimeout
        raise NotFoundError(code=404, err_code=streams.STREAM_NOT_FOUND, description="not found")

    async def stream_info(self, name: str) -> object:
        self._answer()
        return None

    async def delete_consumer(self, stream: str, name: str) -> bool:
        self._answer()
        return True


async def test_retiring_an_earlier_version_s_streams_waits_out_a_busy_server() -> None:
    """A restarted platform's lifecycle retires them while its fleet reconnects: a timeout is tried again, not
    the end of the start (it was, once the declarations ran at once)."""
    js = Retiring(busy=2)
    await streams.retire_cmd_streams(js)  # type: ignore[arg-type]
    assert js.calls == 2 + len(subjects.RETIRED_CMD_STREAMS)
    js = Retiring(busy=2)
    await streams.retire_results_consumer(js)  # type: ignore[arg-type]
    assert js.calls == 3
