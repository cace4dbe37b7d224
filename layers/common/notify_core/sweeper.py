"""The retry sweeper: puts stranded and due work back on the queue.

It picks, in bounded batches with `FOR UPDATE SKIP LOCKED` (two sweepers racing never take the
same row): `retrying` and `scheduled` rows due within SQS's 15-minute delay limit (sent with the
remaining DelaySeconds), `pending` rows whose API call never enqueued them (past their grace), and
`sending` rows whose claim expired (a sender died mid-send). Each row it enqueues becomes `queued`
in the same transaction that locked it, so a row is enqueued once per sweep, whoever sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import queue
from .config import Settings, get_settings
from .db import transaction
from .observability import logger
from .states import transition

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
)
AND (status <> 'pending' OR next_attempt_at <= %(now)s)
FOR UPDATE SKIP LOCKED
"""


@dataclass
class SweepReport:
    enqueued: dict[str, int] = field(default_factory=dict)  # by the status the row was in
    failed_to_enqueue: int = 0
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.enqueued.values())


def sweep(settings: Settings | None = None) -> SweepReport:
    settings = settings or get_settings()
    report = SweepReport()
    for _ in range(settings.sweep_max_batches):
        picked = _sweep_batch(settings, report)
        report.batches += 1
        if picked < settings.sweep_batch_size:
            break
    if report.total or report.failed_to_enqueue:
        logger.info("sweep done", extra={"enqueued": report.enqueued, "failed": report.failed_to_enqueue})
    return report


def _sweep_batch(settings: Settings, report: SweepReport) -> int:
    now = datetime.now(UTC)
    horizon = datetime.fromtimestamp(now.timestamp() + queue.MAX_DELAY_SECONDS, UTC)
    with transaction() as conn:
        rows: list[dict[str, Any]] = conn.execute(
            _PICK, {"now": now, "horizon": horizon, "limit": settings.sweep_batch_size}
        ).fetchall()
        if not rows:
            return 0
        messages = [
            queue.Message(
                r["id"],
                r["tenant_id"],
                _delay(r, now),
            )
            for r in rows
        ]
        # SQS first, inside the transaction that holds the row locks: a row SQS refused stays as it
        # was (and locked rows are skipped by a racing sweeper, so nobody enqueues it twice).
        result = queue.send(messages)
        sent = set(result.sent)
        report.failed_to_enqueue += len(result.failed)
        by_status: dict[str, list[Any]] = {}
        for r in rows:
            if r["id"] in sent:
                by_status.setdefault(r["status"], []).append(r["id"])
        for status, ids in by_status.items():
            sets: dict[str, Any] = {"queued_at": now, "claimed_until": None}
            if status == "pending":
                sets["next_attempt_at"] = None
            transition(conn, ids, [status], "queued", sets=sets)
            report.enqueued[status] = report.enqueued.get(status, 0) + len(ids)
    return len(rows)


def _delay(row: dict[str, Any], now: datetime) -> int:
    if row["status"] in ("retrying", "scheduled") and row["next_attempt_at"] is not None:
        return max(0, min(queue.MAX_DELAY_SECONDS, int((row["next_attempt_at"] - now).total_seconds())))
    return 0
