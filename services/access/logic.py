"""Pure access rules: token format and hashing, user records."""

from __future__ import annotations

import hashlib
import secrets

from schemas.errors import InvalidInput
from schemas.messages import UserRecord
from schemas.names import check_name

TOKEN_PREFIX = "tat_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """API tokens carry 256 random bits, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_token_shape(token: str) -> str:
    if not token.startswith(TOKEN_PREFIX) or not 20 <= len(token) <= 200:
        raise InvalidInput("malformed API token")
    return token


def new_user(name: str, email: str, now: float, *, platform_admin: bool = False) -> UserRecord:
    check_name(name, "user name")
    if email and ("@" not in email or len(email) > 254):
        raise InvalidInput(f"invalid email {email!r}")
    return UserRecord(name=name, email=email, platform_admin=platform_admin, created_at=now)
