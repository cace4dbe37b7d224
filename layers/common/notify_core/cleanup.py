"""Daily cleanup: dead letters, attempts, idempotency keys and records, and audit events past their
retention, in bounded batches (each batch its own short transaction, so the job never holds long
locks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from .config import Settings, get_settings
from .db import transaction
from .observability import logger

_JOBS = {
    "dead_letters": "DELETE FROM notification_dlq WHERE id IN"
    " (SELECT id FROM notification_dlq WHERE created_at < %(cutoff)s LIMIT %(limit)s)",
    "attempts": "DELETE FROM notification_attempts WHERE id IN"
    " (SELECT id FROM notification_attempts WHERE created_at < %(cutoff)s LIMIT %(limit)s)",
    "idempotency_keys": "UPDATE notifications SET idempotency_key = NULL, request_hash = NULL WHERE id IN"
    " (SELECT id FROM notifications WHERE idempotency_key IS NOT NULL AND created_at < %(cutoff)s LIMIT %(limit)s)",
    "idempotency_records": "DELETE FROM idempotency_records WHERE id IN"
    " (SELECT id FROM idempotency_records WHERE expiration < extract(epoch FROM %(cutoff)s) LIMIT %(limit)s)",
    "audit_events": "DELETE FROM audit_events WHERE id IN"
    " (SELECT id FROM audit_events WHERE created_at < %(cutoff)s LIMIT %(limit)s)",
    # feedback: finished webhook deliveries (their attempts go with them)
    "webhook_deliveries": "DELETE FROM webhook_deliveries WHERE id IN"
    " (SELECT id FROM webhook_deliveries WHERE created_at < %(cutoff)s AND status <> 'pending' LIMIT %(limit)s)",
}


def run(settings: Settings | None = None, max_batches: int = 100) -> dict[str, int]:
    settings = settings or get_settings()
    now = datetime.now(UTC)
    cutoffs = {
        "dead_letters": now - timedelta(days=settings.dlq_retention_days),
        "attempts": now - timedelta(days=settings.attempt_retention_days),
        "idempotency_keys": now - timedelta(hours=settings.idempotency_window_hours),
        "idempotency_records": now,  # their own expiry is stored with them
        "audit_events": now - timedelta(days=settings.audit_retention_days),
        "webhook_deliveries": now - timedelta(days=settings.attempt_retention_days),  # feedback
    }
    removed: dict[str, int] = {}
    for job, statement in _JOBS.items():
        total = 0
        for _ in range(max_batches):
            with transaction() as conn:
                count = conn.execute(
                    statement, {"cutoff": cutoffs[job], "limit": settings.cleanup_batch_size}
                ).rowcount
            total += count
            if count < settings.cleanup_batch_size:
                break
        removed[job] = total
    logger.info("cleanup done", extra=removed)
    return removed
