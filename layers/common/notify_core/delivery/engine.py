"""The delivery engine: one batch of queue messages in, one outcome per message out.

1. Claim every due row of the batch in one UPDATE (`Store.claim`), with a lease that ends shortly
   after the invocation's deadline.
2. Run each claimed row through the steps (`steps.STEPS`) on the send pool: a sliding window of
   SEND_CONCURRENCY rows in flight over the whole batch, a new one starting as soon as one ends.
3. Record outcomes as they happen: every OUTCOME_FLUSH_MS the finished ones are written in one
   transaction (`Store.record`) and the ones that go back on the queue are enqueued. A crash
   therefore re-sends at most the sends that were in flight, never the whole batch.
4. The deadline guard: a send starts only if the invocation has time for its provider's longest
   send plus a margin; rows whose turn has not come when that time has passed are given back at
   once (`unstarted`: no attempt counted, back on the queue), not left to the lease.

The engine talks to the world through `Deps` (store, enqueue, limiter, providers, clock, pool), so
unit tests run it with in-memory fakes; `Deps.production()` wires the real ones.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from .. import dispatch
from ..config import Settings, get_settings
from ..errors import DatabaseUnavailable
from ..providers import Provider
from ..queue import MAX_DELAY_SECONDS, QueueMessage
from .outcomes import Outcome
from .routing import Router
from .steps import GUARD_MARGIN_S, BatchContext, Claim, Limiter, Step, run_steps

# ---------------------------------------------------------------- ports


@dataclass
class Claimed:
    rows: dict[UUID, Claim] = field(default_factory=dict)
    # claimable rows that are not due yet: id -> (tenant, status, seconds until due)
    early: dict[UUID, tuple[UUID, str, float]] = field(default_factory=dict)
    # ids with no row at all (not committed yet, or never: a rolled-back ingest)
    absent: set[UUID] = field(default_factory=set)


class Store(Protocol):
    def claim(self, ids: Sequence[UUID], claim_id: UUID, lease_until: datetime) -> Claimed: ...

    def prefetch(self, rows: Sequence[Claim]) -> dict[str, Any]: ...

    def record(self, claim_id: UUID, outcomes: Sequence[Outcome], rows: dict[UUID, Claim]) -> set[UUID]:
        """Write the outcomes of claimed rows in one transaction; return the ids whose row moved."""
        ...


Enqueue = Callable[[Sequence[dispatch.Enqueue]], Any]


@dataclass
class Deps:
    store: Store
    enqueue: Enqueue
    limiter: Limiter
    provider: Callable[[str], Provider]
    pool: Executor
    settings: Settings
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    monotonic: Callable[[], float] = time.monotonic
    clock: Callable[[], float] = time.perf_counter  # attempt durations
    metric: Callable[[str, int], None] = lambda name, value: None
    warn: Callable[[str, dict[str, Any]], None] = lambda message, extra: None
    steps: tuple[Step, ...] | None = None
    router: Router | None = None  # provider routes: config providers and breaker (None: the container's)

    @classmethod
    def production(cls, pool: Executor | None = None) -> Deps:
        """The real collaborators. `pool`: the execution environment's send threads (the sender
        function owns them); by default the container's."""
        from .. import clients
        from ..observability import logger
        from ..providers import get_provider
        from .store import PgStore, RedisLimiter

        return cls(
            store=PgStore(),
            enqueue=dispatch.enqueue,
            limiter=RedisLimiter(),
            provider=get_provider,
            pool=pool or clients.send_pool(),
            settings=get_settings(),
            metric=_locked_metric,
            warn=lambda message, extra: logger.warning(message, extra=extra),
        )


_METRIC_LOCK = threading.Lock()


def _locked_metric(name: str, value: int) -> None:
    """Powertools' metric store is not thread-safe: two send threads adding the same metric for the
    first time could each create its list, and one value would be lost. Steps add from send threads."""
    from ..observability import metrics

    with _METRIC_LOCK:
        metrics.add_metric(name=name, unit="Count", value=value)


class Deadline:
    """When the invocation must be done, on the monotonic clock."""

    def __init__(self, remaining_ms: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self.at = monotonic() + remaining_ms / 1000

    def remaining_s(self) -> float:
        return self.at - self._monotonic()


@dataclass
class Incoming:
    """One record of the batch: its key (the SQS message id), the message it carries and when it
    was sent (epoch seconds, SQS's SentTimestamp)."""

    key: str
    message: QueueMessage
    sent_at: float | None = None


# Ingest sends a batch's messages while its INSERT commits, so a message may arrive before its row
# is visible. Within this window after the first message was sent, such a message is put back for
# UNBORN_DELAY_S (carrying that first send time); after it, the row is taken never to come (its
# ingest rolled back) and the message is dropped.
UNBORN_WINDOW_S = 60.0
UNBORN_DELAY_S = 2.0


@dataclass
class BatchReport:
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # by record key
    failed: dict[str, BaseException] = field(default_factory=dict)  # records to report to SQS


# ---------------------------------------------------------------- the run


def deliver(batch: Sequence[Incoming], deadline: Deadline, deps: Deps | None = None) -> BatchReport:
    deps = deps or Deps.production()
    settings = deps.settings
    report = BatchReport()
    ids = list(dict.fromkeys(item.message.id for item in batch))
    if not ids:
        return report
    claim_id = uuid.uuid4()
    lease = min(deadline.remaining_s() + settings.claim_lease_margin_seconds, settings.claim_lease_seconds)
    claimed = deps.store.claim(ids, claim_id, deps.now() + timedelta(seconds=max(lease, 1.0)))
    recorder = Recorder(deps, claim_id, claimed.rows, report)

    # Which record takes which row: the first record of a claimed id; every other record is done.
    tasks: dict[str, Claim] = {}
    taken: set[UUID] = set()
    for item in batch:
        nid = item.message.id
        row = claimed.rows.get(nid)
        if row is not None and nid not in taken:
            taken.add(nid)
            tasks[item.key] = row
        elif nid in claimed.early and nid not in taken:
            taken.add(nid)
            tenant, status, left = claimed.early[nid]
            recorder.add(item.key, Outcome("early", nid, tenant, status=status, delay_s=left))
        elif nid in claimed.absent and nid not in taken and _fresh(item, deps):
            taken.add(nid)
            recorder.add(
                item.key,
                Outcome(
                    "unborn",
                    nid,
                    item.message.tenant_id,
                    status="queued",
                    delay_s=UNBORN_DELAY_S,
                    first_sent_at=_first_sent(item),
                ),
            )
        else:
            report.outcomes[item.key] = Outcome("skipped", nid, item.message.tenant_id)
    if not tasks:
        recorder.flush_all(deadline)
        return report

    ctx = BatchContext(
        settings=settings,
        deadline=deadline,
        limiter=deps.limiter,
        provider=deps.provider,
        now=deps.now,
        warn=deps.warn,
        metric=deps.metric,
        clock=deps.clock,
        prefetched=deps.store.prefetch(list(tasks.values())),
        router=deps.router,
    )
    steps = deps.steps
    finished: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
    running: dict[Future[Outcome], str] = {}
    for key, row in tasks.items():
        future = deps.pool.submit(run_steps, row, ctx, *([steps] if steps else []))
        running[future] = key
        future.add_done_callback(finished.put)
    flush_s = settings.outcome_flush_ms / 1000
    while running:
        try:
            done = [finished.get(timeout=_next_wake(running, tasks, deps, deadline, recorder, flush_s))]
            while not finished.empty():
                done.append(finished.get_nowait())
        except queue.Empty:
            done = []
        for future in done:
            if future in running and not future.cancelled():
                key = running.pop(future)
                recorder.add(key, _result(future, tasks[key]))
        _give_back_unstarted(running, tasks, deps, deadline, recorder)
        if recorder.due(flush_s):
            recorder.flush(deadline)
    recorder.flush_all(deadline)
    return report


def _first_sent(item: Incoming) -> float | None:
    return item.message.first_sent_at if item.message.first_sent_at is not None else item.sent_at


def _fresh(item: Incoming, deps: Deps) -> bool:
    first = _first_sent(item)
    return first is not None and deps.now().timestamp() - first < UNBORN_WINDOW_S


def _result(future: Future[Outcome], row: Claim) -> Outcome:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 — a bug or an infrastructure error in a step: give the claim back
        return row.outcome("released", error=f"{type(exc).__name__}: {exc}", cause=exc)


def _guard_s(row: Claim, deps: Deps) -> float:
    """Seconds the invocation must have left for this row's send to start."""
    try:
        longest = deps.provider(row.provider).max_send_seconds
    except Exception:  # noqa: BLE001 — an unbuildable provider fails fast in the send step itself
        longest = 0.0
    return longest + GUARD_MARGIN_S


def _give_back_unstarted(
    running: dict[Future[Outcome], str],
    tasks: dict[str, Claim],
    deps: Deps,
    deadline: Deadline,
    recorder: Recorder,
) -> None:
    """Rows still waiting for a send slot when their send could no longer finish in time: cancel
    them (a future that has not started cancels at once) and give their claims back."""
    remaining = deadline.remaining_s()
    late = [f for f, key in running.items() if remaining < _guard_s(tasks[key], deps) and f.cancel()]
    for future in late:
        key = running.pop(future)
        recorder.add(key, tasks[key].outcome("unstarted"))
    if late:
        recorder.flush(deadline)


def _next_wake(
    running: dict[Future[Outcome], str],
    tasks: dict[str, Claim],
    deps: Deps,
    deadline: Deadline,
    recorder: Recorder,
    flush_s: float,
) -> float:
    """Until the next thing to do: a flush due, or the guard time of a row still waiting."""
    remaining = deadline.remaining_s()
    wake = max(remaining, 0.0)
    for key in running.values():
        wake = min(wake, max(remaining - _guard_s(tasks[key], deps), 0.0))
    pending_flush = recorder.flush_in(flush_s)
    if pending_flush is not None:
        wake = min(wake, pending_flush)
    return max(wake, 0.001)


# ---------------------------------------------------------------- recording


class Recorder:
    """Collects finished outcomes and writes them in small groups: one transaction per flush, then
    the requeues. A flush that cannot reach the database is retried until shortly before the
    deadline; what still could not be written is reported to SQS as failed (its message comes back
    after the visibility timeout; the row, still `sending`, is re-claimed after its lease)."""

    def __init__(self, deps: Deps, claim_id: UUID, rows: dict[UUID, Claim], report: BatchReport) -> None:
        self.deps = deps
        self.claim_id = claim_id
        self.rows = rows
        self.report = report
        self.pending: list[tuple[str, Outcome]] = []
        self.first_at: float | None = None

    def add(self, key: str, outcome: Outcome) -> None:
        if not self.pending:
            self.first_at = self.deps.monotonic()
        self.pending.append((key, outcome))
        self.report.outcomes[key] = outcome

    def flush_in(self, flush_s: float) -> float | None:
        if not self.pending or self.first_at is None:
            return None
        return max(0.0, flush_s - (self.deps.monotonic() - self.first_at))

    def due(self, flush_s: float) -> bool:
        wait_s = self.flush_in(flush_s)
        return wait_s is not None and wait_s <= 0

    def flush_all(self, deadline: Deadline) -> None:
        while self.pending:
            self.flush(deadline)

    def flush(self, deadline: Deadline) -> None:
        group, self.pending, self.first_at = self.pending, [], None
        if not group:
            return
        outcomes = [o for _, o in group]
        moved = self._write(outcomes, deadline)
        if moved is None:  # the database stayed out of reach
            for key, outcome in group:
                if outcome.rule.status is not None:
                    self.report.failed[key] = DatabaseUnavailable("the outcome could not be recorded")
            moved = set()
        for key, outcome in group:
            if outcome.rule.report_failure and outcome.notification_id in moved:
                self.report.failed[key] = outcome.cause or RuntimeError(outcome.error or "released")
        for outcome in outcomes:
            counted = outcome.notification_id in moved or outcome.rule.status is None
            if counted and outcome.rule.metric:
                self.deps.metric(outcome.rule.metric, 1)
        self._requeue(outcomes, moved)

    def _write(self, outcomes: list[Outcome], deadline: Deadline) -> set[UUID] | None:
        claimed = [o for o in outcomes if o.rule.status is not None]
        if not claimed:
            return set()
        delay = 0.05
        while True:
            try:
                return self.deps.store.record(self.claim_id, claimed, self.rows)
            except DatabaseUnavailable as exc:
                if deadline.remaining_s() < 1.0 + delay:
                    self.deps.warn("outcomes not recorded", {"count": len(claimed), "error": str(exc)})
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _requeue(self, outcomes: list[Outcome], moved: set[UUID]) -> None:
        back = [
            dispatch.Enqueue(
                o.notification_id, o.tenant_id, o.rule.status or o.status, o.delay_s, o.first_sent_at
            )
            for o in outcomes
            if o.rule.requeue
            and (o.notification_id in moved or o.rule.status is None)
            and o.delay_s <= MAX_DELAY_SECONDS
        ]
        if back:
            self.deps.enqueue(back)
