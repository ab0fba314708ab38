"""Read a key-value bucket's live entries straight from its stream, for tests that check what is stored.

Not through nats-py's ``KeyValue.keys()``: its watcher decides "that was all" from the consumer's first
info, and when the server has already pushed every entry (none pending) before the client counted one, it
reports an empty bucket (``NoKeysError``) although the keys are there. That made a CI run fail. Here the
stream names its subjects first, and each subject's last message is read by a direct get.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

_REMOVED = {"DEL", "PURGE"}


async def live_entries(js: JetStreamContext, bucket: str) -> dict[str, bytes]:
    """Every key of ``bucket`` whose last entry is a value (not a deletion marker), with that value."""
    stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
    info = await js.stream_info(stream, subjects_filter=f"{prefix}>")
    out: dict[str, bytes] = {}
    for subject in info.state.subjects or {}:
        try:
            msg = await js.get_msg(stream, subject=subject)
        except NotFoundError:  # purged between the info and the get
            continue
        if (msg.headers or {}).get("KV-Operation") in _REMOVED:
            continue
        out[subject[len(prefix) :]] = msg.data or b""
    return out
