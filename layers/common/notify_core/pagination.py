"""Opaque keyset cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from .db import transaction
from .errors import ValidationFailed
from .fields import EARLIEST, LATEST


def encode(created_at: datetime, row_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, UUID]:
    """The position a cursor holds, each part checked for its type: a forged cursor (any JSON at all
    in base64) is a 422, never an error further down."""
    position = _position(cursor)
    if position is None:
        raise ValidationFailed.field("cursor", "is not a cursor this API returned")
    return position


def _position(cursor: str) -> tuple[datetime, UUID] | None:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts)):
            return None
        created, row_id = parts
        if len(created) > 40:  # what encode writes is 32 characters at most
            return None
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not EARLIEST <= when.astimezone(UTC) < LATEST:
            return None
        return when, UUID(row_id)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None


# pragma: no mutate start
# (SQL: pinned by the integration tier, e.g. tests/integration/test_notifications.py's pagination)
def fetch_page(
    table: str, columns: str, where: list[str], params: list[Any], limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Rows of `table` matching `where` (AND-ed, with `params`), newest first, `limit` at most, after
    `cursor`; and the cursor of the next page (None on the last). One query: it asks for one row more
    than the page to know whether another page exists. Table and column names are the caller's
    constants, never input."""
    conditions, values = list(where), list(params)
    if cursor:
        created_at, last_id = decode(cursor)
        conditions.append("(created_at, id) < (%s, %s)")
        values += [created_at, last_id]
    with transaction() as conn:
        rows = conn.execute(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(conditions)}"
            " ORDER BY created_at DESC, id DESC LIMIT %s",
            [*values, limit + 1],
        ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None)


# pragma: no mutate end
