"""The delivery engine's decisions, with in-memory fakes (tests/unit/fakes.py): every outcome kind,
Retry-After, exhausted budgets, ambiguous sends, duplicate records, early delayed messages, the
deadline guard and outcomes recorded while the batch is still sending. No services."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from notify_core import dispatch, states
from notify_core.audience.delivery import AudienceView
from notify_core.delivery import OUTCOMES, Deadline, Incoming, deliver
from notify_core.delivery.steps import backoff_seconds
from notify_core.providers import PermanentProviderError, TransientProviderError

from .fakes import EMAIL, NOW, TENANT, Row, World, message, world

LONG = 60_000  # ms left in the invocation: plenty


def run(w: World, *rows: Row, remaining_ms: float = LONG, keys: list[str] | None = None) -> Any:
    batch = [Incoming(keys[i] if keys else f"m{i}", message(r)) for i, r in enumerate(rows)]
    return deliver(batch, Deadline(remaining_ms), w.deps())


def transient(code: str = "http_503", **kw: Any) -> TransientProviderError:
    return TransientProviderError("try later", code, provider="fake", **kw)


# ---------------------------------------------------------------- the outcome table


def test_every_outcome_rule_is_a_legal_transition_from_sending() -> None:
    for kind, rule in OUTCOMES.items():
        if rule.status is not None:
            states.check(["sending"], rule.status)  # raises if not allowed
        assert not (rule.dead_letter and not rule.attempt), kind
    # metric names are literals in the table
    assert OUTCOMES["sent"].metric == "NotificationsSent"
    assert OUTCOMES["failed"].event == "notification.failed"


# ---------------------------------------------------------------- each kind


def test_sent() -> None:
    w = world()
    row = w.store.add()
    report = run(w, row)
    assert report.outcomes["m0"].kind == "sent"
    assert report.failed == {}
    assert row.status == "sent" and row.attempt_count == 1 and row.claim_id is None
    assert w.store.attempts == [(row.id, 1, "sent")]
    assert w.metrics == ["NotificationsSent"]


def test_transient_error_retries_after_backoff_and_goes_back_on_the_queue() -> None:
    w = world(retry_base_seconds=10.0)
    row = w.store.add()
    w.provider.script[row.id] = [transient()]
    report = run(w, row)
    outcome = report.outcomes["m0"]
    assert outcome.kind == "retry"
    assert 5.0 <= outcome.delay_s <= 10.0  # equal jitter over base·2^0
    assert row.status == "queued" and row.attempt_count == 1
    assert row.next_attempt_at == NOW + timedelta(seconds=outcome.delay_s)
    assert [(i.notification_id, i.status, i.delay_s) for i in w.queue.sent] == [
        (row.id, "retrying", outcome.delay_s)
    ]
    assert w.store.attempts == [(row.id, 1, "transient_error")]


def test_retry_after_is_a_lower_bound_on_the_delay() -> None:
    w = world(retry_base_seconds=1.0)
    row = w.store.add()
    w.provider.script[row.id] = [transient("http_429", retry_after=120.0)]
    assert run(w, row).outcomes["m0"].delay_s == 120.0


def test_a_retry_due_after_fifteen_minutes_is_left_for_the_sweeper() -> None:
    w = world(retry_base_seconds=2000.0, retry_cap_seconds=4000.0)
    row = w.store.add()
    w.provider.script[row.id] = [transient()]
    assert run(w, row).outcomes["m0"].delay_s > 900
    assert row.status == "retrying" and w.queue.sent == []


def test_permanent_error_fails_with_a_dead_letter() -> None:
    w = world()
    row = w.store.add()
    w.provider.script[row.id] = [PermanentProviderError("bad address", "http_400", provider="fake")]
    report = run(w, row)
    assert report.outcomes["m0"].kind == "failed"
    assert row.status == "failed" and row.last_error == "http_400: bad address"
    assert w.store.dead_letters == [(row.id, "permanent_error")]
    assert w.store.attempts == [(row.id, 1, "permanent_error")]


def test_exhausted_budget_fails_with_reason_max_attempts() -> None:
    w = world()
    row = w.store.add(attempt_count=2, max_attempts=3)
    w.provider.script[row.id] = [transient()]
    run(w, row)
    assert row.status == "failed" and row.attempt_count == 3
    assert w.store.dead_letters == [(row.id, "max_attempts")]


def test_ambiguous_send_is_retried_by_default_and_counted() -> None:
    w = world()
    row = w.store.add()
    w.provider.script[row.id] = [transient("timeout", ambiguous=True)]
    assert run(w, row).outcomes["m0"].kind == "retry"
    assert w.store.attempts == [(row.id, 1, "ambiguous")]
    assert "AmbiguousSends" in w.metrics


def test_ambiguous_send_fails_when_the_policy_says_so() -> None:
    w = world(ambiguous_sends="fail")
    row = w.store.add()
    w.provider.script[row.id] = [transient("timeout", ambiguous=True)]
    run(w, row)
    assert row.status == "failed"
    assert w.store.dead_letters == [(row.id, "ambiguous")]


def test_a_dead_letter_whose_last_attempt_was_ambiguous_says_so() -> None:
    w = world()
    row = w.store.add(attempt_count=4, max_attempts=5)
    w.provider.script[row.id] = [transient("timeout", ambiguous=True)]
    run(w, row)
    assert w.store.dead_letters == [(row.id, "ambiguous")]


def test_a_dead_letter_after_an_earlier_ambiguous_attempt_says_ambiguous() -> None:
    w = world(retry_base_seconds=1.0)
    row = w.store.add(max_attempts=3)
    w.provider.script[row.id] = [transient("timeout", ambiguous=True)]
    run(w, row)
    row.next_attempt_at = None  # as if the delay had passed
    w.provider.script[row.id] = [PermanentProviderError("invalid address", "http_400")]
    run(w, row)
    assert row.status == "failed"
    assert [a[2] for a in w.store.attempts] == ["ambiguous", "permanent_error"]
    assert w.store.dead_letters == [(row.id, "ambiguous")]


def test_over_the_provider_rate_defers_without_an_attempt() -> None:
    w = world(provider_rate_limits="fake=5")
    w.limiter.refuse["provider:fake"] = 3
    row = w.store.add()
    outcome = run(w, row).outcomes["m0"]
    assert (outcome.kind, outcome.delay_s) == ("deferred", 3.0)
    assert row.status == "queued" and row.attempt_count == 0 and w.store.attempts == []
    assert w.provider.sent == []


def test_over_the_recipient_cap_suppresses_keyed_by_user_else_address() -> None:
    w = world(recipient_hourly_caps="email=2")
    w.limiter.refuse["recipient:"] = 60
    by_address = w.store.add()
    run(w, by_address)
    assert by_address.status == "suppressed" and "recipient cap of 2 email" in (by_address.last_error or "")
    assert w.limiter.taken == [f"recipient:{by_address.tenant_id}:email:ada@example.com"]
    user = w.store.add(user_id=by_address.tenant_id)
    run(w, user)
    assert w.limiter.taken[-1] == f"recipient:{user.tenant_id}:email:{user.user_id}"
    assert w.provider.sent == []


def test_limits_fail_open_when_the_limiter_is_unreachable() -> None:
    w = world(provider_rate_limits="fake=1", recipient_hourly_caps="email=1")
    w.limiter.unavailable = True
    row = w.store.add()
    assert run(w, row).outcomes["m0"].kind == "sent"
    assert w.metrics.count("RateLimiterUnavailable") == 2


def test_an_unexpected_error_releases_the_claim_and_fails_the_record() -> None:
    w = world()
    row = w.store.add()
    w.provider.script[row.id] = [RuntimeError("bug")]
    report = run(w, row)
    assert report.outcomes["m0"].kind == "released"
    assert set(report.failed) == {"m0"}
    assert row.status == "queued" and row.attempt_count == 0 and w.queue.sent == []


def test_an_invalid_stored_payload_fails_permanently_without_a_send() -> None:
    w = world()
    row = w.store.add(payload={"to": "ada@example.com"})  # no subject, no body
    run(w, row)
    assert row.status == "failed" and w.provider.sent == []
    assert w.store.dead_letters == [(row.id, "permanent_error")]


def test_rows_that_are_not_claimable_are_skipped() -> None:
    w = world()
    rows = [w.store.add(status=s) for s in ("sent", "cancelled", "failed", "scheduled")]
    live_lease = w.store.add(status="sending", claimed_until=NOW + timedelta(seconds=30))
    report = run(w, *rows, live_lease)
    assert {o.kind for o in report.outcomes.values()} == {"skipped"}
    assert w.provider.sent == [] and w.store.records == []


def test_an_expired_lease_is_claimed_again() -> None:
    w = world()
    row = w.store.add(status="sending", claimed_until=NOW - timedelta(seconds=1))
    assert run(w, row).outcomes["m0"].kind == "sent"


def test_a_duplicate_record_sends_once() -> None:
    w = world()
    row = w.store.add()
    report = deliver([Incoming("a", message(row)), Incoming("b", message(row))], Deadline(LONG), w.deps())
    assert (report.outcomes["a"].kind, report.outcomes["b"].kind) == ("sent", "skipped")
    assert w.provider.sent == [row.id]


def test_an_early_delayed_message_goes_back_with_the_remaining_delay() -> None:
    w = world()
    row = w.store.add(status="retrying", next_attempt_at=NOW + timedelta(seconds=40))
    report = run(w, row)
    assert report.outcomes["m0"].kind == "early"
    assert w.provider.sent == []
    ((item),) = w.queue.sent
    assert (item.status, item.delay_s) == ("retrying", 40.0)
    assert row.status == "queued" and row.attempt_count == 0


def test_a_message_that_overtook_its_row_goes_back_for_a_moment() -> None:
    # Given a message whose row is not committed yet (ingest sends while its INSERT runs)
    w = world()
    ghost = Row(id=uuid.uuid4(), tenant_id=TENANT)
    fresh = Incoming("m0", message(ghost), sent_at=NOW.timestamp() - 1)
    report = deliver([fresh], Deadline(LONG), w.deps())
    # Then it is put back with a short delay, and nothing else happens
    assert report.outcomes["m0"].kind == "unborn"
    assert [(i.notification_id, i.status, i.delay_s) for i in w.queue.sent] == [(ghost.id, "queued", 2.0)]
    assert w.metrics == ["MessagesBeforeTheirRow"] and w.store.records == []
    # And the copy put back carries the first message's send time
    (back,) = w.queue.sent
    assert back.first_sent_at == NOW.timestamp() - 1
    # And once the window has passed, the row is taken never to come: the message is dropped
    stale = Incoming("m1", message(ghost), sent_at=NOW.timestamp() - 61)
    assert deliver([stale], Deadline(LONG), w.deps()).outcomes["m1"].kind == "skipped"
    assert len(w.queue.sent) == 1


def test_put_back_copies_do_not_renew_the_window_for_a_row_that_never_comes() -> None:
    # Given a message whose row's ingest rolled back, put back again and again: each copy is
    # freshly sent, but carries the first message's send time
    w = world()
    ghost = Row(id=uuid.uuid4(), tenant_id=TENANT)
    first_sent = NOW.timestamp() - 59
    copy = message(ghost).model_copy(update={"first_sent_at": first_sent})
    assert (
        deliver([Incoming("m0", copy, sent_at=NOW.timestamp())], Deadline(LONG), w.deps()).outcomes["m0"].kind
        == "unborn"
    )
    assert [i.first_sent_at for i in w.queue.sent] == [first_sent]
    # When a copy arrives more than the window after the first message
    late = message(ghost).model_copy(update={"first_sent_at": NOW.timestamp() - 61})
    report = deliver([Incoming("m1", late, sent_at=NOW.timestamp())], Deadline(LONG), w.deps())
    # Then it is dropped, however fresh the copy itself
    assert report.outcomes["m1"].kind == "skipped" and len(w.queue.sent) == 1


def test_a_pending_row_is_due_whatever_its_grace() -> None:
    w = world()
    row = w.store.add(status="pending", next_attempt_at=NOW + timedelta(seconds=60))
    assert run(w, row).outcomes["m0"].kind == "sent"


# ---------------------------------------------------------------- time


def test_no_send_starts_that_could_outlive_the_deadline() -> None:
    # Given 1.5 s left and a provider whose longest send is 1 s (guard margin 2 s)
    w = world()
    row = w.store.add()
    report = run(w, row, remaining_ms=1500)
    # Then the send never starts and the claim is given back at once, without an attempt
    assert report.outcomes["m0"].kind == "unstarted"
    assert w.provider.sent == []
    assert row.status == "queued" and row.attempt_count == 0
    assert [(i.status, i.delay_s) for i in w.queue.sent] == [("retrying", 0.0)]


def test_a_hung_provider_frees_the_waiting_claims_when_the_guard_fires() -> None:
    # Given one send slot, a provider that hangs on the first send, and 3.5 s left (guard: 1 + 2 s)
    w = world()
    w.pool = __import__("concurrent.futures").futures.ThreadPoolExecutor(max_workers=1)
    rows = [w.store.add() for _ in range(4)]
    w.provider.hang.add(rows[0].id)
    freed = threading.Event()
    original = w.store.record

    def record(claim_id: Any, outcomes: Any, claimed: Any) -> Any:
        moved = original(claim_id, outcomes, claimed)
        if any(o.kind == "unstarted" for o in outcomes):
            freed.set()
        return moved

    w.store.record = record  # type: ignore[method-assign,assignment]
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=run(w, *rows, remaining_ms=3500)))
    thread.start()
    # When the guard fires (after ~0.5 s), the three waiting rows are released while the first
    # send still hangs
    assert freed.wait(timeout=5)
    assert thread.is_alive() and [r.status for r in rows[1:]] == ["queued"] * 3
    w.provider.release.set()
    thread.join(timeout=10)
    kinds = [result["report"].outcomes[f"m{i}"].kind for i in range(4)]
    assert kinds == ["sent", "unstarted", "unstarted", "unstarted"]
    assert w.provider.sent == [rows[0].id]


def test_outcomes_are_recorded_while_the_batch_is_still_sending() -> None:
    w = world()
    fast, slow = w.store.add(), w.store.add()
    w.provider.hang.add(slow.id)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(report=run(w, fast, slow)))
    thread.start()
    assert w.provider.started.wait(timeout=5)
    deadline = time.monotonic() + 5
    while fast.status != "sent" and time.monotonic() < deadline:
        time.sleep(0.005)
    # the fast send's outcome is committed while the slow one is still in flight
    assert fast.status == "sent" and slow.status == "sending"
    w.provider.release.set()
    thread.join(timeout=10)
    assert slow.status == "sent" and len(w.store.records) == 2


def test_outcomes_that_cannot_be_recorded_are_reported_to_sqs() -> None:
    # Given a database that stays unreachable for the rest of the invocation
    w = world()
    row = w.store.add()
    w.store.down = 10**6
    report = run(w, row, remaining_ms=3100)
    # Then the record is reported failed (SQS redelivers it; the lease frees the row)
    assert set(report.failed) == {"m0"}
    assert row.status == "sending"


def test_while_the_database_is_away_an_early_message_still_goes_back_and_only_claimed_rows_fail() -> None:
    # Given a batch with a due row and an early one, and a database away for the rest of the run
    w = world()
    due = w.store.add()
    early = w.store.add(status="retrying", next_attempt_at=NOW + timedelta(seconds=40))
    w.store.down = 10**6
    report = run(w, due, early, remaining_ms=3100)
    # Then the claimed row's record is reported to SQS; the early message (which moved nothing) is
    # put back with its remaining delay and acknowledged
    assert set(report.failed) == {"m0"} and report.outcomes["m1"].kind == "early"
    assert [(i.notification_id, i.delay_s) for i in w.queue.sent] == [(early.id, 40.0)]


def test_an_empty_batch_does_nothing() -> None:
    w = world()
    report = deliver([], Deadline(LONG), w.deps())
    assert (report.outcomes, report.failed) == ({}, {})
    assert (w.store.records, w.queue.sent, w.metrics) == ([], [], [])


def test_a_flush_is_retried_while_the_database_comes_back() -> None:
    w = world()
    row = w.store.add()
    w.store.down = 2
    report = run(w, row)
    assert report.failed == {} and row.status == "sent"


# ---------------------------------------------------------------- retry policy


def test_backoff_doubles_with_equal_jitter_and_is_capped() -> None:
    s = world(retry_base_seconds=10.0, retry_cap_seconds=100.0).settings
    assert backoff_seconds(1, s, jitter=lambda lo, hi: lo) == 5.0
    assert backoff_seconds(3, s, jitter=lambda lo, hi: hi) == 40.0
    assert backoff_seconds(10, s, jitter=lambda lo, hi: hi) == 100.0
    assert backoff_seconds(10, s, jitter=lambda lo, hi: lo) == 50.0
    assert backoff_seconds(1, s, retry_after=7.0, jitter=lambda lo, hi: lo) == 7.0


# ---------------------------------------------------------------- any sequence stays legal

RESULTS = st.sampled_from(
    [
        "ok",
        "transient",
        "ambiguous",
        "permanent",
        "bug",
        "deferred",
        "capped",
        "quiet",
        "opted_out",
        "bounced",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    script=st.lists(RESULTS, min_size=1, max_size=8),
    max_attempts=st.integers(min_value=1, max_value=4),
    policy=st.sampled_from(["retry", "fail"]),
)
def test_any_sequence_of_outcomes_keeps_transitions_legal(
    script: list[str], max_attempts: int, policy: str
) -> None:
    w = world(retry_base_seconds=1.0, ambiguous_sends=policy, provider_rate_limits="fake=1")
    row = w.store.add(max_attempts=max_attempts, user_id=uuid.uuid4())
    for result in script:
        if row.status in states.TERMINAL:
            break
        w.limiter.refuse = {"provider:": 1} if result == "deferred" else {}
        if result == "capped":
            w.settings = w.settings.model_copy(update={"recipient_hourly_caps": "email=1"})
            w.limiter.refuse = {"recipient:": 1}
        # audience (issue 10): quiet hours, a later opt-out, a bounce — decided from the prefetch
        w.store.audience = audience_view(row, result)
        w.provider.script[row.id] = [
            {
                "ok": None,
                "transient": transient(),
                "ambiguous": transient("timeout", ambiguous=True),
                "permanent": PermanentProviderError("no", "http_400"),
                "bug": RuntimeError("bug"),
            }.get(result)
        ]
        if w.provider.script[row.id] == [None]:
            w.provider.script[row.id] = []
        row.next_attempt_at = None  # as if the delay had passed
        run(w, row)  # every move inside is checked against states.ALLOWED
        w.settings = w.settings.model_copy(update={"recipient_hourly_caps": ""})
        if row.status == "scheduled":  # held: the sweeper enqueues it when the window ends
            w.queue([dispatch.Enqueue(row.id, row.tenant_id, "scheduled")])
    # Then the row is in a state a schedule or a message moves on, or a terminal one
    assert row.status in {"queued", "retrying", "sent", "failed", "suppressed", "scheduled"}
    assert row.attempt_count <= max_attempts
    assert len(w.store.attempts) == row.attempt_count
    assert (row.status == "failed") == bool(w.store.dead_letters)
    assert all(t.split("->")[1] in states.ALLOWED[t.split("->")[0]] for t in row.history)


# ---------------------------------------------------------------- audience (issue 10)

ALWAYS_QUIET = {"quiet_hours": {"start": "00:00", "end": "23:59"}, "timezone": "UTC"}


def audience_view(row: Row, result: str) -> AudienceView:
    """The prefetched view that makes the audience steps decide `result` for `row`."""
    view = AudienceView()
    if result == "quiet" and row.user_id is not None:
        view.users[row.user_id] = ALWAYS_QUIET
    if result == "opted_out" and row.user_id is not None:
        view.users[row.user_id] = {"channels": {"email": False}}
    if result == "bounced":
        view.suppressed[(row.tenant_id, "email", "ada@example.com")] = {"hard_bounce"}
    return view


def test_quiet_hours_hold_the_row_scheduled_until_the_window_ends() -> None:
    w = world()
    row = w.store.add(user_id=uuid.uuid4(), category="orders")
    w.store.audience = audience_view(row, "quiet")
    outcome = run(w, row).outcomes["m0"]
    # 12:00 UTC inside 00:00-23:59: held until 23:59, no attempt, nothing sent
    assert outcome.kind == "held" and outcome.delay_s == 11 * 3600 + 59 * 60
    assert row.status == "scheduled" and row.attempt_count == 0 and w.provider.sent == []
    assert row.next_attempt_at == NOW + timedelta(hours=11, minutes=59)
    assert w.queue.sent == [] and w.metrics == ["NotificationsHeld"]  # > 15 min: the sweeper's
    # a critical category is not held
    w.store.audience.critical.add((row.tenant_id, "orders"))
    again = w.store.add(user_id=row.user_id, category="orders")
    assert run(w, again).outcomes["m0"].kind == "sent"


def test_a_hold_ending_within_fifteen_minutes_goes_back_on_the_queue_delayed() -> None:
    w = world()
    row = w.store.add(user_id=uuid.uuid4())
    w.store.audience.users[row.user_id] = {"quiet_hours": {"start": "11:00", "end": "12:10"}}
    run(w, row)
    assert [(i.status, i.delay_s) for i in w.queue.sent] == [("scheduled", 600.0)]
    assert row.status == "queued" and row.next_attempt_at == NOW + timedelta(minutes=10)


def test_a_later_opt_out_and_a_suppression_end_suppressed_with_the_reason() -> None:
    w = world()
    opted = w.store.add(user_id=uuid.uuid4(), category="orders")
    w.store.audience.users[opted.user_id] = {"categories": {"orders": {"enabled": False}}}
    bounced = w.store.add(payload={**EMAIL, "to": "Bob@Example.com"})
    w.store.audience.suppressed[(bounced.tenant_id, "email", "bob@example.com")] = {
        "unsubscribe",
        "complaint",
    }
    run(w, opted, bounced)
    assert (opted.status, opted.last_error) == (
        "suppressed",
        "preference: the user turned off orders on email",
    )
    assert (bounced.status, bounced.last_error) == ("suppressed", "complaint: the address is suppressed")
    assert w.provider.sent == [] and w.store.attempts == []
