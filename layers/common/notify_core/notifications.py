"""Notifications: create (single and batch), read, list, cancel, attempts.

Ingest does one round trip per step for a whole batch: one SELECT of the recipients, one INSERT of
all rows (status `pending`), SendMessageBatch in chunks of 10, one UPDATE to `queued`. If SQS fails
after the insert the rows stay `pending` and the retry sweeper enqueues them: nothing accepted is lost.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg

from . import audit, dispatch, pagination, queue
from .audience import ingest
from .channels import CHANNELS
from .config import get_settings
from .db import transaction
from .errors import Conflict, DomainError, IdempotencyMismatch, NotFound, ValidationFailed
from .integrations import outbox  # feedback
from .models import Attempt, Notification, NotificationCreate, Page, parse
from .providers import serves
from .states import transition

PENDING_GRACE = timedelta(seconds=60)  # the sweeper leaves a fresh `pending` row to its API call this long
CANCELLABLE = ("pending", "scheduled", "queued", "retrying")

COLUMNS = (
    "id, user_id, channel, provider, payload, category, status, idempotency_key, max_attempts, attempt_count,"
    " last_error, provider_message_id, send_at, next_attempt_at, created_at, updated_at, queued_at, sent_at,"
    " failed_at, cancelled_at, template_key, template_version, message_id"
)
# A batch reply needs only these; a single create answers with the whole notification.
BATCH_COLUMNS = "id, status"
_INSERT = (
    "INSERT INTO notifications (id, tenant_id, user_id, channel, provider, payload, category, status,"
    " idempotency_key, request_hash, max_attempts, send_at, next_attempt_at, queued_at,"
    " template_key, template_version, message_id, last_error)"
    " SELECT r.id, %(tenant)s, r.user_id, r.channel, r.provider, r.payload::jsonb, r.category, r.status,"
    " r.idem, r.hash, r.max_attempts, r.send_at,"
    " CASE r.status WHEN 'scheduled' THEN coalesce(r.held, r.send_at) WHEN 'pending' THEN %(grace)s::timestamptz END,"
    " CASE r.status WHEN 'queued' THEN %(now)s::timestamptz END, r.tkey, r.tversion, r.message, r.error"
    " FROM unnest(%(c0)s::uuid[], %(c1)s::uuid[], %(c2)s::text[], %(c3)s::text[], %(c4)s::text[],"
    " %(c5)s::text[], %(c6)s::text[], %(c7)s::text[], %(c8)s::bytea[], %(c9)s::int[], %(c10)s::timestamptz[],"
    " %(c11)s::timestamptz[], %(c12)s::text[], %(c13)s::int[], %(c14)s::uuid[], %(c15)s::text[])"
    " AS r(id, user_id, channel, provider, payload, category, status, idem, hash, max_attempts, send_at,"
    " held, tkey, tversion, message, error)"
    " ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING {returning}"
)


@dataclass
class Outcome:
    """The result for one item of a create call: a notification row (new or replayed) or an error."""

    index: int
    row: dict[str, Any] | None = None
    error: DomainError | None = None
    replayed: bool = False

    @property
    def notification(self) -> Notification:
        assert self.row is not None, "an item that failed has no notification"
        return Notification.model_validate(self.row)

    def as_batch_item(self) -> dict[str, Any]:
        if self.error is not None:
            return {"index": self.index, "error": self.error.body()["error"]}
        assert self.row is not None
        item: dict[str, Any] = {"index": self.index, "id": str(self.row["id"]), "status": self.row["status"]}
        if self.replayed:
            item["idempotent_replay"] = True
        return item


@dataclass
class _Prepared:
    index: int
    request: NotificationCreate
    provider: str
    payload: dict[str, Any]
    idempotency_key: str | None
    request_hash: bytes
    row_id: UUID
    # audience (issue 10): what ingest resolved for the row
    category: str | None = None  # the request's, else its template's
    template_key: str | None = None
    template_version: int | None = None
    message_id: UUID | None = None
    hold_until: datetime | None = None  # inside the user's quiet hours: scheduled until then
    # to a suppressed address: stored `suppressed` with this reason, never enqueued (the record says
    # what happened to it, as the engine's suppression step would)
    suppressed: str | None = None


def _prepare(index: int, raw: Any, header_key: str | None) -> _Prepared:
    if isinstance(raw, NotificationCreate):
        req = raw
    elif isinstance(raw, dict):
        req = parse(NotificationCreate, raw)
    else:
        raise ValidationFailed.field("body", "each notification must be a JSON object")
    channel = CHANNELS[req.channel]
    provider = req.provider or channel.default_provider
    if not serves(provider, req.channel):
        raise ValidationFailed.field("provider", f"{provider} cannot send on the {req.channel} channel")
    if req.template is not None:  # audience: rendered at ingest; the payload may give the address
        payload = ingest.addressing(req.channel, req.payload)
    else:
        payload_model = parse(channel.payload_model, req.payload, prefix="payload")
        payload = payload_model.model_dump(by_alias=True, exclude_none=True)
    if req.idempotency_key and header_key and req.idempotency_key != header_key:
        raise ValidationFailed.field("idempotency_key", "differs from the Idempotency-Key header")
    key = req.idempotency_key or header_key
    if not key:  # the request hash only serves idempotency
        return _Prepared(index, req, provider, payload, None, b"", uuid.uuid4(), category=req.category)
    canonical = json.dumps(
        {
            "user_id": str(req.user_id) if req.user_id else None,
            "channel": req.channel,
            "provider": provider,
            "payload": payload,
            "send_at": req.send_at.isoformat() if req.send_at else None,
            "max_attempts": req.max_attempts,
            "category": req.category,
            **ingest.canonical(req),
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return _Prepared(
        index,
        req,
        provider,
        payload,
        key,
        hashlib.sha256(canonical.encode()).digest(),
        uuid.uuid4(),
        category=req.category,
    )


def _fill_recipient(item: _Prepared, users: dict[UUID, dict[str, Any]]) -> None:
    """A payload without an address takes the user's contact for the channel."""
    channel = CHANNELS[item.request.channel]
    user = None
    if item.request.user_id is not None:
        user = users.get(item.request.user_id)
        if user is None:
            raise ValidationFailed.field("user_id", "no user with this id")
    if channel.recipient(item.payload):
        return
    fallback = channel.contact(user) if user is not None else None
    if not fallback:
        source = "and the user has none" if user is not None else "and no user_id to take it from"
        raise ValidationFailed.field(
            f"payload.{channel.recipient_field}", f"{channel.describes} is required {source}"
        )
    item.payload[channel.recipient_field] = fallback


def create(
    tenant_id: UUID, items: list[Any], header_key: str | None = None, *, batch: bool = False
) -> list[Outcome]:
    """Validate, store, enqueue. Returns one Outcome per input item, in order."""
    outcomes = [Outcome(index=i) for i in range(len(items))]
    prepared: list[_Prepared] = []
    for i, raw in enumerate(items):
        key = f"{header_key}:{i}" if (batch and header_key) else header_key
        try:
            prepared.append(_prepare(i, raw, key))
        except DomainError as exc:
            outcomes[i].error = exc
    if not prepared:
        return outcomes

    now = datetime.now(UTC)
    returning = BATCH_COLUMNS if batch else COLUMNS
    with transaction() as conn:
        # audience: users with their preferences, templates and categories, in one round trip
        view = ingest.load(conn, tenant_id, prepared)
        users = view.users
        ready: list[_Prepared] = []
        for p in prepared:
            try:
                ingest.render_item(p, view)
                _fill_recipient(p, users)
                ingest.validate_rendered(p)
                ready.append(p)
            except DomainError as exc:
                outcomes[p.index].error = exc
        # audience: preferences, suppressions (one query) and quiet hours; what is blocked is refused
        for p, refusal in ingest.screen(conn, tenant_id, ready, view, now):
            outcomes[p.index].error = refusal
        ready = [p for p in ready if outcomes[p.index].error is None]
        stored = store(conn, tenant_id, ready, outcomes, now=now, returning=returning)
    rows = finish(tenant_id, ready, stored)
    for p in ready:
        if p.row_id in rows:
            outcomes[p.index].row = rows[p.row_id]
    return outcomes


@dataclass
class Stored:
    """Rows inserted (by id), and the messages sent while the INSERT ran (settled by `finish`)."""

    inserted: dict[UUID, dict[str, Any]]
    ahead: Future[queue.SendResult] | None


def store(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    ready: list[_Prepared],
    outcomes: list[Outcome] | None,
    *,
    now: datetime,
    returning: str,
) -> Stored:
    """ONE INSERT for all of `ready` (inside the caller's transaction), their messages sent while it
    runs when no row has an idempotency key. Messages (audience) store their fan-out through here."""
    settings = get_settings()
    ahead: Future[queue.SendResult] | None = None
    # Without idempotency keys every ready row will be inserted: the messages travel while the
    # INSERT runs, and the rows are stored `queued` at once (the ones SQS refuses go back to
    # `pending` below). With keys, a row may turn out to be a replay: enqueue after the insert.
    if ready and all(p.idempotency_key is None for p in ready):
        due = [p for p in ready if not _scheduled(p, now) and p.suppressed is None]
        if due:
            ahead = dispatch.send_ahead([dispatch.Enqueue(p.row_id, tenant_id, "queued") for p in due])
    insert = functools.partial(
        _insert,
        conn,
        tenant_id,
        now=now,
        default_attempts=settings.default_max_attempts,
        returning=returning,
    )
    inserted = {row["id"]: row for row in insert(ready, queued=ahead is not None)}
    clashes = [p for p in ready if p.row_id not in inserted]
    if clashes:
        assert outcomes is not None, "rows without idempotency keys never clash"
        again = _resolve_idempotency(conn, tenant_id, clashes, outcomes, settings.idempotency_window_hours)
        inserted.update((row["id"], row) for row in insert(again, queued=False))
    return Stored(inserted, ahead)


def finish(tenant_id: UUID, ready: list[_Prepared], stored: Stored) -> dict[UUID, dict[str, Any]]:
    """After the commit: settle the messages sent ahead, or enqueue the `pending` rows; each stored
    item's row with its status as it is now."""
    inserted, ahead = stored.inserted, stored.ahead
    if ahead is not None:
        changed = dispatch.settle_ahead(ahead.result())
    else:
        to_enqueue = [p for p in ready if p.row_id in inserted and inserted[p.row_id]["status"] == "pending"]
        # The advisory `queued` mark need not wait for the WAL flush: losing it in a crash leaves
        # the row `pending` with its message on SQS, and the sender claims `pending` rows too.
        changed = dispatch.enqueue(
            [dispatch.Enqueue(p.row_id, tenant_id, "pending") for p in to_enqueue],
            fast_commit=True,
            report=True,
        ).rows
    rows: dict[UUID, dict[str, Any]] = {}
    for p in ready:
        row = inserted.get(p.row_id)
        if row is None:
            continue
        row.update({k: v for k, v in changed.get(p.row_id, {}).items() if k in row})
        rows[p.row_id] = row
    return rows


def _insert(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    items: list[_Prepared],
    *,
    now: datetime,
    default_attempts: int,
    queued: bool,
    returning: str,
) -> list[dict[str, Any]]:
    """One INSERT for the whole batch: one array per column, so the statement text is constant per
    `returning`. Rows due now are `queued` (their messages already travelling) or `pending`."""
    if not items:
        return []
    columns: list[list[Any]] = [[] for _ in range(16)]
    due_status = "queued" if queued else "pending"
    for p in items:
        status = "suppressed" if p.suppressed else "scheduled" if _scheduled(p, now) else due_status
        row = (
            p.row_id,
            p.request.user_id,
            p.request.channel,
            p.provider,
            json.dumps(p.payload),
            p.category,
            status,
            p.idempotency_key,
            p.request_hash if p.idempotency_key else None,
            p.request.max_attempts or default_attempts,
            p.request.send_at,
            p.hold_until,
            p.template_key,
            p.template_version,
            p.message_id,
            p.suppressed,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    params = {"tenant": tenant_id, "grace": now + PENDING_GRACE, "now": now}
    params |= {f"c{i}": c for i, c in enumerate(columns)}
    return conn.execute(_INSERT.format(returning=returning), params).fetchall()


def _scheduled(item: _Prepared, now: datetime) -> bool:
    if item.hold_until is not None:  # audience: inside the user's quiet hours
        return True
    return item.request.send_at is not None and item.request.send_at > now


def _resolve_idempotency(
    conn: psycopg.Connection[Any],
    tenant_id: UUID,
    clashes: list[_Prepared],
    outcomes: list[Outcome],
    window_hours: int,
) -> list[_Prepared]:
    """Items whose key was taken: same body → the first notification; other body → 409.

    Returns the items whose key had outlived its window (the cleanup job had not released it yet):
    the key is moved off the old notification and the caller inserts them again.
    """
    keys = [p.idempotency_key for p in clashes]
    existing = {
        row["idempotency_key"]: row
        for row in conn.execute(
            f"SELECT {COLUMNS}, request_hash FROM notifications WHERE tenant_id = %s AND idempotency_key = ANY(%s)",
            (tenant_id, keys),
        ).fetchall()
    }
    cutoff = datetime.now(UTC) - timedelta(hours=window_hours)
    expired: list[_Prepared] = []
    for p in clashes:
        row = existing.get(p.idempotency_key)
        if row is None:  # taken by a transaction that rolled back, or released meanwhile
            outcomes[p.index].error = Conflict("the idempotency key is in use by a concurrent request; retry")
        elif row["created_at"] < cutoff:
            expired.append(p)
        elif bytes(row["request_hash"] or b"") != p.request_hash:
            outcomes[p.index].error = IdempotencyMismatch(
                "this idempotency key was used with a different request body",
                [{"field": "idempotency_key", "message": "already used with a different request body"}],
            )
        else:
            row.pop("request_hash")
            outcomes[p.index].row = row
            outcomes[p.index].replayed = True
    if expired:
        conn.execute(
            "UPDATE notifications SET idempotency_key = NULL WHERE tenant_id = %s AND idempotency_key = ANY(%s)",
            (tenant_id, [p.idempotency_key for p in expired]),
        )
    return expired


def get(tenant_id: UUID, notification_id: UUID) -> Notification:
    with transaction() as conn:
        row = conn.execute(
            f"SELECT {COLUMNS} FROM notifications WHERE tenant_id = %s AND id = %s",
            (tenant_id, notification_id),
        ).fetchone()
    if row is None:
        raise NotFound(f"notification {notification_id} not found")
    return Notification.model_validate(row)


# The address a notification goes to, as the console's search matches it (migration 0008 indexes
# exactly this expression: keep the two equal).
RECIPIENT = "lower(coalesce(payload->>'to', payload->>'token', payload->>'topic'))"


def _like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with `text` (its wildcards taken literally)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def list_page(
    tenant_id: UUID,
    *,
    limit: int = 20,
    cursor: str | None = None,
    status: str | None = None,
    user_id: UUID | None = None,
    channel: str | None = None,
    category: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    q: str | None = None,
) -> Page[Notification]:
    """Newest first. `created_after` / `created_before`: a half-open range [after, before) of
    acceptance times; `q`: a notification, user or message id (exactly), else the start of the
    recipient's address (case-insensitive)."""
    if created_after is not None and created_before is not None and created_after >= created_before:
        raise ValidationFailed(
            "the time range is empty: created_after must be before created_before",
            [{"field": "created_after", "message": "must be before created_before"}],
        )
    where = ["tenant_id = %s"]
    params: list[Any] = [tenant_id]
    for column, value in (
        ("status", status),
        ("user_id", user_id),
        ("channel", channel),
        ("category", category),
    ):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if created_after is not None:
        where.append("created_at >= %s")
        params.append(created_after)
    if created_before is not None:
        where.append("created_at < %s")
        params.append(created_before)
    if q is not None:
        try:
            as_id = UUID(q)
        except ValueError:
            where.append(f"{RECIPIENT} LIKE %s")
            params.append(_like_prefix(q))
        else:
            where.append("(id = %s OR user_id = %s OR message_id = %s)")
            params += [as_id, as_id, as_id]
    rows, next_cursor = pagination.fetch_page("notifications", COLUMNS, where, params, limit, cursor)
    return Page[Notification](data=[Notification.model_validate(r) for r in rows], next_cursor=next_cursor)


def cancel(tenant_id: UUID, notification_id: UUID, actor: audit.Actor = audit.SYSTEM) -> Notification:
    with transaction() as conn:
        rows = transition(
            conn,
            [notification_id],
            CANCELLABLE,
            "cancelled",
            tenant_id=tenant_id,
            sets={"cancelled_at": datetime.now(UTC), "next_attempt_at": None},
            returning=COLUMNS,
        )
        if rows:
            audit.record(
                conn,
                tenant_id,
                actor,
                "notification.cancel",
                "notification",
                notification_id,
                {"status": "cancelled"},
            )
            # --- feedback: notification.cancelled, written in the cancel's transaction
            cancelled = outbox.Event(tenant_id, "notification.cancelled", _event_data(rows[0]))
            webhooks = outbox.emit(conn, [cancelled])
        else:
            row = conn.execute(
                "SELECT status FROM notifications WHERE tenant_id = %s AND id = %s",
                (tenant_id, notification_id),
            ).fetchone()
    if rows:
        outbox.enqueue(webhooks)
        return Notification.model_validate(rows[0])
    if row is None:
        raise NotFound(f"notification {notification_id} not found")
    raise Conflict(
        f"a notification in status {row['status']!r} can no longer be cancelled",
        [{"field": "status", "message": row["status"]}],
    )


def _event_data(row: dict[str, Any]) -> dict[str, Any]:
    """A notification in a webhook event (feedback)."""
    data = {
        "id": str(row["id"]),
        "status": row["status"],
        "channel": row["channel"],
        "provider": row["provider"],
    }
    if row.get("user_id") is not None:
        data["user_id"] = str(row["user_id"])
    return data


def attempts(tenant_id: UUID, notification_id: UUID) -> list[Attempt]:
    with transaction() as conn:
        rows = conn.execute(
            "SELECT a.attempt_number, a.provider, a.outcome, a.error, a.provider_message_id, a.duration_ms,"
            " a.created_at, a.provider_config_id, a.fault FROM notifications n"
            " LEFT JOIN notification_attempts a ON a.notification_id = n.id"
            " WHERE n.tenant_id = %s AND n.id = %s ORDER BY a.attempt_number, a.id",
            (tenant_id, notification_id),
        ).fetchall()
    if not rows:
        raise NotFound(f"notification {notification_id} not found")
    return [Attempt.model_validate(r) for r in rows if r["attempt_number"] is not None]
