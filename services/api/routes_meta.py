"""``/api/v1/version``: which platform this is (for ``tether version``)."""

# No "from __future__ import annotations": FastAPI resolves the routes' local annotations at definition.
from fastapi import FastAPI

from schemas.api_changes import VersionOut
from services import VERSION
from services.api.auth import ERRORS, Who


def install_meta_routes(app: FastAPI) -> None:
    @app.get("/api/v1/version", response_model=VersionOut, responses=ERRORS, tags=["platform"])
    async def version(who: Who) -> VersionOut:
        """The platform's version and the API's."""
        return VersionOut(version=VERSION, api="v1")
