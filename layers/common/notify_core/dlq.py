"""Dead letters: recorded by the sender (permanent errors, exhausted budgets) and by the DLQ
processor (messages SQS redrove after maxReceiveCount); listed, counted, replayed and deleted
through the API, always within the caller's tenant."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from . import pagination
from .db import transaction
from .errors import Conflict, NotFound
from .models import Page
from .notifications import enqueue_pending
from .observability import logger, metrics
from .states import transition

NOT_FINAL = ("pending", "scheduled", "queued", "sending", "retrying")


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


def record_dead_letters(conn: Any, letters: list[tuple[UUID, str, str | None]]) -> None:
    """One INSERT of dead letters; at most one open dead letter per notification (idempotent)."""
    conn.execute(
        "INSERT INTO notification_dlq (id, notification_id, tenant_id, channel, provider, reason, last_error,"
        " attempt_count)"
        " SELECT gen_random_uuid(), n.id, n.tenant_id, n.channel, n.provider, d.reason, d.error, n.attempt_count"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS d(id, reason, error)"
        " JOIN notifications n ON n.id = d.id"
        " ON CONFLICT (notification_id) WHERE replayed_at IS NULL DO NOTHING",
        [[i for i, _, _ in letters], [r for _, r, _ in letters], [e for _, _, e in letters]],
    )


def record_redriven(ids: list[UUID], error: str = "redriven by SQS after maxReceiveCount receives") -> int:
    """The DLQ processor's work: every notification not already final becomes `failed` with a dead
    letter of reason `redrive`. Idempotent: a notification that already failed keeps its one open
    dead letter, and one already sent is left alone."""
    if not ids:
        return 0
    now = datetime.now(UTC)
    with transaction() as conn:
        moved = transition(
            conn,
            ids,
            NOT_FINAL,
            "failed",
            sets={"failed_at": now, "last_error": error, "claimed_until": None, "next_attempt_at": None},
        )
        failed_ids = [r["id"] for r in moved]
        # a notification that had already failed (e.g. a repeated DLQ delivery) may lack its letter
        failed_ids += [
            r["id"]
            for r in conn.execute(
                "SELECT id FROM notifications WHERE id = ANY(%s) AND status = 'failed' AND NOT (id = ANY(%s))",
                (ids, failed_ids),
            ).fetchall()
        ]
        if failed_ids:
            record_dead_letters(conn, [(i, "redrive", error) for i in failed_ids])
    metrics.add_metric(name="NotificationsRedriven", unit="Count", value=len(moved))
    return len(moved)


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


def replay(tenant_id: UUID, dead_letter_id: UUID) -> dict[str, Any]:
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
    status = enqueue_pending(tenant_id, [letter["notification_id"]]).get(letter["notification_id"], "pending")
    logger.info("dead letter replayed", extra={"dead_letter_id": str(dead_letter_id)})
    return {"id": str(dead_letter_id), "notification_id": str(letter["notification_id"]), "status": status}


def delete(tenant_id: UUID, dead_letter_id: UUID) -> None:
    with transaction() as conn:
        row = conn.execute(
            "DELETE FROM notification_dlq WHERE tenant_id = %s AND id = %s RETURNING id",
            (tenant_id, dead_letter_id),
        ).fetchone()
    if row is None:
        raise NotFound(f"dead letter {dead_letter_id} not found")


def _missing_or_replayed(conn: Any, tenant_id: UUID, dead_letter_id: UUID) -> NotFound | Conflict:
    exists = conn.execute(
        "SELECT 1 FROM notification_dlq WHERE tenant_id = %s AND id = %s", (tenant_id, dead_letter_id)
    ).fetchone()
    if exists is None:
        return NotFound(f"dead letter {dead_letter_id} not found")
    return Conflict("this dead letter was already replayed")
