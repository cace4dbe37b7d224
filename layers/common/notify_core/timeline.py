"""A notification's timeline (the console, issue 14): everything the platform knows about one
notification, in the order it happened, from the tables that already record it.

    created · scheduled (send_at) · held (quiet hours) · queued · each attempt (provider, outcome,
    duration, error) · sent / failed / cancelled / suppressed · provider events (delivered, bounced,
    opened, ...) · dead letters and their replays · webhook deliveries · audit events about it

One read transaction, one query per source (each bounded), all by index; the entries are built by a
pure function (`entries`) over the rows, so the ordering and the wording are unit-testable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal, get_args
from uuid import UUID

from pydantic import BaseModel, Field

from .db import transaction
from .errors import NotFound
from .models import Notification
from .notifications import COLUMNS

Kind = Literal[
    "created",
    "scheduled",
    "held",
    "queued",
    "attempt",
    "sent",
    "failed",
    "cancelled",
    "suppressed",
    "provider_event",
    "dead_letter",
    "replayed",
    "webhook",
    "audit",
]
PER_SOURCE = 200  # rows read from each source at most (attempts are bounded by max_attempts ≤ 50)

# notify_core/migrations/0008_console.sql indexes exactly this expression: keep the two equal.
WEBHOOK_SUBJECT = "coalesce(payload->'data'->>'notification_id', payload->'data'->>'id')"


class TimelineEntry(BaseModel):
    at: datetime = Field(description="When it happened")
    kind: Kind
    summary: str = Field(
        description="One line for people", examples=["attempt 1 via sendgrid: sent in 41 ms"]
    )
    detail: dict[str, Any] = Field(description="The fields of the source row that matter for this entry")


class Timeline(BaseModel):
    notification: Notification = Field(description="The notification, with its rendered content (payload)")
    entries: list[TimelineEntry] = Field(description="Oldest first")


def timeline(tenant_id: UUID, notification_id: UUID) -> Timeline:
    with transaction() as conn:
        row = conn.execute(
            f"SELECT {COLUMNS}, held_at, held_until FROM notifications WHERE tenant_id = %s AND id = %s",
            (tenant_id, notification_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"notification {notification_id} not found")
        key = (tenant_id, notification_id, PER_SOURCE)
        attempts = conn.execute(
            "SELECT attempt_number, provider, outcome, error, error_code, provider_message_id, duration_ms,"
            " fault, provider_config_id, created_at FROM notification_attempts"
            " WHERE tenant_id = %s AND notification_id = %s ORDER BY created_at, id LIMIT %s",
            key,
        ).fetchall()
        events = conn.execute(
            "SELECT type, provider, occurred_at, created_at, detail FROM delivery_events"
            " WHERE tenant_id = %s AND notification_id = %s ORDER BY created_at, id LIMIT %s",
            key,
        ).fetchall()
        letters = conn.execute(
            "SELECT id, reason, last_error, attempt_count, created_at, replayed_at FROM notification_dlq"
            " WHERE tenant_id = %s AND notification_id = %s ORDER BY created_at, id LIMIT %s",
            key,
        ).fetchall()
        deliveries = conn.execute(
            "SELECT id, endpoint_id, event_type, status, attempt_count, last_status_code, last_error,"
            " last_duration_ms, created_at, delivered_at FROM webhook_deliveries"
            f" WHERE tenant_id = %s AND {WEBHOOK_SUBJECT} = %s::text ORDER BY created_at, id LIMIT %s",
            key,
        ).fetchall()
        audits = conn.execute(
            "SELECT action, actor_type, actor_prefix, changes, created_at FROM audit_events"
            " WHERE tenant_id = %s AND target_type = 'notification' AND target_id = %s::text"
            " ORDER BY created_at, id LIMIT %s",
            key,
        ).fetchall()
    notification = Notification.model_validate(row)
    return Timeline(
        notification=notification,
        entries=entries(row, attempts, events, letters, deliveries, audits),
    )


def _ms(value: Any) -> str:
    return f"{value} ms" if value is not None else "no duration"


def entries(
    row: Mapping[str, Any],
    attempts: Iterable[Mapping[str, Any]] = (),
    events: Iterable[Mapping[str, Any]] = (),
    letters: Iterable[Mapping[str, Any]] = (),
    deliveries: Iterable[Mapping[str, Any]] = (),
    audits: Iterable[Mapping[str, Any]] = (),
) -> list[TimelineEntry]:
    """Pure: the timeline of one notification row and the rows about it, oldest first (entries at
    the same instant keep the order of the list below: created before queued before an attempt)."""
    out: list[TimelineEntry] = []

    def add(at: datetime | None, kind: Kind, summary: str, **detail: Any) -> None:
        if at is not None:
            out.append(TimelineEntry(at=at, kind=kind, summary=summary, detail=detail))

    via = (
        f" from template {row['template_key']} v{row['template_version']}" if row.get("template_key") else ""
    )
    add(
        row["created_at"],
        "created",
        f"accepted for {row['channel']} via {row['provider']}{via}",
        channel=row["channel"],
        provider=row["provider"],
        category=row.get("category"),
        idempotency_key=row.get("idempotency_key"),
        message_id=str(row["message_id"]) if row.get("message_id") else None,
    )
    if row.get("send_at") is not None:
        add(
            row["created_at"],
            "scheduled",
            f"scheduled for {row['send_at'].isoformat()}",
            send_at=row["send_at"],
        )
    if row.get("held_until") is not None:
        add(
            row.get("held_at") or row["created_at"],
            "held",
            f"held for the user's quiet hours until {row['held_until'].isoformat()}",
            until=row["held_until"],
        )
    # Row timestamps are taken in Python before the transaction that writes them, attempt rows'
    # by the database: an instant can trail what caused it by a little. No entry is placed before
    # its cause: queued not before created, sent/failed not before the attempt that decided them.
    attempts = list(attempts)
    last_attempt = max((a["created_at"] for a in attempts), default=None)

    def after(at: datetime | None, *causes: datetime | None) -> datetime | None:
        return None if at is None else max([at, *(c for c in causes if c is not None)])

    queued = after(row.get("queued_at"), row["created_at"])
    first_attempt = min((a["created_at"] for a in attempts), default=None)
    requeued = first_attempt is not None and queued is not None and queued > first_attempt
    add(queued, "queued", "put back on the delivery queue" if requeued else "put on the delivery queue")
    for a in attempts:
        error = f": {a['error']}" if a.get("error") else ""
        outcome = str(a["outcome"]).replace("_", " ")
        add(
            a["created_at"],
            "attempt",
            f"attempt {a['attempt_number']} via {a['provider']}: {outcome} in {_ms(a['duration_ms'])}{error}",
            attempt=a["attempt_number"],
            provider=a["provider"],
            outcome=a["outcome"],
            duration_ms=a["duration_ms"],
            error=a.get("error"),
            error_code=a.get("error_code"),
            fault=a.get("fault"),
            provider_message_id=a.get("provider_message_id"),
        )
    add(
        after(row.get("sent_at"), last_attempt),
        "sent",
        f"taken by {row['provider']}",
        provider_message_id=row.get("provider_message_id"),
    )
    add(
        after(row.get("failed_at"), last_attempt),
        "failed",
        f"failed: {row.get('last_error') or 'no error recorded'}",
    )
    add(row.get("cancelled_at"), "cancelled", "cancelled")
    if row["status"] == "suppressed":
        add(row["updated_at"], "suppressed", f"not sent: {row.get('last_error') or 'suppressed'}")
    for e in events:
        add(
            e["occurred_at"],
            "provider_event",
            f"{e['provider']} reported {e['type']}",
            type=e["type"],
            provider=e["provider"],
            received_at=e["created_at"],
            provider_detail=e.get("detail") or {},
        )
    for d in letters:
        add(
            d["created_at"],
            "dead_letter",
            f"dead letter ({str(d['reason']).replace('_', ' ')})",
            dead_letter_id=str(d["id"]),
            reason=d["reason"],
            error=d.get("last_error"),
            attempt_count=d["attempt_count"],
        )
        add(
            d.get("replayed_at"),
            "replayed",
            "dead letter replayed with a fresh attempt budget",
            dead_letter_id=str(d["id"]),
        )
    for w in deliveries:
        code = f" (HTTP {w['last_status_code']})" if w.get("last_status_code") is not None else ""
        add(
            w["created_at"],
            "webhook",
            f"webhook {w['event_type']}: {w['status']} after {w['attempt_count']} attempt(s){code}",
            delivery_id=str(w["id"]),
            endpoint_id=str(w["endpoint_id"]),
            event_type=w["event_type"],
            status=w["status"],
            attempt_count=w["attempt_count"],
            status_code=w.get("last_status_code"),
            error=w.get("last_error"),
            duration_ms=w.get("last_duration_ms"),
            delivered_at=w.get("delivered_at"),
        )
    for u in audits:
        who = u.get("actor_prefix") or u["actor_type"]
        add(
            u["created_at"],
            "audit",
            f"{u['action']} by {who}",
            action=u["action"],
            changes=u.get("changes") or {},
        )
    order = {kind: i for i, kind in enumerate(get_args(Kind))}
    out.sort(key=lambda e: (e.at, order[e.kind]))
    return out
