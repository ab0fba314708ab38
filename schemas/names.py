"""Validation of names and labels, shared by the API, services and agent."""

from __future__ import annotations

import re

from schemas.errors import InvalidInput

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def dns1123_label_error(name: str) -> str | None:
    """Why ``name`` is not a DNS-1123 label, or None when it is one."""
    if not name:
        return "must not be empty"
    if len(name) > 63:
        return f"must be at most 63 characters (got {len(name)})"
    if not _DNS1123_LABEL.match(name):
        return "must consist of lower case letters, digits and '-', and start and end with a letter or digit"
    return None


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` when it is a DNS-1123 label, else raise InvalidInput naming the problem."""
    problem = dns1123_label_error(name)
    if problem:
        raise InvalidInput(f"invalid {what} {name!r}: {problem}")
    return name


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """Validate Kubernetes-style labels; raise InvalidInput naming the first bad one."""
    for key, value in labels.items():
        if len(key) > 253 or not _LABEL_KEY.match(key):
            raise InvalidInput(f"invalid label key {key!r}")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise InvalidInput(f"invalid value {value!r} for label {key!r}")
    return labels


def parse_label(text: str) -> tuple[str, str]:
    """Parse ``k=v`` into a validated pair."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidInput(f"invalid label {text!r}: expected key=value")
    check_labels({key: value})
    return key, value
