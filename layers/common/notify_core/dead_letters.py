"""Writing dead letters: by the sender (permanent errors, exhausted budgets, ambiguous sends given
up) and by the DLQ processor (messages SQS redrove after maxReceiveCount). Administration (list,
stats, replay, delete) is in `dlq`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg import sql

from .db import transaction
from .integrations import outbox  # feedback
from .states import transition

# How far SQS's SentTimestamp and the database's queued_at may disagree.
CLOCK_SKEW = timedelta(seconds=5)


def record_dead_letters(conn: Any, letters: Sequence[tuple[UUID, str, str | None]]) -> list[dict[str, Any]]:
    """One INSERT of dead letters; at most one open dead letter per notification (idempotent).
    Returns the letters created now (id, notification_id, tenant_id, reason, last_error)."""
    return conn.execute(
        "INSERT INTO notification_dlq (id, notification_id, tenant_id, channel, provider, reason, last_error,"
        " attempt_count)"
        " SELECT gen_random_uuid(), n.id, n.tenant_id, n.channel, n.provider, d.reason, d.error, n.attempt_count"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS d(id, reason, error)"
        " JOIN notifications n ON n.id = d.id"
        " ON CONFLICT (notification_id) WHERE replayed_at IS NULL DO NOTHING"
        " RETURNING id, notification_id, tenant_id, reason, last_error",
        [[i for i, _, _ in letters], [r for _, r, _ in letters], [e for _, _, e in letters]],
    ).fetchall()


@dataclass(frozen=True, slots=True)
class Redriven:
    notification_id: UUID
    sent_at: datetime  # when the message SQS gave up on was sent (its SentTimestamp)
    receives: int


# The redriven message is the row's current one only if the row was queued by it (not re-queued
# since by the sweeper or a replay, whose newer message is still on its way).
_CURRENT_MESSAGE = sql.SQL(
    "(queued_at IS NULL OR queued_at <= (SELECT max(m.sent) FROM unnest(%s::uuid[], %s::timestamptz[])"
    " AS m(id, sent) WHERE m.id = notifications.id) + %s)"
)


def record_redriven(messages: Sequence[Redriven]) -> list[UUID]:
    """The DLQ processor's work. Only what is really dead becomes `failed` with a dead letter of
    reason `redrive`: a `queued` row whose message this is. A row that was sent or delivered, is
    being sent, waits for a retry or a schedule, or was re-queued with a newer message is left as it
    is (the message is acknowledged): the sweeper owns those. Idempotent: a row already failed keeps
    its one open dead letter. Returns the ids that were dead-lettered now."""
    if not messages:
        return []
    ids = [m.notification_id for m in messages]
    now = datetime.now(UTC)
    with transaction() as conn:
        moved = transition(
            conn,
            ids,
            ["queued"],
            "failed",
            sets={
                "failed_at": now,
                "last_error": sql.SQL("coalesce(last_error, 'redriven by SQS')"),
                "claimed_until": None,
                "next_attempt_at": None,
            },
            where=_CURRENT_MESSAGE,
            where_params=[ids, [m.sent_at for m in messages], CLOCK_SKEW],
            returning="id, tenant_id, channel, provider, attempt_count, last_error",
        )
        failed = [r["id"] for r in moved]
        receives = {m.notification_id: m.receives for m in messages}
        # a notification that had already failed (a repeated DLQ delivery) may lack its letter
        again = [
            r["id"]
            for r in conn.execute(
                "SELECT id FROM notifications WHERE id = ANY(%s) AND status = 'failed' AND NOT (id = ANY(%s))",
                (ids, failed),
            ).fetchall()
        ]
        letters = [
            (i, "redrive", f"redriven by SQS after {receives[i]} receives without success")
            for i in [*failed, *again]
        ]
        created = record_dead_letters(conn, letters) if letters else []
        # --- feedback: notification.failed and dlq.created webhooks, in this transaction
        webhooks = outbox.emit(conn, outbox.redriven_events(moved, created))
    outbox.enqueue(webhooks)
    return failed
