"""Read a key-value bucket's live entries straight from its stream, for tests that check what is stored.

Not through nats-py's ``KeyValue.keys()``: its watcher decides "that was all" from the consumer's first
info, and when the server has already pushed every entry (none pending) before the client counted one, it
reports an empty bucket (``NoKeysError``) although the keys are there. That made a CI run fail. Here the
stream names its subjects first, and each subject's last message is read by a direct get; what counts as
removed is the services' own rule (``services.bus.kv``: a deletion or purge marker, one the server left for a
TTL, or an empty value).
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.bus.kv import _removed as removed


async def live_entries(js: JetStreamContext, bucket: str) -> dict[str, bytes]:
    """Every key of ``bucket`` whose last entry is a live value, with that value."""
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
    info = await js.stream_info(stream, subjects_filter=f"{prefix}>")
    out: dict[str, bytes] = {}
    for subject in info.state.subjects or {}:
        try:
            msg = await js.get_msg(stream, subject=subject)
        except NotFoundError:  # purged between the info and the get
            continue
        if removed(msg.headers, msg.data):
            continue
        out[subject[len(prefix) :]] = msg.data or b""
    return out
