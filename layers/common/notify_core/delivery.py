"""Delivery: claim a batch, send its records concurrently, record every outcome in one go.

A batch costs a fixed number of database round trips whatever its size: one UPDATE claims every
due row (`pending|queued|retrying → sending`, or a `sending` row whose lease expired), and one
pipelined transaction records the outcomes (one UPDATE for the notifications, one INSERT for the
attempts, one for the dead letters). Only then are retries put back on SQS.

What happens to a record:
- not claimable (already sent, cancelled, being sent by another sender, a duplicate delivery) →
  nothing; the message is deleted (not a failure).
- claimable but not due yet (a delayed message that arrived early) → re-sent with the remaining delay.
- over the provider's send rate → back to `queued`, re-sent with a delay; no attempt is counted.
- over the recipient's hourly cap for the channel → `suppressed` with the reason.
- sent → `sent`, with the provider's message id and response.
- transient error → `retrying` at now + backoff (exponential, jittered, at least Retry-After); due
  within 15 minutes → re-sent now with DelaySeconds and marked `queued`; later → left for the sweeper.
- permanent error, or a transient one that exhausts max_attempts → `failed` + a dead letter.
- anything unexpected (a bug, Redis/DB trouble mid-record) → the claim is released (`queued`) and the
  record is reported in batchItemFailures, so SQS redelivers it and, after maxReceiveCount, redrives
  it to the DLQ where the DLQ processor records it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from psycopg import sql
from pydantic import Json, ValidationError

from . import queue
from .config import Settings, get_settings
from .db import transaction
from .dlq import record_dead_letters
from .observability import logger, metrics
from .providers import (
    OutgoingMessage,
    PermanentProviderError,
    TransientProviderError,
    get_provider,
)
from .queue import QueueMessage
from .states import apply_outcomes, transition

CLAIMABLE = ("pending", "queued", "retrying")
DUE_SKEW = timedelta(seconds=2)  # SQS delays and the database clock may disagree by this much
CLAIM_COLUMNS = (
    "id, tenant_id, user_id, channel, provider, payload, attempt_count, max_attempts, next_attempt_at"
)

Kind = Literal["sent", "retry", "failed", "suppressed", "deferred", "released", "skipped", "early"]


def backoff_seconds(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Exponential backoff with 'equal jitter': between half and all of base·2^(attempt-1), capped,
    and never sooner than the provider's Retry-After."""
    ceiling = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2 ** max(attempt - 1, 0))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


@dataclass
class Outcome:
    kind: Kind
    notification_id: UUID
    tenant_id: UUID | None = None
    error: str | None = None
    delay_s: float = 0.0
    duration_ms: int = 0
    provider: str = ""
    provider_message_id: str | None = None
    provider_response: dict[str, Any] | None = None
    attempt: int = 0
    reason: str | None = None  # dead-letter reason
    channel: str = ""


@dataclass
class Batch:
    """One SQS batch: the rows claimed for it and the outcomes gathered while sending."""

    claimed: dict[UUID, dict[str, Any]]
    early: dict[UUID, tuple[UUID, float]] = field(default_factory=dict)  # id -> (tenant, seconds left)
    outcomes: list[Outcome] = field(default_factory=list)
    _taken: set[UUID] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> Outcome:
        with self._lock:
            self.outcomes.append(outcome)
        return outcome

    def take(self, notification_id: UUID) -> dict[str, Any] | None:
        """The claimed row, for the first record of the batch that asks; a duplicate gets None."""
        with self._lock:
            if notification_id in self._taken:
                return None
            self._taken.add(notification_id)
        return self.claimed.get(notification_id)


def claim(ids: list[UUID], settings: Settings | None = None) -> Batch:
    """Claim every due row among `ids` in one UPDATE. Rows that are claimable but not due yet are
    reported as `early`, so that their message can be put back with the remaining delay."""
    settings = settings or get_settings()
    unique = list(dict.fromkeys(ids))
    if not unique:
        return Batch({})
    now = datetime.now(UTC)
    with transaction() as conn:
        rows = transition(
            conn,
            unique,
            [*CLAIMABLE, "sending"],
            "sending",
            sets={"claimed_until": now + timedelta(seconds=settings.claim_lease_seconds)},
            where=sql.SQL(
                "(status <> 'sending' OR claimed_until < now())"
                " AND (status = 'pending' OR next_attempt_at IS NULL OR next_attempt_at <= %s)"
            ),
            where_params=[now + DUE_SKEW],
            returning=CLAIM_COLUMNS,
        )
        batch = Batch({row["id"]: row for row in rows})
        missing = [i for i in unique if i not in batch.claimed]
        if missing:  # rare: duplicates, cancelled rows, early delayed messages
            for row in conn.execute(
                "SELECT id, tenant_id, next_attempt_at FROM notifications"
                " WHERE id = ANY(%s) AND status IN ('queued', 'retrying') AND next_attempt_at > %s",
                (missing, now + DUE_SKEW),
            ).fetchall():
                batch.early[row["id"]] = (row["tenant_id"], (row["next_attempt_at"] - now).total_seconds())
    return batch


def deliver(batch: Batch, notification_id: UUID, settings: Settings | None = None) -> Outcome:
    """Send one claimed notification (called concurrently for the records of a batch). Never raises
    for provider errors: they become outcomes. Raises only for the unexpected."""
    settings = settings or get_settings()
    row = batch.take(notification_id)
    if row is None:
        if notification_id in batch.early and notification_id not in batch.claimed:
            tenant, left = batch.early[notification_id]
            return batch.add(Outcome("early", notification_id, tenant, delay_s=left))
        return batch.add(Outcome("skipped", notification_id))
    base = {"notification_id": notification_id, "tenant_id": row["tenant_id"], "channel": row["channel"]}
    try:
        limited = _limits(row, settings)
        if limited is not None:
            return batch.add(Outcome(**base, **limited))
        return batch.add(_send(row, settings))
    except Exception:
        # A bug or an infrastructure error: give the claim back so the redelivery can take it.
        batch.add(Outcome("released", notification_id, row["tenant_id"]))
        raise


def _limits(row: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
    """Provider send rate and recipient cap, both in Redis. If Redis is unreachable the send goes
    ahead (fail open): the provider's own limits still apply, and delaying every notification
    because the cache is down would turn a cache outage into a delivery outage."""
    rate = settings.rate_for(row["provider"])
    cap = settings.cap_for(row["channel"])
    if rate is None and cap is None:
        return None
    # Imported here: the redis client costs ~60 ms of cold start, and without limits configured
    # (the default) the sender never talks to Redis.
    from . import ratelimit

    try:
        if rate is not None:
            decision = ratelimit.check(f"provider:{row['provider']}", rate, 1)
            if not decision.allowed:
                metrics.add_metric(name="SendsDeferred", unit="Count", value=1)
                return {"kind": "deferred", "delay_s": max(1.0, float(decision.retry_after_s))}
        if cap is not None:
            recipient = row["user_id"] or _address(row)
            decision = ratelimit.check(
                f"recipient:{row['tenant_id']}:{row['channel']}:{recipient}", cap, 3600
            )
            if not decision.allowed:
                metrics.add_metric(name="NotificationsSuppressed", unit="Count", value=1)
                return {
                    "kind": "suppressed",
                    "error": f"recipient cap of {cap} {row['channel']} per hour reached",
                }
    except ratelimit.RedisUnavailable as exc:
        logger.warning("send limits unavailable; sending anyway", extra={"error": str(exc)})
        metrics.add_metric(name="RateLimiterUnavailable", unit="Count", value=1)
    return None


def _address(row: dict[str, Any]) -> str:
    payload = row["payload"]
    return str(payload.get("to") or payload.get("token") or payload.get("topic") or row["id"])


def _send(row: dict[str, Any], settings: Settings) -> Outcome:
    attempt = row["attempt_count"] + 1
    message = OutgoingMessage(
        notification_id=row["id"],
        tenant_id=row["tenant_id"],
        channel=row["channel"],
        provider=row["provider"],
        payload=row["payload"],
        attempt=attempt,
    )
    common = {
        "notification_id": row["id"],
        "tenant_id": row["tenant_id"],
        "provider": row["provider"],
        "attempt": attempt,
        "channel": row["channel"],
    }
    started = time.perf_counter()
    try:
        receipt = get_provider(row["provider"]).send(message)
    except TransientProviderError as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        if attempt >= row["max_attempts"]:
            return Outcome("failed", **common, error=str(exc), duration_ms=elapsed, reason="max_attempts")
        delay = backoff_seconds(attempt, settings, exc.retry_after)
        return Outcome("retry", **common, error=str(exc), duration_ms=elapsed, delay_s=delay)
    except PermanentProviderError as exc:
        elapsed = int((time.perf_counter() - started) * 1000)
        return Outcome("failed", **common, error=str(exc), duration_ms=elapsed, reason="permanent_error")
    return Outcome(
        "sent",
        **common,
        duration_ms=int((time.perf_counter() - started) * 1000),
        provider_message_id=receipt.provider_message_id,
        provider_response=receipt.response,
    )


def finish(batch: Batch) -> None:
    """Record every outcome of the batch (one pipelined transaction), then put retries, deferred and
    early messages back on SQS and mark the re-enqueued ones `queued`."""
    now = datetime.now(UTC)
    changes: list[tuple[UUID, str, dict[str, Any]]] = []
    attempts: list[Outcome] = []
    dead: list[Outcome] = []
    for o in batch.outcomes:
        row = batch.claimed.get(o.notification_id)
        if o.kind in ("skipped", "early") or row is None:
            continue
        columns: dict[str, Any] = {
            "attempt_count": row["attempt_count"],
            "next_attempt_at": None,
            "claimed_until": None,
            "last_error": None,
            "provider_message_id": None,
            "provider_response": None,
            "sent_at": None,
            "failed_at": None,
        }
        if o.kind in ("sent", "retry", "failed"):
            columns["attempt_count"] = o.attempt or row["attempt_count"]
            attempts.append(o)
        if o.kind == "sent":
            columns |= {
                "provider_message_id": o.provider_message_id,
                "provider_response": json.dumps(o.provider_response or {}),
                "sent_at": now,
            }
            changes.append((o.notification_id, "sent", columns))
        elif o.kind == "retry":
            columns |= {"next_attempt_at": now + timedelta(seconds=o.delay_s), "last_error": o.error}
            changes.append((o.notification_id, "retrying", columns))
        elif o.kind == "failed":
            columns |= {"last_error": o.error, "failed_at": now}
            changes.append((o.notification_id, "failed", columns))
            dead.append(o)
        elif o.kind == "suppressed":
            columns |= {"last_error": o.error}
            changes.append((o.notification_id, "suppressed", columns))
        elif o.kind == "deferred":
            columns |= {"next_attempt_at": now + timedelta(seconds=o.delay_s)}
            changes.append((o.notification_id, "queued", columns))
        elif o.kind == "released":
            changes.append((o.notification_id, "queued", columns))
    with transaction() as conn, conn.pipeline():
        moved = set(apply_outcomes(conn, "sending", changes))
        if attempts:
            conn.execute(
                "INSERT INTO notification_attempts (notification_id, tenant_id, attempt_number, provider, outcome,"
                " error, provider_message_id, duration_ms)"
                " SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::int[])",
                [
                    [o.notification_id for o in attempts],
                    [o.tenant_id for o in attempts],
                    [o.attempt for o in attempts],
                    [o.provider for o in attempts],
                    [_attempt_outcome(o) for o in attempts],
                    [o.error for o in attempts],
                    [o.provider_message_id for o in attempts],
                    [o.duration_ms for o in attempts],
                ],
            )
        if dead:
            record_dead_letters(
                conn, [(o.notification_id, o.reason or "permanent_error", o.error) for o in dead]
            )
    for o in batch.outcomes:
        if o.kind in ("sent", "failed", "suppressed") and o.notification_id in moved:
            metrics.add_metric(name=f"Notifications{o.kind.capitalize()}", unit="Count", value=1)
    _requeue(batch, moved, now)


def _attempt_outcome(o: Outcome) -> str:
    if o.kind == "sent":
        return "sent"
    return "permanent_error" if o.reason == "permanent_error" else "transient_error"


def _requeue(batch: Batch, moved: set[UUID], now: datetime) -> None:
    """Retries due within SQS's 15-minute delay limit, deferred sends and early messages go back on
    the queue with DelaySeconds; the ones SQS took are marked `queued`. A failed send leaves the row
    `retrying` for the sweeper — nothing is lost."""
    retrying = {
        o.notification_id
        for o in batch.outcomes
        if o.kind == "retry" and o.notification_id in moved and o.delay_s <= queue.MAX_DELAY_SECONDS
    }
    back = [
        o
        for o in batch.outcomes
        if o.notification_id in retrying
        or o.kind == "early"
        or (o.kind == "deferred" and o.notification_id in moved)
    ]
    messages = [queue.Message(o.notification_id, o.tenant_id, round(o.delay_s)) for o in back if o.tenant_id]
    if not messages:
        return
    result = queue.send(messages)
    promote = [i for i in result.sent if i in retrying]
    if promote:
        with transaction() as conn:
            transition(conn, promote, ["retrying"], "queued", sets={"queued_at": now})


class NotificationRecord(SqsRecordModel):
    body: Json[QueueMessage]


_pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="send")


class DeliveryProcessor(BatchProcessor):
    """Powertools' BatchProcessor, extended so that a batch costs a fixed number of round trips:
    `_prepare` claims every record's notification in one statement, `process` runs the records
    concurrently, and `_clean` records all outcomes in one transaction before the partial batch
    response is built. A record whose body is not a notification message fails validation and is
    reported (SQS redrives it to the DLQ after maxReceiveCount)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(EventType.SQS, model=NotificationRecord, raise_on_entire_batch_failure=False)
        self.settings = settings
        self.batch = Batch({})

    def _prepare(self) -> None:
        super()._prepare()
        ids = []
        for record in self.records:
            try:
                ids.append(QueueMessage.model_validate_json(record["body"]).id)
            except (ValidationError, KeyError, TypeError):
                continue
        self.batch = claim(ids, self.settings or get_settings())

    def process(self) -> list[tuple[Any, ...]]:
        limit = (self.settings or get_settings()).send_concurrency
        if len(self.records) <= 1 or limit == 1:
            return [self._process_record(r) for r in self.records]
        chunks = [self.records[i : i + limit] for i in range(0, len(self.records), limit)]
        results: list[tuple[Any, ...]] = []
        for chunk in chunks:
            results.extend(_pool.map(self._process_record, chunk))
        return results

    def _clean(self) -> None:
        finish(self.batch)
        super()._clean()

    def record_handler(self, record: NotificationRecord) -> str:
        return deliver(self.batch, record.body.id, self.settings or get_settings()).kind
