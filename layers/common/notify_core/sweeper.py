"""The retry sweeper: puts stranded and due work back on the queue, through the one enqueue path.

It picks, in bounded batches with `FOR UPDATE SKIP LOCKED` (two sweepers racing never take the
same row):
- `retrying` and `scheduled` rows due within SQS's 15-minute delay limit (sent with the remaining
  DelaySeconds);
- `pending` rows whose API call never enqueued them (past their grace);
- `sending` rows whose claim expired (their sender died mid-batch);
- `queued` rows whose message can no longer arrive (lost to a purge, the queue's retention, an
  operator's mistake): queued longer ago than the queue could still deliver them — its visibility
  timeout times maxReceiveCount plus the longest delay, unless STALE_QUEUED_SECONDS says otherwise.
  If the message was only slow, the claim absorbs the duplicate.
Each row it enqueues becomes `queued` in the same transaction that locked it, so a row is enqueued
once per sweep, whoever sweeps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import clients, dispatch, queue
from .config import Settings, get_settings
from .db import transaction
from .observability import logger

_PICK = """
SELECT id, tenant_id, status, next_attempt_at FROM notifications
WHERE id IN (
    (SELECT id FROM notifications
      WHERE status IN ('retrying', 'scheduled', 'pending')
        AND next_attempt_at <= %(horizon)s
        AND (status <> 'pending' OR next_attempt_at <= %(now)s)
      ORDER BY next_attempt_at LIMIT %(limit)s)
    UNION ALL
    (SELECT id FROM notifications
      WHERE status = 'sending' AND claimed_until < %(now)s
      ORDER BY claimed_until LIMIT %(limit)s)
    UNION ALL
    (SELECT id FROM notifications
      WHERE status = 'queued' AND coalesce(next_attempt_at, queued_at) < %(stale)s
      ORDER BY coalesce(next_attempt_at, queued_at) LIMIT %(limit)s)
)
AND (status <> 'pending' OR next_attempt_at <= %(now)s)
FOR UPDATE SKIP LOCKED
"""

DEFAULT_STALE_SECONDS = 180 * 5 + queue.MAX_DELAY_SECONDS  # the template's queue, if it cannot be asked


@dataclass
class SweepReport:
    enqueued: dict[str, int] = field(default_factory=dict)  # by the status the row was in
    failed_to_enqueue: int = 0
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.enqueued.values())


def stale_queued_seconds(settings: Settings) -> int:
    """How long a `queued` row may wait for its message: STALE_QUEUED_SECONDS, else derived from the
    queue (asked once per container): every receive may hide the message for the visibility
    timeout, SQS redrives it after maxReceiveCount receives, and it may have travelled with the
    longest delay. Past that, the message is gone (or in the DLQ, where the processor decides)."""
    if settings.stale_queued_seconds:
        return settings.stale_queued_seconds
    return clients.get("stale-queued-seconds", _derive_stale_seconds)


def _derive_stale_seconds() -> int:
    from . import aws

    try:
        attributes = queue.queue_attributes()
    except aws.AwsError as exc:
        logger.warning("queue attributes unavailable", extra={"error": str(exc)})
        return DEFAULT_STALE_SECONDS
    visibility = int(attributes.get("VisibilityTimeout", 30))
    redrive = json.loads(attributes.get("RedrivePolicy") or "{}")
    receives = int(redrive.get("maxReceiveCount", 1))
    return visibility * receives + queue.MAX_DELAY_SECONDS


def sweep(settings: Settings | None = None) -> SweepReport:
    settings = settings or get_settings()
    report = SweepReport()
    stale_s = stale_queued_seconds(settings)
    for _ in range(settings.sweep_max_batches):
        picked = _sweep_batch(settings, report, stale_s)
        report.batches += 1
        if picked < settings.sweep_batch_size:
            break
    if report.total or report.failed_to_enqueue:
        logger.info("sweep done", extra={"enqueued": report.enqueued, "failed": report.failed_to_enqueue})
    return report


def _sweep_batch(settings: Settings, report: SweepReport, stale_s: int) -> int:
    now = datetime.now(UTC)
    horizon = now + timedelta(seconds=queue.MAX_DELAY_SECONDS)
    with transaction() as conn:
        rows: list[dict[str, Any]] = conn.execute(
            _PICK,
            {
                "now": now,
                "horizon": horizon,
                "stale": now - timedelta(seconds=stale_s),
                "limit": settings.sweep_batch_size,
            },
        ).fetchall()
        if not rows:
            return 0
        # SQS first, inside the transaction that holds the row locks: a row SQS refused stays as it
        # was (and locked rows are skipped by a racing sweeper, so nobody enqueues it twice).
        result = dispatch.enqueue(
            [dispatch.Enqueue(r["id"], r["tenant_id"], r["status"], _delay(r, now)) for r in rows],
            conn=conn,
        )
        if result.failed:
            report.failed_to_enqueue += len(result.failed)
        sent = set(result.sent)
        for r in rows:
            if r["id"] in sent:
                report.enqueued[r["status"]] = report.enqueued.get(r["status"], 0) + 1
        _touch_requeued(conn, [r["id"] for r in rows if r["status"] == "queued" and r["id"] in sent], now)
    return len(rows)


def _touch_requeued(conn: Any, ids: list[Any], now: datetime) -> None:
    """A re-sent `queued` row's clock starts again (it is not stale until its new message is)."""
    if ids:
        conn.execute(
            "UPDATE notifications SET queued_at = %s, next_attempt_at = NULL WHERE id = ANY(%s)"
            " AND status = 'queued'",
            (now, ids),
        )


def _delay(row: dict[str, Any], now: datetime) -> int:
    if row["status"] in ("retrying", "scheduled") and row["next_attempt_at"] is not None:
        return max(0, min(queue.MAX_DELAY_SECONDS, int((row["next_attempt_at"] - now).total_seconds())))
    return 0
