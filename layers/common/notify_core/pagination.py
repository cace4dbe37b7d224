"""Opaque keyset cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from uuid import UUID

from .errors import ValidationFailed


def encode(created_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("naive timestamp")
        return when, UUID(row_id)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed.field("cursor", "is not a cursor this API returned") from exc


def parse_limit(raw: str | None, default: int = 20, maximum: int = 100) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed.field("limit", "must be an integer") from None
    if not 1 <= value <= maximum:
        raise ValidationFailed.field("limit", f"must be between 1 and {maximum}")
    return value
