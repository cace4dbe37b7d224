"""The scenarios: what load each one offers, which settings differ from the template's defaults,
and the fault it injects while the load runs (a function of the run, started with the load)."""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from notify_core.queue import QueueMessage
from notify_local.provider_stub import RemoteStub

from .infra import OwnPostgres, OwnRedis, RuntimeProcess
from .measure import sending_now

# The fault's own durations, as the issue states them.
POSTGRES_STOP_S = 20.0
REDIS_STOP_S = 30.0


@dataclass
class Run:
    """One scenario's run, as the fault sees it."""

    pg: OwnPostgres
    redis: OwnRedis
    runtime: RuntimeProcess
    stub: RemoteStub
    sqs: Any
    queue_url: str
    database_url: str
    tenant_id: str
    load_seconds: float
    t0: float = 0.0
    events: list[str] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)  # epoch windows
    extras: dict[str, Any] = field(default_factory=dict)  # the fault's own figures
    accepted_feed: queue.SimpleQueue[list[str]] = field(default_factory=queue.SimpleQueue)
    load_done: threading.Event = field(default_factory=threading.Event)

    def wait_until(self, fraction: float) -> None:
        """Sleep until `fraction` of the load's duration has passed."""
        time.sleep(max(0.0, self.t0 + fraction * self.load_seconds - time.time()))

    def note(self, text: str) -> None:
        self.events.append(f"+{time.time() - self.t0:.1f} s {text}")


Fault = Callable[[Run], None]


@dataclass
class Scenario:
    key: str
    title: str
    rate: float  # notifications per second offered to the API
    seconds: float  # for how long
    fault: str  # what is injected, for the report
    settings: dict[str, str] = field(default_factory=dict)  # beyond the common ones
    stub: dict[str, Any] = field(default_factory=dict)  # SendGrid's behaviour beyond its 100 ms
    inject: Fault | None = None


# ---------------------------------------------------------------- faults


def restart_postgres(run: Run) -> None:
    run.extras["outage_kind"] = "database"
    run.wait_until(0.35)
    began = time.time()
    run.note("PostgreSQL restarted (pg_ctl restart -m fast)")
    run.pg.restart()
    run.outages.append((began, time.time()))
    run.note(f"PostgreSQL accepting connections again after {time.time() - began:.1f} s")


def stop_postgres(run: Run) -> None:
    run.extras["outage_kind"] = "database"
    run.wait_until(0.25)
    began = time.time()
    run.pg.stop("immediate")
    run.note(f"PostgreSQL stopped (pg_ctl stop -m immediate: a crash) for {POSTGRES_STOP_S:g} s")
    time.sleep(max(0.0, began + POSTGRES_STOP_S - time.time()))
    run.pg.start()
    run.outages.append((began, time.time()))
    run.note(f"PostgreSQL started again (crash recovery), down {time.time() - began:.1f} s")


def stop_redis(run: Run) -> None:
    run.extras["outage_kind"] = "redis"
    run.wait_until(0.25)
    began = time.time()
    run.redis.stop()
    run.note(f"Redis stopped for {REDIS_STOP_S:g} s")
    time.sleep(max(0.0, began + REDIS_STOP_S - time.time()))
    run.redis.start()
    run.outages.append((began, time.time()))
    run.note(f"Redis started again, down {time.time() - began:.1f} s")


def kill_runtime(run: Run) -> None:
    """SIGKILL while sends are in flight; then measure what was in progress: rows still `sending`
    (outcome not committed) whose request had reached the provider before the kill."""
    run.extras["outage_kind"] = "runtime"
    run.wait_until(0.4)
    deadline = time.monotonic() + 10
    while run.stub.stats()["sendgrid"]["in_flight"] < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    killed_at = time.time()
    run.runtime.kill()
    run.note("notify-local killed with SIGKILL (API, pollers, sender mid-batch)")
    time.sleep(1.0)  # commits the database had already received finish
    sending = sending_now(run.database_url)
    before = [r for r in run.stub.summaries("sendgrid") if r.time <= killed_at and r.notification_id]
    reached = {str(r.notification_id) for r in before}
    unanswered = {
        str(r.notification_id) for r in before if r.answered_at is None or r.answered_at > killed_at
    }
    in_progress = sending & reached
    run.extras.update(
        sending_at_kill=len(sending),
        in_progress_at_kill=len(in_progress),
        in_progress_ids=in_progress,
        unanswered_at_kill=len(unanswered),
        unanswered_in_progress=len(unanswered & in_progress),
    )
    run.note(
        f"at the kill: {len(sending)} rows sending, {len(in_progress)} of them already at the provider"
        f" ({len(unanswered)} requests unanswered by it)"
    )
    time.sleep(2.0)
    took = run.runtime.start()
    run.outages.append((killed_at, time.time()))
    run.note(f"notify-local restarted, answering after {took:.1f} s")


def duplicate_messages(run: Run) -> None:
    """One extra copy of every accepted notification's message at once, and for one in three a
    second copy delayed 5-30 s (arriving after it was sent)."""
    rng = random.Random(5)
    tenant = UUID(run.tenant_id)
    sent = {"now": 0, "late": 0}
    seen = 0
    while not (run.load_done.is_set() and run.accepted_feed.empty()):
        try:
            ids = run.accepted_feed.get(timeout=0.5)
        except queue.Empty:
            continue
        entries: list[dict[str, Any]] = []
        for nid in ids:
            body = QueueMessage(id=UUID(nid), tenant_id=tenant).body()
            entries.append({"Id": f"now-{len(entries)}", "MessageBody": body})
            seen += 1
            if seen % 3 == 0:
                delay = rng.randint(5, 30)
                entries.append({"Id": f"late-{len(entries)}", "MessageBody": body, "DelaySeconds": delay})
        for start in range(0, len(entries), 10):
            reply = run.sqs.send_message_batch(QueueUrl=run.queue_url, Entries=entries[start : start + 10])
            for ok in reply.get("Successful", []):
                sent[ok["Id"].split("-")[0]] += 1
    run.extras.update(sqs_copies=sent["now"] + sent["late"], sqs_late_copies=sent["late"])
    run.note(f"{sent['now'] + sent['late']} duplicate messages sent ({sent['late']} of them 5-30 s late)")


def delete_messages(run: Run) -> None:
    """A thief takes messages off the queue for a while (competing with the pollers), then the
    queue is purged."""
    run.wait_until(0.2)
    stolen: set[str] = set()
    until = time.monotonic() + 10
    run.note("a consumer deletes every message it receives, for 10 s")
    while time.monotonic() < until:
        messages = run.sqs.receive_message(
            QueueUrl=run.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if messages:
            run.sqs.delete_message_batch(
                QueueUrl=run.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
            stolen.update(json.loads(m["Body"])["id"] for m in messages)
    run.note(f"{len(stolen)} messages deleted")
    run.wait_until(0.6)
    attributes = run.sqs.get_queue_attributes(QueueUrl=run.queue_url, AttributeNames=["All"])["Attributes"]
    waiting = sum(
        int(attributes.get(name, 0))
        for name in (
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        )
    )
    run.sqs.purge_queue(QueueUrl=run.queue_url)
    run.note(f"queue purged (about {waiting} messages on it)")
    run.extras.update(messages_deleted=len(stolen), purged_about=waiting)


# ---------------------------------------------------------------- the list

MIX = {"5xx": 0.10, "429": 0.08, "slow": 0.07, "permanent": 0.05}


def all_scenarios(quick: bool = False) -> list[Scenario]:
    """`quick`: a fifth of the load (the outages keep their length)."""
    scale = 0.2 if quick else 1.0
    return [
        Scenario(
            "provider_faults",
            "provider faults, 30% of requests",
            rate=100,
            seconds=100 * scale,
            fault="SendGrid stub: 10% 503, 8% 429 (Retry-After 2), 7% slow (202 after 3 s, past the"
            " 2 s timeout: ambiguous), 5% permanent 400; the rest 202 in 100 ms",
            settings={"ProviderTimeoutSeconds": "2", "RetryBaseSeconds": "1", "RetryCapSeconds": "10"},
            stub={"mix": MIX, "slow_ms": 3000, "retry_after": 2, "seed": 8},
        ),
        Scenario(
            "postgres_restart",
            "PostgreSQL restarted mid-run",
            rate=100,
            seconds=60 * scale,
            fault="pg_ctl restart -m fast at 35% of the load",
            inject=restart_postgres,
        ),
        Scenario(
            "postgres_stop_20s",
            "PostgreSQL stopped for 20 s mid-run",
            rate=100,
            seconds=60 * scale,
            fault="pg_ctl stop -m immediate at 25% of the load, started again 20 s later",
            inject=stop_postgres,
        ),
        Scenario(
            "redis_stop_30s",
            "Redis stopped for 30 s mid-run",
            rate=100,
            seconds=60 * scale,
            fault="redis-server stopped at 25% of the load, started again 30 s later (API rate limit"
            " and the sender's provider rate both use it)",
            settings={"ProviderRateLimits": "sendgrid=1000"},
            inject=stop_redis,
        ),
        Scenario(
            "runtime_sigkill",
            "the runtime killed with SIGKILL mid-batch, restarted",
            rate=100,
            seconds=60 * scale,
            fault="SIGKILL to notify-local at 40% of the load while ≥ 5 sends are at the provider;"
            " restarted 3 s later",
            inject=kill_runtime,
        ),
        Scenario(
            "sqs_duplicates",
            "duplicate SQS messages",
            rate=80,
            seconds=45 * scale,
            fault="a copy of every message at once, a second copy of one in three 5-30 s later",
            inject=duplicate_messages,
        ),
        Scenario(
            "sqs_deleted",
            "SQS messages deleted",
            rate=80,
            seconds=45 * scale,
            fault="a consumer deletes what it receives for 10 s from 20% of the load; the queue is"
            " purged at 60%",
            settings={"StaleQueuedSeconds": "30"},
            inject=delete_messages,
        ),
    ]
