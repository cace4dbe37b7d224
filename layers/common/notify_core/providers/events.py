"""What a provider reports after a send, in the platform's terms: each provider's callback module
(`sendgrid_events`, `twilio_status`) verifies its own signatures and turns its own event shapes
into `ProviderEvent`s; what an event does (status, suppression, webhook) is decided from these
fields alone by `integrations.callbacks`. SDK-free; the SDK helpers are imported where used."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

EventType = Literal[
    "delivered", "bounced", "dropped", "deferred", "opened", "clicked", "complained", "undelivered"
]
Effect = Literal["delivered", "failed"]
SuppressionReason = Literal["hard_bounce", "complaint", "sms_stop", "invalid_token"]


class Unverified(Exception):
    """The request cannot be shown to come from the provider (signature, timestamp): 401."""


class NotConfigured(Exception):
    """The deployment lacks what verifying needs (a key, a token): 503, so the provider retries."""


class Malformed(Exception):
    """Verified, but not a body this provider sends: 400."""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    provider: str
    event_id: str  # unique per provider: replays of it are no-ops
    notification_id: UUID
    tenant_id: UUID
    type: EventType
    occurred_at: datetime
    detail: dict[str, Any] = field(default_factory=dict)
    effect: Effect | None = None  # what it does to the notification's status
    suppression: SuppressionReason | None = None  # what it does to the address
    error: str | None = None  # for `failed`: the notification's last_error


@dataclass
class Parsed:
    events: list[ProviderEvent] = field(default_factory=list)
    ignored: int = 0  # items that do not belong here (other event kinds, not ours): acknowledged


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def text(value: Any, limit: int = 1000) -> str | None:
    """A provider-supplied value as storable, bounded text (None when absent)."""
    if value is None or isinstance(value, dict | list):
        return None
    out = _UNSTORABLE.sub("\ufffd", str(value))
    return out if len(out) <= limit else out[:limit] + "…"


def instant(value: Any, now: datetime) -> datetime:
    """A unix timestamp from the provider, or `now` when it is missing or out of range."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return now
    try:
        when = datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        return now
    return when if EARLIEST <= when < LATEST else now


def uuid_or_none(value: Any) -> UUID | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return UUID(value)
    except ValueError:
        return None
