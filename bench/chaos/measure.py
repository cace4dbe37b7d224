"""What a scenario's run is measured by, and the targets it is held to.

Three sources, each read after the run (never an estimate):
- the database: every notification's status, every attempt's outcome, every open dead letter;
- the provider stub: every request it received, keyed by the notification id SendGrid's mail
  carries (`custom_args.notification_id`), with the status it answered (2xx: the provider took it,
  whether or not the client saw the answer) and when;
- the runtime's log: the metrics the functions emitted (CloudWatch EMF lines), e.g. AmbiguousSends.

Definitions:
- **lost**: accepted (its id came back in a 202) and then missing, or not final after quiescence,
  or final `sent` without the provider having taken it, or `failed` without a dead letter;
- **provider duplicates**: notifications the provider took (2xx) more than once;
- a duplicate is **explained** when the notification had at least as many ambiguous attempts
  (the request reached the provider, the answer did not come back) as extra sends, or when its
  send was in progress (sent to the provider, outcome not committed) at a SIGKILL;
- a **false dead letter**: the provider took the notification, yet its dead letter gives a reason
  other than `ambiguous` (it claims it was not sent).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from notify_local.provider_stub import RequestSummary

from .load import Request

FINAL = frozenset({"sent", "delivered", "failed", "cancelled", "suppressed"})


def say(message: str) -> None:
    """Progress, on stderr: stdout carries only the report."""
    print(f"chaos: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- reading the database


@dataclass
class Snapshot:
    status: dict[str, str]  # notification id -> status
    attempts: dict[str, list[str]]  # notification id -> attempt outcomes, in order
    dead: dict[str, str]  # notification id -> reason of its open dead letter


def snapshot(database_url: str) -> Snapshot:
    with psycopg.connect(database_url, autocommit=True) as conn:
        status = {i: s for i, s in conn.execute("SELECT id::text, status FROM notifications").fetchall()}
        attempts: dict[str, list[str]] = {}
        for nid, outcome in conn.execute(
            "SELECT notification_id::text, outcome FROM notification_attempts"
            " ORDER BY notification_id, attempt_number"
        ).fetchall():
            attempts.setdefault(nid, []).append(outcome)
        dead = {
            i: r
            for i, r in conn.execute(
                "SELECT notification_id::text, reason FROM notification_dlq WHERE replayed_at IS NULL"
            ).fetchall()
        }
    return Snapshot(status, attempts, dead)


def sending_now(database_url: str) -> set[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT id::text FROM notifications WHERE status = 'sending'")}


def wait_quiet(database_url: str, sqs: Any, queue_url: str, timeout: float) -> float | None:
    """Seconds until every notification is final and the queue holds no visible or delayed
    message (a late duplicate still counts as work); None when `timeout` passed first."""
    started = time.monotonic()
    said = started
    while time.monotonic() - started < timeout:
        open_rows: int | None = None
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(database_url, autocommit=True, connect_timeout=3) as conn,
        ):
            row = conn.execute(
                "SELECT count(*) FROM notifications WHERE NOT (status = ANY(%s))", (list(FINAL),)
            ).fetchone()
            open_rows = int(row[0]) if row else 0
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        waiting = sum(int(v) for v in attributes.values())
        if open_rows == 0 and waiting == 0:
            return time.monotonic() - started
        if time.monotonic() - said >= 15:
            said = time.monotonic()
            say(f"  waiting for quiescence: {open_rows} not final, {waiting} messages waiting")
        time.sleep(1.0)
    return None


# ---------------------------------------------------------------- the runtime's metrics


def emitted_metrics(log_path: Path) -> Counter[str]:
    """Every metric in the CloudWatch EMF lines of the runtime's log, summed by name."""
    totals: Counter[str] = Counter()  # the metrics here are counts
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if '"_aws"' not in line:
                continue
            try:
                blob = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            for directive in blob.get("_aws", {}).get("CloudWatchMetrics", []):
                for metric in directive.get("Metrics", []):
                    value = blob.get(metric.get("Name"))
                    values = value if isinstance(value, list) else [value]
                    totals[metric["Name"]] += int(sum(v for v in values if isinstance(v, int | float)))
    return totals


# ---------------------------------------------------------------- figures


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class ApiFigures:
    requests: int
    answers: dict[str, int]  # by status, or the reason there was none
    p50_s: float
    p99_s: float
    max_s: float
    late: int  # requests the client sent late (it fell behind its schedule)
    outage_requests: int = 0  # requests that left during an outage window
    outage_max_s: float | None = None  # the slowest answer among them
    outage_unanswered: int = 0


def api_figures(requests: list[Request], late: int, outages: list[tuple[float, float]]) -> ApiFigures:
    answered = [r.latency_s for r in requests if r.latency_s is not None]
    answers = Counter(str(r.status) if r.status is not None else f"no answer ({r.error})" for r in requests)
    figures = ApiFigures(
        requests=len(requests),
        answers=dict(sorted(answers.items())),
        p50_s=percentile(answered, 50),
        p99_s=percentile(answered, 99),
        max_s=max(answered, default=0.0),
        late=late,
    )
    if outages:
        during = [r for r in requests if any(a <= r.started <= b for a, b in outages)]
        figures.outage_requests = len(during)
        figures.outage_max_s = max((r.latency_s for r in during if r.latency_s is not None), default=0.0)
        figures.outage_unanswered = sum(1 for r in during if r.latency_s is None)
    return figures


@dataclass
class Figures:
    accepted: int
    statuses: dict[str, int]  # every status of the accepted notifications ("missing": not stored)
    stored_not_accepted: int  # stored although no 202 named them (the client was told it failed)
    stored_not_accepted_statuses: dict[str, int]
    dead_letters: dict[str, int]  # by reason
    not_final: int
    lost: int
    lost_examples: list[str]
    provider_requests: int
    provider_answers: dict[str, int]  # by status answered ("slow 202": answered after slow_ms)
    provider_accepted: int  # notifications the provider took at least once
    provider_duplicates: int  # notifications the provider took more than once
    provider_extra_sends: int  # acceptances beyond each notification's first
    unexplained_duplicates: int
    unexplained_examples: list[str]
    ambiguous_attempts: int
    ambiguous_notifications: int
    ambiguous_metric: int
    false_dead_letters: int
    false_examples: list[str]
    quiescence_s: float | None
    api: ApiFigures
    metrics: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return self.statuses.get("sent", 0) + self.statuses.get("delivered", 0)


def figures(
    accepted_ids: list[str],
    db: Snapshot,
    provider: list[RequestSummary],
    metrics: Counter[str],
    api: ApiFigures,
    quiescence_s: float | None,
    in_progress_at_kill: set[str] | None = None,
) -> Figures:
    accepted = set(accepted_ids)
    taken: Counter[str] = Counter(r.notification_id for r in provider if r.accepted and r.notification_id)
    ambiguous = {nid: outcomes.count("ambiguous") for nid, outcomes in db.attempts.items()}
    killed = in_progress_at_kill or set()

    statuses: Counter[str] = Counter()
    lost: list[str] = []
    for nid in sorted(accepted):
        status = db.status.get(nid)
        statuses[status or "missing"] += 1
        if status is None:
            lost.append(f"{nid} accepted but not stored")
        elif status not in FINAL:
            lost.append(f"{nid} still {status}")
        elif status in ("sent", "delivered") and taken[nid] == 0:
            lost.append(f"{nid} {status} but the provider never took it")
        elif status == "failed" and nid not in db.dead:
            lost.append(f"{nid} failed without a dead letter")

    duplicates = {nid: n - 1 for nid, n in taken.items() if n > 1}
    unexplained = [
        f"{nid} taken {extra + 1} times after {ambiguous.get(nid, 0)} ambiguous attempts"
        for nid, extra in sorted(duplicates.items())
        if extra > ambiguous.get(nid, 0) + (1 if nid in killed else 0)
    ]
    false_letters = [
        f"{nid} taken by the provider, dead letter {reason}"
        for nid, reason in sorted(db.dead.items())
        if taken[nid] > 0 and reason != "ambiguous"
    ]
    answers = Counter(
        ("slow " if r.slow else "") + (str(r.status) if r.status is not None else "unanswered")
        for r in provider
    )
    return Figures(
        accepted=len(accepted),
        statuses=dict(sorted(statuses.items())),
        stored_not_accepted=len(set(db.status) - accepted),
        stored_not_accepted_statuses=dict(
            sorted(Counter(s for nid, s in db.status.items() if nid not in accepted).items())
        ),
        dead_letters=dict(sorted(Counter(db.dead[n] for n in accepted if n in db.dead).items())),
        not_final=sum(n for s, n in statuses.items() if s not in FINAL),
        lost=len(lost),
        lost_examples=lost[:5],
        provider_requests=len(provider),
        provider_answers=dict(sorted(answers.items())),
        provider_accepted=len(taken),
        provider_duplicates=len(duplicates),
        provider_extra_sends=sum(duplicates.values()),
        unexplained_duplicates=len(unexplained),
        unexplained_examples=unexplained[:5],
        ambiguous_attempts=sum(ambiguous.values()),
        ambiguous_notifications=sum(1 for n in ambiguous.values() if n),
        ambiguous_metric=int(metrics.get("AmbiguousSends", 0)),
        false_dead_letters=len(false_letters),
        false_examples=false_letters[:5],
        quiescence_s=quiescence_s,
        api=api,
        metrics={k: int(v) for k, v in sorted(metrics.items())},
    )


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    passed: bool
    detail: str


def targets(f: Figures, extras: dict[str, Any]) -> list[Target]:
    """The issue's targets, each checked against the figures."""
    out = [
        Target("nothing lost", f.lost == 0, f"lost {f.lost}" + _examples(f.lost_examples)),
        Target(
            "no dead letter claims a sent notification was not sent",
            f.false_dead_letters == 0,
            f"{f.false_dead_letters} false dead letters" + _examples(f.false_examples),
        ),
    ]
    if "in_progress_at_kill" in extras:
        in_progress = int(extras["in_progress_at_kill"])
        out.append(
            Target(
                "after SIGKILL, duplicates ≤ sends in progress at the kill (and only those)",
                f.provider_duplicates <= in_progress and f.unexplained_duplicates == 0,
                f"{f.provider_duplicates} duplicates, {in_progress} in progress at the kill"
                f" ({extras.get('unanswered_at_kill')} of them unanswered by the provider),"
                f" {f.unexplained_duplicates} duplicates outside them" + _examples(f.unexplained_examples),
            )
        )
    elif f.ambiguous_attempts == 0:
        out.append(
            Target(
                "no provider duplicates without ambiguity",
                f.provider_duplicates == 0,
                f"{f.provider_duplicates} duplicates, 0 ambiguous attempts"
                + _examples(f.unexplained_examples),
            )
        )
    else:
        out.append(
            Target(
                "only ambiguous sends duplicate",
                f.unexplained_duplicates == 0,
                f"{f.provider_duplicates} duplicates ({f.provider_extra_sends} extra sends), all after as many"
                f" ambiguous attempts except {f.unexplained_duplicates}" + _examples(f.unexplained_examples),
            )
        )
        out.append(
            Target(
                "each ambiguous send counted by the metric",
                f.ambiguous_metric == f.ambiguous_attempts,
                f"AmbiguousSends {f.ambiguous_metric}, ambiguous attempt rows {f.ambiguous_attempts}",
            )
        )
    if f.api.outage_max_s is not None and extras.get("outage_kind") == "database":
        out.append(
            Target(
                "every API request during the database outage answered within 10 s",
                f.api.outage_max_s <= 10.0 and f.api.outage_unanswered == 0,
                f"{f.api.outage_requests} requests, slowest answer {f.api.outage_max_s:.2f} s,"
                f" {f.api.outage_unanswered} unanswered",
            )
        )
    out.append(
        Target(
            "quiescent (every notification final, queue empty)",
            f.quiescence_s is not None,
            "reached" if f.quiescence_s is not None else "not reached before the timeout",
        )
    )
    return out


def _examples(items: list[str]) -> str:
    return f" (e.g. {'; '.join(items[:3])})" if items else ""
