"""The delivery pipeline over real services: API → SQS → sender (the real provider SDKs talking to
the stub) → PostgreSQL; retries, dead letters, SQS redrive → DLQ processor, and the sweeper."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from notify_local.lambda_env import LambdaContext, load_handler

from .conftest import EMAIL, PUSH, SMS, Api, Pipeline, create


def test_each_provider_sends_through_its_sdk(api: Api, pipeline: Pipeline) -> None:
    # Given one notification per channel, through the real SendGrid, Twilio and FCM SDKs
    ids = [create(api, "email", EMAIL), create(api, "sms", SMS), create(api, "push", PUSH)]
    # When the sender processes the queue
    messages = pipeline.receive()
    assert len(messages) == 3
    reply = pipeline.invoke("sender", messages)
    # Then every one is sent, with the provider's message id and an attempt row
    assert reply == {"batchItemFailures": []}
    for nid in ids:
        row = pipeline.row(nid)
        assert row["status"] == "sent", row["last_error"]
        assert row["provider_message_id"]
        assert row["attempt_count"] == 1
        assert [a["outcome"] for a in row["attempts"]] == ["sent"]
    # And each request as the stub recorded it carries the right fields
    (mail,) = pipeline.stub.requests("sendgrid")
    assert mail.body["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert mail.body["from"]["email"] == "ops@example.com"
    assert mail.body["subject"] == "Hi"
    assert {c["type"]: c["value"] for c in mail.body["content"]} == {
        "text/plain": "Hello",
        "text/html": "<p>Hello</p>",
    }
    (sms,) = pipeline.stub.requests("twilio")
    assert sms.body["To"] in ("+14155550100", ["+14155550100"])
    assert str(sms.body["Body"]).strip("[]'") == "Your code is 123456"
    (push,) = pipeline.stub.requests("fcm")
    message = push.body["message"]
    assert message["token"] == "device-token-1"
    assert message["notification"] == {"title": "Ping", "body": "You have mail"}
    assert message["data"] == {"k": "v"}


def test_mixed_batch_reports_exactly_the_failing_records(
    api: Api, pipeline: Pipeline, exploding_console: None
) -> None:
    ok = create(api, "email", EMAIL)
    # a message whose body is not a notification message, and one whose processing raises
    pipeline.env.sqs.send_message(QueueUrl=pipeline.queue, MessageBody="not json")
    boom = create(api, "email", EMAIL, provider="console")
    messages = pipeline.receive()
    by_body = {m["Body"]: m["MessageId"] for m in messages}
    assert len(messages) == 3
    reply = pipeline.invoke("sender", messages)
    expected = sorted([by_body["not json"], next(i for b, i in by_body.items() if boom in b)])
    assert sorted(f["itemIdentifier"] for f in reply["batchItemFailures"]) == expected
    assert pipeline.row(ok)["status"] == "sent"
    # the claim of the record that raised was given back, so SQS's redelivery can take it
    assert pipeline.row(boom)["status"] == "queued"


def test_duplicate_delivery_sends_once(api: Api, pipeline: Pipeline) -> None:
    nid = create(api, "sms", SMS)
    (message,) = pipeline.receive()
    duplicate = dict(message, MessageId=str(uuid.uuid4()))
    reply = pipeline.invoke("sender", [message, duplicate])
    assert reply == {"batchItemFailures": []}
    pipeline.env.sqs.send_message(QueueUrl=pipeline.queue, MessageBody=message["Body"])  # a late duplicate
    pipeline.drain_sender()
    assert len(pipeline.stub.requests("twilio")) == 1
    assert pipeline.row(nid)["attempt_count"] == 1


def test_cancelled_notification_is_not_sent(api: Api, pipeline: Pipeline) -> None:
    nid = create(api, "email", EMAIL)
    assert api("POST", f"/api/v1/notifications/{nid}/cancel").status == 200
    pipeline.drain_sender()
    assert pipeline.stub.requests("sendgrid") == []
    assert pipeline.row(nid)["status"] == "cancelled"


def test_transient_errors_retry_with_backoff_then_send(api: Api, pipeline: Pipeline) -> None:
    # Given a provider failing twice with 5xx, then recovering
    pipeline.stub.configure("sendgrid", fail_next=2, failure="5xx")
    nid = create(api, "email", EMAIL)
    # When the sender takes the first attempt
    pipeline.invoke("sender", pipeline.receive())
    row = pipeline.row(nid)
    # Then it waits in the backoff window (base 1 s, equal jitter: between 0.5 and 1 s after the
    # attempt was recorded), back on the queue delayed
    assert row["status"] == "queued"
    assert row["attempt_count"] == 1
    (attempt,) = row["attempts"]
    waits = (row["next_attempt_at"] - attempt["created_at"]).total_seconds()
    assert 0.45 <= waits <= 1.05, waits  # the attempt row and the due time are written together
    assert attempt["outcome"] == "transient_error"
    assert attempt["error_code"] == "http_503"
    assert (row["last_error"] or "").startswith("http_503: SendGrid answered HTTP 503"), row["last_error"]
    # And after the delays it is sent on the third attempt
    deadline = time.monotonic() + 20
    while pipeline.row(nid)["status"] != "sent" and time.monotonic() < deadline:
        pipeline.drain_sender(rounds=1)
    row = pipeline.row(nid)
    assert row["status"] == "sent"
    assert [a["outcome"] for a in row["attempts"]] == ["transient_error", "transient_error", "sent"]
    assert len(pipeline.stub.requests("sendgrid")) == 3


def test_retry_after_is_honoured(api: Api, pipeline: Pipeline) -> None:
    pipeline.stub.configure("twilio", fail_next=1, failure="429", retry_after=30)
    nid = create(api, "sms", SMS)
    pipeline.invoke("sender", pipeline.receive())
    row = pipeline.row(nid)
    assert row["status"] == "queued"
    # the backoff (at most 2 s here) gives way to the provider's Retry-After: 30 s after the attempt
    (attempt,) = row["attempts"]
    waits = (row["next_attempt_at"] - attempt["created_at"]).total_seconds()
    assert 29.95 <= waits <= 30.05, waits


def test_permanent_error_goes_straight_to_a_dead_letter(api: Api, pipeline: Pipeline) -> None:
    pipeline.stub.configure("fcm", fail_next=1, failure="permanent")
    nid = create(api, "push", PUSH)
    pipeline.drain_sender()
    row = pipeline.row(nid)
    assert row["status"] == "failed"
    assert row["attempt_count"] == 1
    (letter,) = row["dead_letters"]
    assert letter["reason"] == "permanent_error"
    assert letter["attempt_count"] == 1
    assert letter["last_error"]


def test_exhausted_budget_goes_to_a_dead_letter(api: Api, pipeline: Pipeline) -> None:
    pipeline.stub.configure("sendgrid", fail_rate=1.0, failure="5xx")
    nid = create(api, "email", EMAIL, max_attempts=2)
    deadline = time.monotonic() + 20
    while pipeline.row(nid)["status"] != "failed" and time.monotonic() < deadline:
        pipeline.drain_sender(rounds=1)
    row = pipeline.row(nid)
    assert row["status"] == "failed"
    assert row["attempt_count"] == 2
    assert [d["reason"] for d in row["dead_letters"]] == ["max_attempts"]
    # and the DLQ API shows it, counts it, and replays it with a fresh budget
    letters = api("GET", "/api/v1/dlq").json["data"]
    letter = next(d for d in letters if d["notification_id"] == nid)
    stats = api("GET", "/api/v1/dlq/stats").json
    assert stats["by_reason"]["max_attempts"] >= 1
    assert stats["by_channel"]["email"] >= 1
    pipeline.stub.configure("sendgrid")
    replay = api("POST", f"/api/v1/dlq/{letter['id']}/replay")
    assert replay.status == 202
    assert replay.json["status"] == "queued"
    assert api("POST", f"/api/v1/dlq/{letter['id']}/replay").status == 409
    pipeline.drain_sender()
    row = pipeline.row(nid)
    assert row["status"] == "sent"
    assert row["attempt_count"] == 1  # the fresh budget


def test_raising_record_is_redriven_to_the_dlq_processor(
    api: Api, pipeline: Pipeline, exploding_console: None
) -> None:
    # Given a record whose processing raises, on a queue with a 1 s visibility timeout (redrive after 2)
    pipeline.env.sqs.set_queue_attributes(QueueUrl=pipeline.queue, Attributes={"VisibilityTimeout": "1"})
    nid = create(api, "email", EMAIL, provider="console")
    # When the sender fails it twice (SQS redelivers it after the visibility timeout each time)
    for _ in range(2):
        messages = pipeline.receive(wait=2, rounds=3)
        assert len(messages) == 1
        assert pipeline.invoke("sender", messages)["batchItemFailures"] == [
            {"itemIdentifier": messages[0]["MessageId"]}
        ]
    # Then SQS's redrive moves it to the DLQ on the next receive, where the DLQ processor records it
    assert pipeline.receive(wait=2, rounds=2) == []
    dead = pipeline.receive(pipeline.dlq, wait=2, rounds=5)
    assert len(dead) == 1
    assert pipeline.invoke("dlq_processor", dead, queue="NotificationsDLQ") == {"batchItemFailures": []}
    row = pipeline.row(nid)
    assert row["status"] == "failed"
    assert [d["reason"] for d in row["dead_letters"]] == ["redrive"]
    # idempotently: the same DLQ message processed again adds nothing
    assert pipeline.invoke("dlq_processor", dead, queue="NotificationsDLQ") == {"batchItemFailures": []}
    assert len(pipeline.row(nid)["dead_letters"]) == 1


def test_sweeper_picks_up_each_stranded_kind_exactly_once(api: Api, pipeline: Pipeline) -> None:
    # Given one row of each kind the sweeper must move on
    kinds = {}
    for kind in ("pending", "retrying", "scheduled", "sending_expired", "retrying_later", "sending_live"):
        kinds[kind] = create(api, "email", EMAIL)
    pipeline.only(list(kinds.values()))
    for m in _receive_all(pipeline):  # the API's own messages: drop them (the rows below are rewritten)
        pipeline.env.sqs.delete_message(QueueUrl=pipeline.queue, ReceiptHandle=m["ReceiptHandle"])
    past, soon, later = (
        "now() - interval '5 seconds'",
        "now() + interval '5 minutes'",
        "now() + interval '2 hours'",
    )
    pipeline.sql(
        f"UPDATE notifications SET status = 'pending', next_attempt_at = {past} WHERE id = %s",
        kinds["pending"],
    )
    pipeline.sql(
        f"UPDATE notifications SET status = 'retrying', next_attempt_at = {past} WHERE id = %s",
        kinds["retrying"],
    )
    pipeline.sql(
        f"UPDATE notifications SET status = 'scheduled', next_attempt_at = {soon}, send_at = {soon} WHERE id = %s",
        kinds["scheduled"],
    )
    pipeline.sql(
        f"UPDATE notifications SET status = 'sending', claimed_until = {past} WHERE id = %s",
        kinds["sending_expired"],
    )
    pipeline.sql(
        f"UPDATE notifications SET status = 'retrying', next_attempt_at = {later} WHERE id = %s",
        kinds["retrying_later"],
    )
    pipeline.sql(
        f"UPDATE notifications SET status = 'sending', claimed_until = {soon} WHERE id = %s",
        kinds["sending_live"],
    )
    # When two sweepers race
    sweeper = load_handler("functions/retry_sweeper/", "app.handler")
    results: list[dict[str, Any]] = []
    event = {
        "version": "0",
        "id": "x",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "detail": {},
    }
    threads = [
        threading.Thread(target=lambda: results.append(sweeper(event, LambdaContext("sweeper", 256, 55))))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then each due row was enqueued exactly once, and the others were left alone
    assert sum(sum(r["enqueued"].values()) for r in results) == 4
    bodies = [m["Body"] for m in _receive_all(pipeline)]
    for kind in ("pending", "retrying", "sending_expired"):
        assert sum(kinds[kind] in b for b in bodies) == 1, kind
    for kind in ("pending", "retrying", "scheduled", "sending_expired"):
        assert pipeline.row(kinds[kind])["status"] == "queued", kind
    # the scheduled one was sent with the remaining delay: it is on the queue, not yet visible
    attributes = pipeline.env.sqs.get_queue_attributes(
        QueueUrl=pipeline.queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    assert not any(kinds["scheduled"] in b for b in bodies)
    assert not any(kinds["retrying_later"] in b or kinds["sending_live"] in b for b in bodies)
    assert pipeline.row(kinds["retrying_later"])["status"] == "retrying"
    assert pipeline.row(kinds["sending_live"])["status"] == "sending"


def _receive_all(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Every message visible on the queue now (each received once: the visibility timeout hides it)."""
    got: list[dict[str, Any]] = []
    for _ in range(5):
        batch = pipeline.receive(rounds=1)
        if not batch:
            break
        got += batch
    return got


def test_provider_rate_defers_and_recipient_cap_suppresses(
    api: Api, pipeline: Pipeline, settings_env: Callable[..., None]
) -> None:
    # Given at most 1 Twilio send per second, and at most 2 SMS per recipient per hour
    settings_env(
        PROVIDER_RATE_LIMITS="twilio=1",
        RECIPIENT_HOURLY_CAPS="sms=2",
        REDIS_KEY_PREFIX=f"cap-{uuid.uuid4().hex}:",
    )
    user = api("POST", "/api/v1/users", {"phone": "+14155550199"}).json["id"]
    ids = [create(api, "sms", {"body": f"m{i}"}, user_id=user) for i in range(3)]
    # When all three arrive in one batch
    pipeline.invoke("sender", pipeline.receive())
    rows = {nid: pipeline.row(nid) for nid in ids}
    # Then one is sent and the others are deferred back to the queue without counting an attempt
    assert sorted(r["status"] for r in rows.values()) == ["queued", "queued", "sent"]
    deferred = [r for r in rows.values() if r["status"] == "queued"]
    assert all(r["attempt_count"] == 0 and r["attempts"] == [] for r in deferred)
    # And once the rate allows, the second is sent and the third hits the recipient cap
    deadline = time.monotonic() + 15
    while any(pipeline.row(n)["status"] == "queued" for n in ids) and time.monotonic() < deadline:
        pipeline.drain_sender(rounds=1)
    statuses = sorted(pipeline.row(n)["status"] for n in ids)
    assert statuses == ["sent", "sent", "suppressed"]
    suppressed = next(pipeline.row(n) for n in ids if pipeline.row(n)["status"] == "suppressed")
    assert "recipient cap of 2 sms per hour" in suppressed["last_error"]
    assert len(pipeline.stub.requests("twilio")) == 2


def test_cleanup_removes_only_what_outlived_its_retention(api: Api, pipeline: Pipeline) -> None:
    old, new = create(api, "email", EMAIL, idempotency_key=f"old-{uuid.uuid4()}"), create(api, "email", EMAIL)
    for nid, age in ((old, "100 days"), (new, "1 minute")):
        pipeline.sql(
            "INSERT INTO notification_attempts (notification_id, tenant_id, attempt_number, provider, outcome,"
            f" duration_ms, created_at) SELECT id, tenant_id, 1, 'sendgrid', 'sent', 5, now() - interval '{age}'"
            " FROM notifications WHERE id = %s",
            nid,
        )
        pipeline.sql(
            "INSERT INTO notification_dlq (id, notification_id, tenant_id, channel, provider, reason, attempt_count,"
            f" created_at) SELECT gen_random_uuid(), id, tenant_id, channel, provider, 'permanent_error', 1,"
            f" now() - interval '{age}' FROM notifications WHERE id = %s",
            nid,
        )
    pipeline.sql("UPDATE notifications SET created_at = now() - interval '2 days' WHERE id = %s", old)
    cleanup = load_handler("functions/cleanup/", "app.handler")
    removed = cleanup(
        {"detail-type": "Scheduled Event", "source": "aws.events"}, LambdaContext("cleanup", 256, 300)
    )
    assert removed["dead_letters"] >= 1
    assert removed["attempts"] >= 1
    assert removed["idempotency_keys"] >= 1
    old_row, new_row = pipeline.row(old), pipeline.row(new)
    assert old_row["attempts"] == [] and old_row["dead_letters"] == [] and old_row["idempotency_key"] is None
    assert len(new_row["attempts"]) == 1 and len(new_row["dead_letters"]) == 1
