"""What a reviewer's small changes used to slip past, pinned in the tier where each behaviour lives:

- the claim guard, against the real database: which rows a batch may claim, which are early;
- the early path end to end: a delayed message that arrives before it is due goes back;
- the API-key cache with a real TTL: a revoked key works until its entry expires, then not;
- the sender without Redis: limits fail open, sends go out;
- recipient caps keyed by the address when there is no user;
- what a failed attempt records.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notify_core import auth
from notify_core.delivery.store import PgStore

from .conftest import EMAIL, SMS, Api, Pipeline, Tenant, create

# ---------------------------------------------------------------- the claim guard (SQL)

PAST, SOON = "now() - interval '5 seconds'", "now() + interval '40 seconds'"
CASES = {
    # name: (status, next_attempt_at, claimed_until) -> claimed, early or left
    "pending, grace ahead": ("pending", SOON, None, "claimed"),
    "queued": ("queued", None, None, "claimed"),
    "queued, due": ("queued", PAST, None, "claimed"),
    "queued, not due": ("queued", SOON, None, "early"),
    "retrying, due": ("retrying", PAST, None, "claimed"),
    "retrying, not due": ("retrying", SOON, None, "early"),
    "sending, lease expired": ("sending", None, PAST, "claimed"),
    "sending, lease live": ("sending", None, SOON, "left"),
    "scheduled": ("scheduled", SOON, None, "left"),
    "sent": ("sent", None, None, "left"),
    "cancelled": ("cancelled", None, None, "left"),
    "failed": ("failed", None, None, "left"),
    "suppressed": ("suppressed", None, None, "left"),
}


def test_the_claim_guard_takes_exactly_the_due_waiting_rows_and_expired_leases(
    api: Api, pipeline: Pipeline
) -> None:
    ids = {name: create(api, "email", EMAIL) for name in CASES}
    for name, (status, due, until, _) in CASES.items():
        pipeline.sql(
            f"UPDATE notifications SET status = %s, next_attempt_at = {due or 'NULL'},"
            f" claimed_until = {until or 'NULL'} WHERE id = %s",
            status,
            ids[name],
        )
    absent = uuid.uuid4()
    claim_id = uuid.uuid4()
    lease = datetime.now(UTC) + timedelta(seconds=35)
    claimed = PgStore().claim([uuid.UUID(i) for i in ids.values()] + [absent], claim_id, lease)

    outcome = {}
    for name, nid in ids.items():
        key = uuid.UUID(nid)
        outcome[name] = "claimed" if key in claimed.rows else "early" if key in claimed.early else "left"
    assert outcome == {name: case[3] for name, case in CASES.items()}
    assert claimed.absent == {absent}
    for name in ("queued, not due", "retrying, not due"):
        _tenant, status, left = claimed.early[uuid.UUID(ids[name])]
        assert (status, 35 < left <= 40) == (CASES[name][0], True), left
    for name, case in CASES.items():
        row = pipeline.row(ids[name])
        if case[3] == "claimed":
            assert (row["status"], row["claim_id"], row["claimed_until"]) == ("sending", claim_id, lease), (
                name
            )
        else:
            assert row["status"] == case[0] and row["claim_id"] is None, name


def test_an_early_delayed_message_goes_back_with_its_remaining_delay(api: Api, pipeline: Pipeline) -> None:
    # Given a retry due in 40 s whose message arrives now (a duplicate, or a clock that disagrees)
    nid = create(api, "email", EMAIL)
    (message,) = pipeline.receive()
    pipeline.sql(f"UPDATE notifications SET status = 'retrying', next_attempt_at = {SOON} WHERE id = %s", nid)
    # When the sender gets it
    assert pipeline.invoke("sender", [message]) == {"batchItemFailures": []}
    # Then nothing is sent, and the message is back on the queue, delayed
    assert pipeline.stub.requests("sendgrid") == []
    row = pipeline.row(nid)
    assert (row["status"], row["attempt_count"]) == ("queued", 0)
    attributes = pipeline.env.sqs.get_queue_attributes(
        QueueUrl=pipeline.queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"


# ---------------------------------------------------------------- the API-key cache


def test_a_revoked_key_works_until_its_cache_entry_expires(
    make_tenant: Any, make_api: Any, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_env(API_KEY_CACHE_SECONDS="30")
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    tenant: Tenant = make_tenant()
    api: Api = make_api(tenant.key)
    assert api("GET", "/api/v1/dlq/stats").status == 200  # looked up, cached for 30 s
    assert auth.revoke_api_key(tenant.prefix)
    # revoking in this container forgets the cache at once
    assert api("GET", "/api/v1/dlq/stats").status == 401

    other: Tenant = make_tenant()
    other_api: Api = make_api(other.key)
    assert other_api("GET", "/api/v1/dlq/stats").status == 200
    # revoked elsewhere (another container): this container's entry still admits it...
    with auth.transaction() as conn:
        conn.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s", (other.prefix,))
    clock[0] += 29
    assert other_api("GET", "/api/v1/dlq/stats").status == 200
    # ...until the entry expires
    clock[0] += 2
    assert other_api("GET", "/api/v1/dlq/stats").status == 401


# ---------------------------------------------------------------- limits without Redis


def test_the_sender_sends_without_redis_and_counts_it(
    api: Api, pipeline: Pipeline, settings_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    settings_env(
        REDIS_URL="redis://127.0.0.1:9/0",
        PROVIDER_RATE_LIMITS="twilio=1",
        RECIPIENT_HOURLY_CAPS="sms=1",
    )
    ids = [create(api, "sms", SMS) for _ in range(3)]
    capsys.readouterr()
    pipeline.invoke("sender", pipeline.receive())
    assert [pipeline.row(i)["status"] for i in ids] == ["sent"] * 3
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert sum(sum(m.get("RateLimiterUnavailable", [0])) for m in metrics) == 6  # two limits x three sends


def test_recipient_caps_are_keyed_by_address_without_a_user(
    api: Api, pipeline: Pipeline, settings_env: Any
) -> None:
    settings_env(RECIPIENT_HOURLY_CAPS="sms=1", REDIS_KEY_PREFIX=f"cap-{uuid.uuid4().hex}:")
    first, again = create(api, "sms", SMS), create(api, "sms", SMS)
    other = create(api, "sms", {**SMS, "to": "+14155550199"})
    pipeline.drain_sender()
    statuses = sorted(pipeline.row(i)["status"] for i in (first, again))
    assert statuses == ["sent", "suppressed"]
    assert pipeline.row(other)["status"] == "sent"


# ---------------------------------------------------------------- what a failed attempt records


def test_a_permanent_failure_records_the_attempt_and_its_dead_letter(api: Api, pipeline: Pipeline) -> None:
    pipeline.stub.configure("twilio", fail_next=1, failure="permanent")
    nid = create(api, "sms", SMS)
    pipeline.drain_sender()
    row = pipeline.row(nid)
    (attempt,) = row["attempts"]
    assert {
        k: attempt[k] for k in ("attempt_number", "provider", "outcome", "error_code", "provider_message_id")
    } == {
        "attempt_number": 1,
        "provider": "twilio",
        "outcome": "permanent_error",
        "error_code": "invalid_number",
        "provider_message_id": None,
    }
    assert attempt["error"] == row["last_error"] and "21211" in attempt["error"]
    assert attempt["duration_ms"] >= 0
    (letter,) = row["dead_letters"]
    assert (letter["reason"], letter["attempt_count"], letter["last_error"]) == (
        "permanent_error",
        1,
        row["last_error"],
    )
    assert (row["status"], row["attempt_count"], row["provider_message_id"]) == ("failed", 1, None)


def test_a_dead_letter_whose_notification_moved_on_is_not_replayed_and_can_be_discarded(
    api: Api, pipeline: Pipeline
) -> None:
    pipeline.stub.configure("twilio", fail_next=1, failure="permanent")
    nid = create(api, "sms", SMS)
    pipeline.drain_sender()
    (letter,) = api("GET", "/api/v1/dlq").json["data"]
    # the provider later reported it delivered after all
    pipeline.sql("UPDATE notifications SET status = 'delivered' WHERE id = %s", nid)
    replay = api("POST", f"/api/v1/dlq/{letter['id']}/replay")
    assert (replay.status, replay.error["code"]) == (409, "conflict")
    assert pipeline.row(nid)["status"] == "delivered"
    # the refused replay changed nothing: the letter is still open, and can be discarded once
    assert [d["id"] for d in api("GET", "/api/v1/dlq").json["data"]] == [letter["id"]]
    assert api("DELETE", f"/api/v1/dlq/{letter['id']}").status == 204
    assert api("GET", "/api/v1/dlq").json["data"] == []
    assert api("DELETE", f"/api/v1/dlq/{letter['id']}").status == 404


# ---------------------------------------------------------------- the sender's edge and a lost claim


def test_a_batch_of_only_malformed_records_is_reported_failed_and_touches_nothing(
    api: Api, pipeline: Pipeline
) -> None:
    nid = create(api, "email", EMAIL)
    (message,) = pipeline.receive()
    garbled = [
        {**message, "MessageId": "bad-json", "Body": "{not json"},
        {**message, "MessageId": "bad-shape", "Body": json.dumps({"notification_id": "not-a-uuid"})},
    ]
    reply = pipeline.invoke("sender", garbled)
    assert sorted(f["itemIdentifier"] for f in reply["batchItemFailures"]) == ["bad-json", "bad-shape"]
    assert pipeline.row(nid)["status"] == "queued" and pipeline.stub.requests("sendgrid") == []


def test_the_send_pool_follows_send_concurrency_between_invocations(
    api: Api, pipeline: Pipeline, settings_env: Any
) -> None:
    from notify_local.lambda_env import load_module

    sender = load_module("functions/sender/", "app")
    for size in ("3", "7"):
        settings_env(SEND_CONCURRENCY=size)
        nid = create(api, "email", EMAIL)
        pipeline.drain_sender()
        assert pipeline.row(nid)["status"] == "sent"
        assert sender.processor.pool()._max_workers == int(size)


def test_the_outcome_of_a_claim_that_was_taken_over_changes_nothing(api: Api, pipeline: Pipeline) -> None:
    from notify_core.delivery.outcomes import Outcome

    # Given a row claimed by a sender whose lease then expired, and claimed again by another
    nid = uuid.UUID(create(api, "email", EMAIL))
    store = PgStore()
    first_id = uuid.uuid4()
    first = store.claim([nid], first_id, datetime.now(UTC) - timedelta(seconds=1))
    second_id = uuid.uuid4()
    second = store.claim([nid], second_id, datetime.now(UTC) + timedelta(seconds=60))
    assert set(first.rows) == set(second.rows) == {nid}
    # When the first sender records its outcome late
    (claim,) = first.rows.values()
    late = Outcome("sent", nid, claim.tenant_id, channel="email", provider="sendgrid", attempt=1)
    moved = store.record(first_id, [late], first.rows)
    # Then nothing moved: the row is still the second sender's, with no attempt recorded
    assert moved == set()
    row = pipeline.row(str(nid))
    assert (row["status"], row["claim_id"], row["attempts"]) == ("sending", second_id, [])


def test_an_enqueue_that_finds_its_row_moved_on_reports_the_row_as_it_is(
    api: Api, pipeline: Pipeline, tenant: Tenant
) -> None:
    from notify_core import dispatch

    # Given a row the sender already sent (as when it wins the race with the `queued` mark)
    nid = create(api, "email", EMAIL)
    pipeline.drain_sender()
    # When it is enqueued as `pending` again with its reply row asked for
    result = dispatch.enqueue([dispatch.Enqueue(uuid.UUID(nid), tenant.id, "pending")], report=True)
    # Then the message went out, the row was not moved back, and the reply shows it as it is
    assert result.sent == [uuid.UUID(nid)] and result.failed == []
    assert result.rows[uuid.UUID(nid)]["status"] == "sent"
    assert pipeline.row(nid)["status"] == "sent"
    # and the extra message is acknowledged without a second send
    pipeline.drain_sender()
    assert len(pipeline.stub.requests("sendgrid")) == 1
