"""The one enqueue path: ingest, the sweeper, the sender's retries and DLQ replay all put
notifications on the queue through `enqueue`.

SQS first, then the rows whose message SQS took move to `queued` (one UPDATE per state they came
from, each through `states.transition`). A row whose message SQS refused keeps its state, and every
state a row can be left in here (`pending`, `scheduled`, `retrying`, `failed`→`pending`) is one
the sweeper picks up again: nothing is lost when SQS fails, only delayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from . import clients, queue
from .db import transaction
from .errors import DatabaseUnavailable
from .observability import logger
from .queue import Outgoing, QueueMessage
from .states import transition

# A future due time (a retry or a scheduled send travelling with DelaySeconds) is kept, so that a
# message arriving early is put back rather than sent early; a due time already past is cleared.
_KEEP_FUTURE_DUE = sql.SQL("CASE WHEN next_attempt_at > now() THEN next_attempt_at END")
REPLY_COLUMNS = "id, status, queued_at, updated_at, next_attempt_at"


@dataclass(frozen=True, slots=True)
class Enqueue:
    notification_id: UUID
    tenant_id: UUID
    status: str  # the state the row is in now; `queued` rows are re-sent without a state change
    delay_s: float = 0.0
    first_sent_at: float | None = None  # a put-back message's original send time (QueueMessage)


@dataclass
class Enqueued:
    sent: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    # With report=True: each sent row's columns after the mark (or as another process left them)
    rows: dict[UUID, dict[str, Any]] = field(default_factory=dict)


def _outgoing(items: Sequence[Enqueue]) -> list[Outgoing]:
    return [
        Outgoing(
            QueueMessage(id=i.notification_id, tenant_id=i.tenant_id, first_sent_at=i.first_sent_at),
            round(i.delay_s),
        )
        for i in items
    ]


def send_ahead(items: Sequence[Enqueue]) -> Future[queue.SendResult]:
    """Start sending `items`' messages now, on a thread of its own, while the caller stores the
    rows as `queued`; hand the result to `settle_ahead`. A message may so arrive before its row is
    visible: the sender puts such a message back for a moment (delivery outcome `unborn`)."""
    pool = clients.get(
        "enqueue-ahead",
        lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="enqueue"),
        lambda p: p.shutdown(wait=False),
    )
    return pool.submit(queue.send, _outgoing(items))


def settle_ahead(result: queue.SendResult) -> dict[UUID, dict[str, Any]]:
    """Rows stored `queued` whose message SQS refused go back to `pending`, due for the sweeper
    now. Returns their new columns. (A crash before this leaves them `queued` without a message:
    the sweeper's stale-queued pass finds them.)"""
    if not result.failed:
        return {}
    logger.warning("not enqueued; left for the sweeper", extra={"count": len(result.failed)})
    try:
        with transaction() as conn:
            rows = transition(
                conn,
                result.failed,
                ["queued"],
                "pending",
                sets={"queued_at": None, "next_attempt_at": sql.SQL("now()")},
                returning=REPLY_COLUMNS,
            )
    except (psycopg.Error, DatabaseUnavailable) as exc:
        # The rows are stored: left `queued` without a message, the sweeper's stale-queued pass
        # sends them. Answering the client with an error would invite a retry that sends twice.
        logger.warning("could not put unsent rows back to pending", extra={"error": type(exc).__name__})
        return {}
    return {row.pop("id"): row for row in rows}


def enqueue(
    items: Sequence[Enqueue],
    *,
    conn: psycopg.Connection[Any] | None = None,
    fast_commit: bool = False,
    report: bool = False,
) -> Enqueued:
    """Send `items` to SQS and mark the ones SQS took `queued`.

    `conn`: mark inside the caller's transaction (the sweeper, which holds the rows' locks);
    otherwise in a transaction of its own, with `fast_commit` not waiting for the WAL flush (losing
    that mark in a crash leaves the row in its old state, which the sender and the sweeper accept).
    `report`: return the rows' current columns, re-read for any row another process moved first
    (the sender may claim a row before its `queued` mark lands). Never raises for SQS errors.
    """
    if not items:
        return Enqueued()
    result = queue.send(_outgoing(items))
    out = Enqueued(sent=result.sent, failed=result.failed)
    if result.failed:
        logger.warning("not enqueued; left for the sweeper", extra={"count": len(result.failed)})
    if not result.sent:
        return out
    taken = set(result.sent)
    groups: dict[str, list[UUID]] = {}
    for item in items:
        if item.notification_id in taken and item.status != "queued":
            groups.setdefault(item.status, []).append(item.notification_id)
    if conn is not None:
        out.rows = _mark(conn, groups, taken if report else set())
        return out
    try:
        with transaction() as own, own.pipeline():
            if fast_commit:
                own.execute("SET LOCAL synchronous_commit = off")
            out.rows = _mark(own, groups, taken if report else set())
    except (
        psycopg.Error,
        DatabaseUnavailable,
    ) as exc:  # transaction() turns a lost connection into the latter
        # The messages are on the queue and the sender claims rows in any of these states.
        logger.warning("could not mark notifications queued", extra={"error": type(exc).__name__})
    return out


def _mark(
    conn: psycopg.Connection[Any], groups: dict[str, list[UUID]], report: set[UUID]
) -> dict[UUID, dict[str, Any]]:
    now = datetime.now(UTC)
    rows: dict[UUID, dict[str, Any]] = {}
    for status, ids in groups.items():
        moved = transition(
            conn,
            ids,
            [status],
            "queued",
            sets={
                "queued_at": now,
                "claimed_until": None,
                "claim_id": None,
                "next_attempt_at": None if status == "pending" else _KEEP_FUTURE_DUE,
            },
            returning=REPLY_COLUMNS,
        )
        for row in moved:
            rows[row.pop("id")] = row
    missing = [i for i in report if i not in rows]
    if missing:
        for row in conn.execute(
            f"SELECT {REPLY_COLUMNS} FROM notifications WHERE id = ANY(%s)", (missing,)
        ).fetchall():
            rows[row.pop("id")] = row
    return rows
