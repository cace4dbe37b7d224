"""The webhook outbox: events written in the transaction of the state change that causes them.

`emit(conn, events)` runs inside the caller's transaction (the engine recording outcomes, a cancel,
a provider callback, a dead letter): ONE statement inserts a delivery row per event and per active
endpoint of the event's tenant subscribed to its type, so a tenant without endpoints gets no row
and pays one index probe. After the commit the caller hands the returned rows to `enqueue` (the
webhooks queue carries ids only, like the notifications queue). A crash between the commit and the
enqueue leaves rows that `sweep` (run by the retry sweeper) puts on the queue after
WEBHOOK_OUTBOX_GRACE_SECONDS; the dispatcher's claim makes a duplicate message harmless.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from .. import queue
from ..config import Settings, get_settings
from ..db import transaction
from ..observability import logger

# What an endpoint may subscribe to; `webhook.test` goes to one endpoint, on request only.
SubscribableEvent = Literal[
    "notification.sent",
    "notification.delivered",
    "notification.failed",
    "notification.suppressed",
    "notification.cancelled",
    "dlq.created",
]
EventType = Literal[SubscribableEvent, "webhook.test"]


@dataclass(frozen=True, slots=True)
class Event:
    tenant_id: UUID
    type: str
    data: dict[str, Any]
    id: UUID = field(default_factory=uuid.uuid4)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def body(self) -> dict[str, Any]:
        """What the endpoint receives: Standard Webhooks' recommended {type, timestamp, data}."""
        return {
            "type": self.type,
            "timestamp": self.at.isoformat().replace("+00:00", "Z"),
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class Pending:
    """A delivery row to put on the webhooks queue (after the transaction that wrote it)."""

    id: UUID
    tenant_id: UUID
    delay_s: float = 0.0


_EMIT = (
    "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, payload)"
    " SELECT gen_random_uuid(), e.tenant_id, e.id, ev.event_id, ev.type, ev.payload"
    " FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::jsonb[]) AS ev(event_id, tenant_id, type, payload)"
    " JOIN webhook_endpoints e ON e.tenant_id = ev.tenant_id AND e.active AND ev.type = ANY(e.events)"
    " RETURNING id, tenant_id"
)


def _columns(events: Sequence[Event]) -> list[list[Any]]:
    return [
        [e.id for e in events],
        [e.tenant_id for e in events],
        [e.type for e in events],
        [json.dumps(e.body(), default=str, separators=(",", ":")) for e in events],
    ]


def emit_query(conn: Any, events: Sequence[Event]) -> Any:
    """Start the outbox INSERT (usable inside a pipeline); `pending(cursor)` reads its rows."""
    return conn.execute(_EMIT, _columns(events))


def pending(cursor: Any) -> list[Pending]:
    return [Pending(row["id"], row["tenant_id"]) for row in cursor.fetchall()]


def emit(conn: Any, events: Sequence[Event]) -> list[Pending]:
    """Write `events` to the outbox inside the caller's transaction; enqueue the result after commit."""
    if not events:
        return []
    return pending(emit_query(conn, events))


def emit_to(conn: Any, tenant_id: UUID, endpoint_id: UUID, event: Event) -> Pending | None:
    """One event for one endpoint whatever it subscribes to (`webhook.test`); None if it is unknown."""
    row = conn.execute(
        "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, payload)"
        " SELECT gen_random_uuid(), tenant_id, id, %s, %s, %s::jsonb FROM webhook_endpoints"
        " WHERE tenant_id = %s AND id = %s RETURNING id, tenant_id",
        (event.id, event.type, json.dumps(event.body(), default=str), tenant_id, endpoint_id),
    ).fetchone()
    return None if row is None else Pending(row["id"], row["tenant_id"])


def enqueue(rows: Sequence[Pending], settings: Settings | None = None) -> list[UUID]:
    """Put deliveries on the webhooks queue; returns the ids SQS took (the rest wait for the sweeper).
    Never raises for SQS trouble."""
    if not rows:
        return []
    url = (settings or get_settings()).webhook_queue_url
    if not url:
        logger.warning("WEBHOOK_QUEUE_URL is not set; webhook deliveries wait", extra={"count": len(rows)})
        return []
    result = queue.send(
        [
            queue.Outgoing(queue.QueueMessage(id=r.id, tenant_id=r.tenant_id), round(max(r.delay_s, 0)))
            for r in rows
        ],
        queue_url=url,
    )
    if result.failed:
        logger.warning(
            "webhook deliveries not enqueued; left for the sweeper", extra={"count": len(result.failed)}
        )
    return result.sent


# ---------------------------------------------------------------- the sweeper's part

_SWEEP = """
SELECT id, tenant_id, next_attempt_at FROM webhook_deliveries
WHERE status = 'pending'
  AND next_attempt_at <= %(horizon)s
  AND (locked_until IS NULL OR locked_until < %(now)s)
  AND coalesce(enqueued_at, CASE WHEN attempt_count = 0 THEN created_at END, '-infinity') < %(stale)s
ORDER BY next_attempt_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""


def sweep(settings: Settings | None = None, batches: int | None = None) -> int:
    """Enqueue deliveries whose message is missing: outbox rows never enqueued (a crash after the
    commit, SQS refusing), retries due later than SQS's 15-minute delay, and messages lost or sent to
    the webhooks DLQ. Each is enqueued once per sweep (row locks), with its remaining delay."""
    settings = settings or get_settings()
    if not settings.webhook_queue_url:
        return 0
    total = 0
    for _ in range(batches or settings.sweep_max_batches):
        now = datetime.now(UTC)
        with transaction() as conn:
            rows = conn.execute(
                _SWEEP,
                {
                    "now": now,
                    "horizon": now + timedelta(seconds=queue.MAX_DELAY_SECONDS),
                    "stale": now - timedelta(seconds=settings.webhook_outbox_grace_seconds),
                    "limit": settings.sweep_batch_size,
                },
            ).fetchall()
            if not rows:
                break
            items = [
                Pending(r["id"], r["tenant_id"], max(0.0, (r["next_attempt_at"] - now).total_seconds()))
                for r in rows
            ]
            sent = enqueue(items, settings)
            if sent:
                conn.execute(
                    "UPDATE webhook_deliveries SET enqueued_at = greatest(next_attempt_at, %s)"
                    " WHERE id = ANY(%s)",
                    (now, sent),
                )
            total += len(sent)
        if len(rows) < settings.sweep_batch_size:
            break
    if total:
        logger.info("webhook deliveries re-enqueued", extra={"count": total})
    return total


def redriven_events(failed: Sequence[Mapping[str, Any]], letters: Sequence[Mapping[str, Any]]) -> list[Event]:
    """The DLQ processor's changes: `notification.failed` per row it failed, `dlq.created` per letter."""
    events = [
        Event(
            row["tenant_id"],
            "notification.failed",
            {
                "id": str(row["id"]),
                "status": "failed",
                "channel": row["channel"],
                "provider": row["provider"],
                "attempt": row["attempt_count"],
                "error": row["last_error"],
            },
        )
        for row in failed
    ]
    events += [
        Event(
            letter["tenant_id"],
            "dlq.created",
            {
                "id": str(letter["id"]),
                "notification_id": str(letter["notification_id"]),
                "reason": letter["reason"],
                "error": letter["last_error"],
            },
        )
        for letter in letters
    ]
    return events
