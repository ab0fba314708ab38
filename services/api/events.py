"""Credentials for outside consumers of the public events (``tether events creds``)."""

# No "from __future__ import annotations": FastAPI resolves the route's local annotations at definition.

from fastapi import FastAPI

from schemas import subjects
from schemas.api import EventsCredsIn, EventsCredsOut
from schemas.messages import EventsCreds, EventsCredsRequest
from schemas.names import check_name
from services.api import logic
from services.api.auth import ERRORS, Platform, Who, require_admin


def install_events(app: FastAPI, platform: "Platform") -> None:
    @app.post(
        "/api/v1/events/credentials",
        response_model=EventsCredsOut,
        status_code=201,
        responses=ERRORS,
        tags=["events"],
        summary="Sign subscribe-only credentials for the public events",
        description="Platform admins only. The NATS user may subscribe to `tether.events.>` and replay the "
        "`EVENTS` stream with an ordered consumer; it may publish nothing else and read no other subject. "
        "The seed is made for this answer and kept nowhere: store the `.creds` text privately.",
    )
    async def events_credentials(body: EventsCredsIn, who: Who) -> EventsCredsOut:
        require_admin(who)
        check_name(body.name, "events reader name")
        signed = await platform.call(
            subjects.Registry.EVENTS_CREDS, EventsCredsRequest(name=body.name, ttl=body.ttl_days * 86400), EventsCreds
        )
        return EventsCredsOut(
            name=signed.name,
            creds=signed.creds,
            inbox_prefix=signed.inbox_prefix,
            expires_at=logic.ts(signed.expires_at),  # type: ignore[arg-type]
            nats_url=platform.nats_url,
            stream=subjects.EVENTS_STREAM,
            subjects=subjects.PUBLIC_EVENTS_ANY,
        )
