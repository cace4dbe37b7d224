"""The webhook dispatcher: one batch of webhooks-queue messages in, signed POSTs out.

1. Claim the batch's due deliveries in one UPDATE (a lease, and the attempt counted: a dispatcher
   that dies mid-delivery still uses up an attempt, so nothing loops forever). A duplicate, an
   early or an already finished delivery is not claimed: its message is simply acknowledged.
2. POST each through `guarded_http` (WEBHOOK_SEND_CONCURRENCY at a time), signed per Standard
   Webhooks with the endpoint's secret, and during a rotation with the previous one too.
3. Record in one transaction: the deliveries' new state, an attempt row each, the endpoints'
   failure history; a delivery that spent WEBHOOK_RETRY_SCHEDULE fails, and its endpoint, when it
   has been failing for WEBHOOK_DISABLE_AFTER_SECONDS without a success, is disabled (audited as
   the system). Then the retries due within 15 minutes go back on the queue with their delay; later
   ones are the sweeper's.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from .. import audit, clients, queue
from ..config import Settings, get_settings
from ..db import transaction
from . import guarded_http, outbox

LEASE_MARGIN_SECONDS = 5.0
DUE_SKEW_SECONDS = 2.0
USER_AGENT = "notify-webhooks/1.0"

Post = Callable[[str, bytes, Mapping[str, str]], guarded_http.Result]

_CLAIM = """
UPDATE webhook_deliveries d
   SET locked_until = now() + make_interval(secs => %(lease)s), attempt_count = d.attempt_count + 1,
       updated_at = now()
  FROM webhook_endpoints e
 WHERE d.id = ANY(%(ids)s) AND e.id = d.endpoint_id AND d.status = 'pending'
   AND d.next_attempt_at <= now() + make_interval(secs => %(skew)s)
   AND (d.locked_until IS NULL OR d.locked_until < now())
RETURNING d.id, d.tenant_id, d.endpoint_id, d.event_id, d.event_type, d.payload, d.attempt_count,
          d.redelivery_of, e.url, e.secret, e.previous_secret, e.previous_secret_expires_at, e.active
"""


@dataclass
class Claimed:
    id: UUID
    tenant_id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    payload: Any
    attempt_count: int
    redelivery_of: UUID | None
    url: str
    secret: str
    previous_secret: str | None
    previous_secret_expires_at: datetime | None
    active: bool

    @property
    def asked_for(self) -> bool:
        """A test event or a redelivery: someone asked for it, so it goes even to an inactive endpoint."""
        return self.event_type == "webhook.test" or self.redelivery_of is not None


@dataclass
class Attempted:
    delivery: Claimed
    result: guarded_http.Result
    next_at: datetime | None = None  # a retry's time; None when delivered or failed for good
    delay_s: float = 0.0


@dataclass
class DispatchReport:
    delivered: list[UUID] = field(default_factory=list)
    retrying: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    skipped: int = 0  # messages whose delivery was not due, already done or being done
    disabled: list[UUID] = field(default_factory=list)  # endpoints disabled now


def sign(delivery: Claimed, body: str, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers: webhook-id, webhook-timestamp and one v1 signature per live secret."""
    from standardwebhooks.webhooks import Webhook

    msg_id = str(delivery.event_id)
    signatures = [Webhook(delivery.secret).sign(msg_id, now, body)]
    expires = delivery.previous_secret_expires_at
    if delivery.previous_secret and expires is not None and expires > now:
        signatures.append(Webhook(delivery.previous_secret).sign(msg_id, now, body))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }


def retry_delay(
    attempt: int, settings: Settings, jitter: Callable[[float, float], float] = random.uniform
) -> float | None:
    """Seconds until the next attempt after attempt number `attempt` failed; None when spent."""
    delays = settings.webhook_retry_delays()
    if attempt > len(delays):
        return None
    base = delays[attempt - 1]
    return base * jitter(1.0, 1.1)


def _pool(size: int) -> ThreadPoolExecutor:
    pool: ThreadPoolExecutor = clients.get(
        "webhook-pool",
        lambda: ThreadPoolExecutor(max_workers=size, thread_name_prefix="webhook"),
        lambda p: p.shutdown(wait=False),
    )
    return pool


def dispatch(
    messages: Sequence[queue.QueueMessage],
    settings: Settings | None = None,
    post: Post | None = None,
    pool: Executor | None = None,
) -> DispatchReport:
    """`pool`: the execution environment's POST threads (the function owns them, so concurrent
    copies in the local runtime do not share one pool); by default the container's."""
    settings = settings or get_settings()
    report = DispatchReport()
    ids = list(dict.fromkeys(m.id for m in messages))
    if not ids:
        return report
    lease = settings.webhook_connect_timeout_seconds + settings.webhook_read_timeout_seconds
    with transaction() as conn:
        rows = conn.execute(
            _CLAIM, {"ids": ids, "lease": lease + LEASE_MARGIN_SECONDS, "skew": DUE_SKEW_SECONDS}
        ).fetchall()
    claimed = [Claimed(**row) for row in rows]
    report.skipped = len(ids) - len(claimed)
    if not claimed:
        return report
    send = post or (lambda url, body, headers: guarded_http.post(url, body, headers, settings))

    def attempt(delivery: Claimed) -> Attempted:
        if not delivery.active and not delivery.asked_for:
            return Attempted(delivery, guarded_http.Result(None, 0, "the endpoint is not active"))
        if delivery.attempt_count > len(settings.webhook_retry_delays()) + 1:  # died mid-delivery too often
            return Attempted(delivery, guarded_http.Result(None, 0, "attempts spent"))
        body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False)
        now = datetime.now(UTC)
        return Attempted(delivery, send(delivery.url, body.encode("utf-8"), sign(delivery, body, now)))

    if len(claimed) == 1:
        done = [attempt(claimed[0])]
    else:
        done = list((pool or _pool(settings.webhook_send_concurrency)).map(attempt, claimed))
    now = datetime.now(UTC)
    for item in done:
        if item.result.ok:
            report.delivered.append(item.delivery.id)
            continue
        gone = not item.delivery.active and not item.delivery.asked_for
        delay = None if gone else retry_delay(item.delivery.attempt_count, settings)
        if delay is None:
            report.failed.append(item.delivery.id)
        else:
            item.delay_s, item.next_at = delay, now + timedelta(seconds=delay)
            report.retrying.append(item.delivery.id)
    report.disabled = _record(done, settings, now)
    retries = [
        outbox.Pending(i.delivery.id, i.delivery.tenant_id, i.delay_s)
        for i in done
        if i.next_at is not None and i.delay_s <= queue.MAX_DELAY_SECONDS
    ]
    outbox.enqueue(retries, settings)
    return report


def _record(done: Sequence[Attempted], settings: Settings, now: datetime) -> list[UUID]:
    """One transaction: deliveries, attempts, endpoints' failure history; returns disabled endpoints."""
    deliveries: list[list[Any]] = [[] for _ in range(8)]
    for i in done:
        ok = i.result.ok
        status = "delivered" if ok else ("pending" if i.next_at is not None else "failed")
        visible = i.next_at if i.next_at is not None and i.delay_s <= queue.MAX_DELAY_SECONDS else None
        for column, value in zip(
            deliveries,
            (
                i.delivery.id,
                status,
                i.next_at or now,
                visible,
                i.result.status,
                i.result.error,
                i.result.duration_ms,
                now if ok else None,
            ),
            strict=True,
        ):
            column.append(value)
    succeeded = {i.delivery.endpoint_id for i in done if i.result.ok}
    failing = {i.delivery.endpoint_id for i in done if not i.result.ok} - succeeded
    spent = {
        i.delivery.endpoint_id for i in done if not i.result.ok and i.next_at is None and i.delivery.active
    }
    with transaction() as conn:
        with conn.pipeline():
            conn.execute(
                "UPDATE webhook_deliveries d SET status = u.status, next_attempt_at = u.next_at,"
                " enqueued_at = u.visible, locked_until = NULL, last_status_code = u.code, last_error = u.error,"
                " last_duration_ms = u.ms, delivered_at = u.delivered_at, updated_at = now()"
                " FROM unnest(%s::uuid[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::int[], %s::text[],"
                " %s::int[], %s::timestamptz[]) AS u(id, status, next_at, visible, code, error, ms, delivered_at)"
                " WHERE d.id = u.id",
                deliveries,
            )
            conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, tenant_id, attempt_number, status_code, duration_ms,"
                " error, next_retry_at) SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::int[], %s::int[],"
                " %s::int[], %s::text[], %s::timestamptz[])",
                [
                    [i.delivery.id for i in done],
                    [i.delivery.tenant_id for i in done],
                    [i.delivery.attempt_count for i in done],
                    [i.result.status for i in done],
                    [i.result.duration_ms for i in done],
                    [i.result.error for i in done],
                    [i.next_at for i in done],
                ],
            )
            if succeeded:
                conn.execute(
                    "UPDATE webhook_endpoints SET failing_since = NULL WHERE id = ANY(%s)"
                    " AND failing_since IS NOT NULL",
                    (list(succeeded),),
                )
            if failing:
                conn.execute(
                    "UPDATE webhook_endpoints SET failing_since = %s WHERE id = ANY(%s) AND failing_since IS NULL",
                    (now, list(failing)),
                )
        disabled = []
        if spent - succeeded:
            disabled = conn.execute(
                "UPDATE webhook_endpoints SET active = false, disabled_at = %s, disabled_reason = %s,"
                " updated_at = now() WHERE id = ANY(%s) AND active AND failing_since <= %s"
                " RETURNING id, tenant_id, failing_since",
                (
                    now,
                    "every delivery failed since the failure history began; re-enable with active: true",
                    list(spent - succeeded),
                    now - timedelta(seconds=settings.webhook_disable_after_seconds),
                ),
            ).fetchall()
            for row in disabled:
                audit.record(
                    conn,
                    row["tenant_id"],
                    audit.SYSTEM,
                    "webhook.disable",
                    "webhook",
                    row["id"],
                    {"active": False, "failing_since": row["failing_since"].isoformat()},
                )
    return [row["id"] for row in disabled]
