"""In-memory stand-ins for what the delivery engine talks to: the notifications table, the queue,
the limiter and the providers. No sockets; every state change goes through `states.check`, so a
test that drives an illegal transition fails."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from notify_core import dispatch, states
from notify_core.audience.delivery import AudienceView
from notify_core.config import Settings
from notify_core.delivery.engine import Claimed, Deps
from notify_core.delivery.outcomes import Outcome, columns
from notify_core.delivery.steps import Claim, LimiterUnavailable
from notify_core.errors import DatabaseUnavailable
from notify_core.providers import Receipt
from notify_core.queue import QueueMessage
from notify_core.ratelimit import Decision

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EMAIL = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}


@dataclass
class Row:
    id: UUID
    tenant_id: UUID
    channel: str = "email"
    provider: str = "fake"
    payload: dict[str, Any] = field(default_factory=lambda: dict(EMAIL))
    status: str = "queued"
    attempt_count: int = 0
    max_attempts: int = 5
    next_attempt_at: datetime | None = None
    claimed_until: datetime | None = None
    claim_id: UUID | None = None
    last_error: str | None = None
    user_id: UUID | None = None
    category: str | None = None  # audience (issue 10)
    history: list[str] = field(default_factory=list)

    def move(self, to: str) -> None:
        states.check([self.status], to)
        self.history.append(f"{self.status}->{to}")
        self.status = to


class FakeStore:
    """The notifications table and the claim guard, as `delivery.store.PgStore` implements them."""

    def __init__(self, now: Callable[[], datetime] = lambda: NOW) -> None:
        self.rows: dict[UUID, Row] = {}
        self.attempts: list[tuple[UUID, int, str]] = []  # (id, number, outcome)
        self.dead_letters: list[tuple[UUID, str]] = []
        self.records: list[list[str]] = []  # the kinds written by each record() call
        self.down = 0  # the next `down` record() calls fail as if the database were unreachable
        self.now = now
        self.lock = threading.Lock()
        self.audience = AudienceView()  # audience (issue 10)

    def add(self, **fields: Any) -> Row:
        row = Row(id=uuid.uuid4(), tenant_id=fields.pop("tenant_id", TENANT), **fields)
        self.rows[row.id] = row
        return row

    def claim(self, ids: Sequence[UUID], claim_id: UUID, lease_until: datetime) -> Claimed:
        now, skew = self.now(), timedelta(seconds=2)
        out = Claimed()
        with self.lock:
            for i in ids:
                row = self.rows.get(i)
                if row is None:
                    out.absent.add(i)
                    continue
                due = (
                    row.status == "pending"
                    or row.next_attempt_at is None
                    or row.next_attempt_at <= now + skew
                )
                waiting = row.status in ("pending", "queued", "retrying")
                expired = (
                    row.status == "sending" and row.claimed_until is not None and row.claimed_until < now
                )
                if (waiting and due) or expired:
                    row.move("sending")
                    row.claimed_until, row.claim_id = lease_until, claim_id
                    out.rows[i] = Claim(
                        row.id,
                        row.tenant_id,
                        row.user_id,
                        row.channel,
                        row.provider,
                        row.payload,
                        row.attempt_count,
                        row.max_attempts,
                        row.last_error,
                        row.category,
                        any(a == (row.id, a[1], "ambiguous") for a in self.attempts),
                    )
                elif row.status in ("queued", "retrying") and row.next_attempt_at is not None:
                    out.early[i] = (row.tenant_id, row.status, (row.next_attempt_at - now).total_seconds())
        return out

    def prefetch(self, rows: Sequence[Claim]) -> dict[str, Any]:
        # audience (issue 10): what PgStore reads for the batch (categories, preferences, suppressions)
        return {"audience": self.audience}

    def record(self, claim_id: UUID, outcomes: Sequence[Outcome], rows: dict[UUID, Claim]) -> set[UUID]:
        with self.lock:
            if self.down:
                self.down -= 1
                raise DatabaseUnavailable("down")
            self.records.append([o.kind for o in outcomes])
            moved: set[UUID] = set()
            for o in outcomes:
                row = self.rows[o.notification_id]
                if row.status != "sending" or row.claim_id != claim_id or o.rule.status is None:
                    continue
                values = columns(o, row.attempt_count, row.last_error, self.now())
                row.move(o.rule.status)
                row.attempt_count = values["attempt_count"]
                row.next_attempt_at = values["next_attempt_at"]
                row.claimed_until, row.claim_id = None, None
                row.last_error = values["last_error"]
                moved.add(row.id)
                if o.rule.attempt:
                    self.attempts.append((row.id, o.attempt, o.attempt_outcome))
                if o.rule.dead_letter:
                    self.dead_letters.append((row.id, o.reason or "permanent_error"))
            return moved


class FakeQueue:
    """The enqueue path: messages 'sent' to the queue, rows marked `queued`."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.sent: list[dispatch.Enqueue] = []
        self.fail = False

    def __call__(self, items: Sequence[dispatch.Enqueue]) -> dispatch.Enqueued:
        if self.fail:
            return dispatch.Enqueued(failed=[i.notification_id for i in items])
        with self.store.lock:
            for item in items:
                self.sent.append(item)
                row = self.store.rows.get(item.notification_id)
                if row is not None and item.status != "queued" and row.status == item.status:
                    row.move("queued")
        return dispatch.Enqueued(sent=[i.notification_id for i in items])


class FakeLimiter:
    def __init__(self) -> None:
        self.refuse: dict[str, int] = {}  # limit name prefix -> retry_after seconds
        self.unavailable = False
        self.taken: list[str] = []
        self.calls: list[tuple[str, int, int]] = []

    def check(self, name: str, limit: int, period_s: int) -> Decision:
        if self.unavailable:
            raise LimiterUnavailable("redis down")
        self.taken.append(name)
        self.calls.append((name, limit, period_s))
        for prefix, retry in self.refuse.items():
            if name.startswith(prefix):
                return Decision(False, limit, 0, retry, retry)
        return Decision(True, limit, limit - 1, 0, 1)


class FakeProvider:
    """Answers each send with the next scripted result for its notification (a Receipt by
    default); an exception in the script is raised. `hang` blocks sends until released."""

    name = "fake"
    channels = frozenset({"email", "sms", "push"})

    def __init__(self, max_send_seconds: float = 1.0) -> None:
        self.max_send_seconds = max_send_seconds
        self.script: dict[UUID, list[Any]] = {}
        self.sent: list[UUID] = []
        self.messages: list[Any] = []
        self.hang: set[UUID] = set()
        self.release = threading.Event()
        self.started = threading.Event()
        self.lock = threading.Lock()

    def send(self, message: Any) -> Receipt:
        with self.lock:
            self.sent.append(message.notification_id)
            self.messages.append(message)
            results = self.script.get(message.notification_id) or []
            result = results.pop(0) if results else Receipt(f"m-{message.notification_id}", {"ok": True})
        if message.notification_id in self.hang:
            self.started.set()
            self.release.wait(timeout=10)
        if isinstance(result, BaseException):
            raise result
        return result


TENANT = uuid.UUID("00000000-0000-4000-8000-000000000001")


@dataclass
class World:
    store: FakeStore
    queue: FakeQueue
    limiter: FakeLimiter
    provider: FakeProvider
    settings: Settings
    metrics: list[str] = field(default_factory=list)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=4))

    def deps(self) -> Deps:
        return Deps(
            store=self.store,
            enqueue=self.queue,
            limiter=self.limiter,
            provider=lambda name: self.provider,
            pool=self.pool,
            settings=self.settings,
            now=self.store.now,
            metric=lambda name, value: self.metrics.append(name),
        )


def message(row: Row) -> QueueMessage:
    return QueueMessage(id=row.id, tenant_id=row.tenant_id)


def world(**settings: Any) -> World:
    store = FakeStore()
    values = {"retry_base_seconds": 30.0, "retry_cap_seconds": 3600.0, "outcome_flush_ms": 10} | settings
    return World(store, FakeQueue(store), FakeLimiter(), FakeProvider(), Settings(**values))
