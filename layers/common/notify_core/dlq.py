"""Dead-letter administration: list, count, replay and delete, always within the caller's tenant.
Dead letters are written by `dead_letters` (the sender and the DLQ processor)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from . import audit, dispatch, pagination
from .db import transaction
from .errors import Conflict, NotFound
from .models import Page
from .observability import logger
from .states import transition


class DeadLetter(BaseModel):
    id: UUID
    notification_id: UUID
    channel: str
    provider: str
    reason: str
    last_error: str | None
    attempt_count: int
    created_at: datetime
    replayed_at: datetime | None


COLUMNS = "id, notification_id, channel, provider, reason, last_error, attempt_count, created_at, replayed_at"


def list_page(tenant_id: UUID, limit: int = 20, cursor: str | None = None) -> Page[DeadLetter]:
    rows, next_cursor = pagination.fetch_page(
        "notification_dlq", COLUMNS, ["tenant_id = %s", "replayed_at IS NULL"], [tenant_id], limit, cursor
    )
    return Page[DeadLetter](data=[DeadLetter.model_validate(r) for r in rows], next_cursor=next_cursor)


def stats(tenant_id: UUID) -> dict[str, Any]:
    with transaction() as conn:
        rows = conn.execute(
            "SELECT reason, channel, provider, count(*) AS n, min(created_at) AS oldest FROM notification_dlq"
            " WHERE tenant_id = %s AND replayed_at IS NULL GROUP BY GROUPING SETS ((reason), (channel), (provider), ())",
            (tenant_id,),
        ).fetchall()
    out: dict[str, Any] = {
        "total": 0,
        "by_reason": {},
        "by_channel": {},
        "by_provider": {},
        "oldest_age_seconds": None,
    }
    for r in rows:
        if r["reason"] is not None:
            out["by_reason"][r["reason"]] = r["n"]
        elif r["channel"] is not None:
            out["by_channel"][r["channel"]] = r["n"]
        elif r["provider"] is not None:
            out["by_provider"][r["provider"]] = r["n"]
        else:
            out["total"] = r["n"]
            if r["oldest"] is not None:
                out["oldest_age_seconds"] = int((datetime.now(UTC) - r["oldest"]).total_seconds())
    return out


def replay(tenant_id: UUID, dead_letter_id: UUID, actor: audit.Actor = audit.SYSTEM) -> dict[str, Any]:
    """Put the notification back on the queue with a fresh attempt budget."""
    with transaction() as conn:
        letter = conn.execute(
            "UPDATE notification_dlq SET replayed_at = now() WHERE tenant_id = %s AND id = %s"
            " AND replayed_at IS NULL RETURNING notification_id",
            (tenant_id, dead_letter_id),
        ).fetchone()
        if letter is None:
            raise _missing_or_replayed(conn, tenant_id, dead_letter_id)
        moved = transition(
            conn,
            [letter["notification_id"]],
            ["failed"],
            "pending",
            tenant_id=tenant_id,
            sets={
                "attempt_count": 0,
                "last_error": None,
                "failed_at": None,
                "next_attempt_at": datetime.now(UTC),
            },
        )
        if not moved:
            raise Conflict("the notification is no longer failed; nothing to replay")
        audit.record(
            conn,
            tenant_id,
            actor,
            "dead_letter.replay",
            "dead_letter",
            dead_letter_id,
            {"notification_id": letter["notification_id"]},
        )
    notification_id = letter["notification_id"]
    result = dispatch.enqueue([dispatch.Enqueue(notification_id, tenant_id, "pending")], report=True)
    status = result.rows.get(notification_id, {}).get("status", "pending")
    logger.info("dead letter replayed", extra={"dead_letter_id": str(dead_letter_id)})
    return {"id": str(dead_letter_id), "notification_id": str(notification_id), "status": status}


def delete(tenant_id: UUID, dead_letter_id: UUID, actor: audit.Actor = audit.SYSTEM) -> None:
    with transaction() as conn:
        row = conn.execute(
            "DELETE FROM notification_dlq WHERE tenant_id = %s AND id = %s RETURNING id, notification_id",
            (tenant_id, dead_letter_id),
        ).fetchone()
        if row is not None:
            audit.record(
                conn,
                tenant_id,
                actor,
                "dead_letter.delete",
                "dead_letter",
                dead_letter_id,
                {"notification_id": row["notification_id"]},
            )
    if row is None:
        raise NotFound(f"dead letter {dead_letter_id} not found")


def _missing_or_replayed(conn: Any, tenant_id: UUID, dead_letter_id: UUID) -> NotFound | Conflict:
    exists = conn.execute(
        "SELECT 1 FROM notification_dlq WHERE tenant_id = %s AND id = %s", (tenant_id, dead_letter_id)
    ).fetchone()
    if exists is None:
        return NotFound(f"dead letter {dead_letter_id} not found")
    return Conflict("this dead letter was already replayed")
