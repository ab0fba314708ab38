"""JetStream publish that retries through leader elections with the same ``Nats-Msg-Id``."""

from __future__ import annotations

import asyncio
import logging

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from schemas import tracing
from schemas.errors import Unavailable
from schemas.messages import Message, encode
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)


async def publish(
    js: JetStreamContext, subject: str, message: Message, *, msg_id: str | None = None, attempts: int = 8
) -> bool:
    """Publish and wait for the stream's ack. Returns False when the stream dropped it as a duplicate."""
    headers = tracing.inject({"Nats-Msg-Id": msg_id} if msg_id else None)
    data = encode(message)
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            ack = await js.publish(subject, data, headers=headers, timeout=5)
            return not ack.duplicate
        except (NatsTimeout, NoRespondersError, NoStreamResponseError, ServiceUnavailableError) as exc:
            last = exc
        except APIError as exc:
            if exc.code not in (503, None):
                raise
            last = exc
        delay = backoff_delay(attempt, base=0.1, cap=3.0)
        logger.info("publish to %s not acknowledged (%s); retrying in %.2fs", subject, last, delay)
        await asyncio.sleep(delay)
    raise Unavailable(f"JetStream did not acknowledge {subject} after {attempts} attempts: {last}")
