"""Timestamp helpers shared by every model: UTC, microseconds, a single ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Read an offset-less value as UTC; convert an aware one to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_ts(value: datetime | None) -> str | None:
    """RFC 3339 with microsecond precision and a single ``Z``."""
    if value is None:
        return None
    # isoformat is several times faster than strftime; timespec fixes the microseconds.
    return as_utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def format_ts_ms(value: datetime) -> str:
    """RFC 3339 with millisecond precision (health, metadata and logs)."""
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
