"""Dead-letter administration: list, count, replay and delete, always within the caller's tenant.
Dead letters are written by `dead_letters` (the sender and the DLQ processor)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from . import audit, dispatch, pagination
from .db import transaction
from .errors import Conflict, NotFound
from .models import Channel, Page, ProviderName, Replayed
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


DeadLetterReason = Literal["permanent_error", "max_attempts", "redrive", "ambiguous"]
BULK_REPLAY_MAX = 100

COLUMNS = "id, notification_id, channel, provider, reason, last_error, attempt_count, created_at, replayed_at"


class DeadLetterFilter(BaseModel):
    """Which open dead letters a list or a bulk replay takes (every given condition must hold)."""

    reason: DeadLetterReason | None = None
    channel: Channel | None = None
    provider: ProviderName | None = None

    def conditions(self) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        for column in ("reason", "channel", "provider"):
            value = getattr(self, column)
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        return where, params


def list_page(
    tenant_id: UUID, limit: int = 20, cursor: str | None = None, where: DeadLetterFilter | None = None
) -> Page[DeadLetter]:
    extra, params = (where or DeadLetterFilter()).conditions()
    rows, next_cursor = pagination.fetch_page(
        "notification_dlq",
        COLUMNS,
        ["tenant_id = %s", "replayed_at IS NULL", *extra],
        [tenant_id, *params],
        limit,
        cursor,
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
        moved = _reopen(conn, tenant_id, [letter["notification_id"]])
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


# ---------------------------------------------------------------- bulk replay (the console, issue 14)


class BulkReplay(DeadLetterFilter):
    """Replay the open dead letters matching the filter (and `ids`, when given), newest first, at
    most `limit` of them; call again for the next ones."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "permanent_error", "channel": "email", "limit": 50}]},
    )

    ids: Annotated[list[UUID], Field(min_length=1, max_length=BULK_REPLAY_MAX)] | None = Field(
        default=None, description="Only these dead letters (those of another tenant are not found)"
    )
    limit: Annotated[int, Field(ge=1, le=BULK_REPLAY_MAX, strict=True)] = Field(
        default=BULK_REPLAY_MAX, description="At most this many in one call"
    )


class BulkReplaySkip(BaseModel):
    id: UUID
    notification_id: UUID
    reason: str = Field(
        description="Why it was left as it is", examples=["the notification is no longer failed"]
    )


class BulkReplayed(BaseModel):
    replayed: list[Replayed] = Field(description="Back on the queue with a fresh attempt budget")
    skipped: list[BulkReplaySkip] = Field(description="Matched, but their notification is no longer failed")
    remaining: int = Field(description="Open dead letters still matching the filter after this call")


def replay_many(tenant_id: UUID, request: BulkReplay, actor: audit.Actor = audit.SYSTEM) -> BulkReplayed:
    """Replay the matching open dead letters of the tenant in one transaction, each audited as a
    single replay is (`dead_letter.replay`, with `bulk: true`); then enqueue them."""
    extra, params = request.conditions()
    if request.ids is not None:
        extra.append("id = ANY(%s)")
        params.append(list(request.ids))
    where = " AND ".join(["tenant_id = %s", "replayed_at IS NULL", *extra])
    with transaction() as conn:
        letters = conn.execute(
            f"UPDATE notification_dlq SET replayed_at = now() WHERE id IN (SELECT id FROM notification_dlq"
            f" WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING id, notification_id",
            [tenant_id, *params, request.limit],
        ).fetchall()
        by_notification = {r["notification_id"]: r["id"] for r in letters}
        moved = _reopen(conn, tenant_id, list(by_notification))
        moved_ids = {r["id"] for r in moved}
        stuck = [r for r in letters if r["notification_id"] not in moved_ids]
        if stuck:  # left open, as a single replay's Conflict leaves them
            conn.execute(
                "UPDATE notification_dlq SET replayed_at = NULL WHERE tenant_id = %s AND id = ANY(%s)",
                (tenant_id, [r["id"] for r in stuck]),
            )
        for notification_id in moved_ids:
            audit.record(
                conn,
                tenant_id,
                actor,
                "dead_letter.replay",
                "dead_letter",
                by_notification[notification_id],
                {"notification_id": notification_id, "bulk": True},
            )
        remaining = conn.execute(
            f"SELECT count(*) AS n FROM notification_dlq WHERE {where}", [tenant_id, *params]
        ).fetchone()
    result = dispatch.enqueue(
        [dispatch.Enqueue(n, tenant_id, "pending") for n in sorted(moved_ids)], report=True
    )
    logger.info("dead letters replayed", extra={"replayed": len(moved_ids), "skipped": len(stuck)})
    return BulkReplayed(
        replayed=[
            Replayed(
                id=by_notification[n],
                notification_id=n,
                status=result.rows.get(n, {}).get("status", "pending"),
            )
            for n in sorted(moved_ids)
        ],
        skipped=[
            BulkReplaySkip(
                id=r["id"],
                notification_id=r["notification_id"],
                reason="the notification is no longer failed",
            )
            for r in stuck
        ],
        remaining=remaining["n"] if remaining else 0,
    )


def _reopen(conn: Any, tenant_id: UUID, notification_ids: list[UUID]) -> list[Any]:
    """Failed notifications back to `pending` with a fresh attempt budget, due now (a replay);
    returns the rows moved (one that is no longer failed is left alone)."""
    return transition(
        conn,
        notification_ids,
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
