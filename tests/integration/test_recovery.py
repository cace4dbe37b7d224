"""Nothing lost, duplicates only where no one can prevent them: the recovery paths over real
PostgreSQL, Redis, SQS and the provider SDKs talking to the stub.

- a `queued` row whose message vanished is found and re-enqueued by the sweeper;
- outcomes are committed while the batch is still sending;
- a lost answer (read timeout) is recorded as ambiguous, and the policy decides what follows;
- the database unreachable: the API answers 503 with Retry-After instead of hanging;
- the DLQ processor dead-letters only what is really dead.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from notify_core import dispatch, sweeper
from notify_core.config import get_settings
from notify_local.lambda_env import LambdaContext, load_handler, sqs_event

from .conftest import Api
from .test_delivery import EMAIL, SMS, Pipeline, create

SWEEP_EVENT = {
    "version": "0",
    "id": "x",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "detail": {},
}


def sweep() -> dict[str, Any]:
    handler = load_handler("functions/retry_sweeper/", "app.handler")
    return handler(SWEEP_EVENT, LambdaContext("RetrySweeperFunction", 256, 55))


def drop_messages(pipeline: Pipeline) -> None:
    """The queue loses its messages (a purge, the retention period, an operator's mistake)."""
    for _ in range(5):
        messages = pipeline.receive(rounds=1)
        if not messages:
            return
        for m in messages:
            pipeline.env.sqs.delete_message(QueueUrl=pipeline.queue, ReceiptHandle=m["ReceiptHandle"])


# ---------------------------------------------------------------- lost messages


def test_the_stale_queued_threshold_is_derived_from_the_queue(pipeline: Pipeline) -> None:
    # The pipeline's queue: VisibilityTimeout 180 s, maxReceiveCount 2, and SQS's longest delay 900 s
    get_settings.cache_clear()
    from notify_core import clients

    clients.forget("stale-queued-seconds")
    assert sweeper.stale_queued_seconds(get_settings()) == 180 * 2 + 900


def test_a_queued_row_whose_message_was_lost_is_re_enqueued_and_sent_once(
    api: Api, pipeline: Pipeline, settings_env: Any
) -> None:
    # Given two queued notifications whose messages are gone, one queued long ago and one just now
    settings_env(STALE_QUEUED_SECONDS="600")
    stale, fresh = create(api, "email", EMAIL), create(api, "email", EMAIL)
    pipeline.only([stale, fresh])
    drop_messages(pipeline)
    pipeline.sql("UPDATE notifications SET queued_at = now() - interval '11 minutes' WHERE id = %s", stale)
    assert pipeline.row(stale)["status"] == "queued"
    # When the sweeper runs
    report = sweep()
    # Then only the stale one is enqueued again, and its clock starts again
    assert report["enqueued"] == {"queued": 1}
    row = pipeline.row(stale)
    assert row["status"] == "queued"
    assert row["queued_at"] > datetime.now(UTC) - timedelta(seconds=30)
    assert sweep()["enqueued"] == {}
    # And it is sent exactly once; the fresh one waits for its own threshold
    pipeline.drain_sender()
    assert pipeline.row(stale)["status"] == "sent"
    assert pipeline.row(fresh)["status"] == "queued"
    assert len(pipeline.stub.requests("sendgrid")) == 1


def test_a_retry_that_could_not_be_enqueued_waits_as_retrying_for_the_sweeper(
    api: Api, pipeline: Pipeline, settings_env: Any
) -> None:
    # Given a send that fails transiently while SQS refuses the retry's message
    pipeline.stub.configure("sendgrid", fail_next=1, failure="5xx")
    nid = create(api, "email", EMAIL)
    messages = pipeline.receive()
    settings_env(NOTIFICATIONS_QUEUE_URL=pipeline.queue + "-missing")
    pipeline.invoke("sender", messages)
    # Then the row stays `retrying` (never `queued` without a message) until the sweeper takes it
    row = pipeline.row(nid)
    assert row["status"] == "retrying" and row["attempt_count"] == 1
    settings_env(NOTIFICATIONS_QUEUE_URL=pipeline.queue)
    pipeline.only([nid])
    pipeline.sql("UPDATE notifications SET next_attempt_at = now() WHERE id = %s", nid)
    assert sweep()["enqueued"] == {"retrying": 1}
    pipeline.drain_sender()
    assert pipeline.row(nid)["status"] == "sent"


def test_a_sweep_stops_at_its_batch_limit_and_the_next_one_takes_the_rest(
    api: Api, pipeline: Pipeline, settings_env: Any
) -> None:
    # Given three retries due whose messages are gone, and a sweep of at most 2 batches of 1 row
    settings_env(SWEEP_BATCH_SIZE="1", SWEEP_MAX_BATCHES="2")
    ids = [create(api, "email", EMAIL) for _ in range(3)]
    pipeline.only(ids)
    drop_messages(pipeline)
    pipeline.sql(
        "UPDATE notifications SET status = 'retrying', next_attempt_at = now() - interval '1 minute'"
        " WHERE id = ANY(%s::uuid[])",
        ids,
    )
    # When the sweeper runs twice
    first, second = sweep(), sweep()
    # Then the first run stops after its two batches, and the second takes the one left
    assert (first["enqueued"], first["batches"]) == ({"retrying": 2}, 2)
    assert second["enqueued"] == {"retrying": 1}
    assert sweep()["enqueued"] == {}
    pipeline.drain_sender()
    assert [pipeline.row(i)["status"] for i in ids] == ["sent"] * 3


# ---------------------------------------------------------------- outcomes as they happen


def test_outcomes_are_committed_while_the_batch_is_still_sending(api: Api, pipeline: Pipeline) -> None:
    # Given a batch with a fast SMS and an email whose provider takes 3 s
    pipeline.stub.configure("sendgrid", delay_ms=3000)
    slow, fast = create(api, "email", EMAIL), create(api, "sms", SMS)
    messages = pipeline.receive()
    assert len(messages) == 2
    done = threading.Event()

    def invoke() -> None:
        pipeline.invoke("sender", messages)
        done.set()

    thread = threading.Thread(target=invoke)
    thread.start()
    # When the SMS is sent, its outcome is in the database before the batch ends
    deadline = time.monotonic() + 10
    while pipeline.row(fast)["status"] != "sent" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pipeline.row(fast)["status"] == "sent"
    assert pipeline.row(slow)["status"] == "sending"
    assert not done.is_set()
    thread.join(timeout=15)
    assert pipeline.row(slow)["status"] == "sent"


# ---------------------------------------------------------------- ambiguous sends


@pytest.mark.parametrize(
    ("policy", "status", "reason"), [("retry", "queued", None), ("fail", "failed", "ambiguous")]
)
def test_a_lost_answer_is_recorded_as_ambiguous(
    api: Api, pipeline: Pipeline, settings_env: Any, policy: str, status: str, reason: str | None
) -> None:
    # Given SendGrid answering after 2.5 s and a read timeout of 1 s
    settings_env(SENDGRID_TIMEOUT_SECONDS="1", AMBIGUOUS_SENDS=policy)
    pipeline.stub.configure("sendgrid", delay_ms=2500)
    nid = create(api, "email", EMAIL)
    pipeline.invoke("sender", pipeline.receive())
    row = pipeline.row(nid)
    # Then the request reached the provider, and the attempt says its outcome is unknown
    assert len(pipeline.stub.requests("sendgrid")) == 1
    assert [(a["outcome"], a["error_code"]) for a in row["attempts"]] == [("ambiguous", "timeout")]
    assert row["status"] == status
    assert [d["reason"] for d in row["dead_letters"]] == ([reason] if reason else [])


@pytest.mark.parametrize(
    ("then", "max_attempts", "last_outcome"),
    [("permanent", "5", "permanent_error"), ("5xx", "2", "transient_error")],
)
def test_a_dead_letter_after_a_lost_answer_does_not_claim_the_message_was_not_sent(
    api: Api, pipeline: Pipeline, settings_env: Any, then: str, max_attempts: str, last_outcome: str
) -> None:
    # Given a first attempt whose answer is lost (SendGrid took the mail, the read timed out) ...
    settings_env(SENDGRID_TIMEOUT_SECONDS="1", DEFAULT_MAX_ATTEMPTS=max_attempts)
    pipeline.stub.configure("sendgrid", delay_ms=2500)
    nid = create(api, "email", EMAIL)
    pipeline.invoke("sender", pipeline.receive())
    # ... and a retry that fails for good (a permanent error, or the last attempt of the budget)
    pipeline.stub.configure("sendgrid", fail_next=1, failure=then)
    deadline = time.monotonic() + 20
    while pipeline.row(nid)["status"] != "failed" and time.monotonic() < deadline:
        pipeline.drain_sender(rounds=1)
    row = pipeline.row(nid)
    # Then the provider has it once (the late answer to the first request is a 202) ...
    while any(r.status is None for r in pipeline.stub.requests("sendgrid")) and time.monotonic() < deadline:
        time.sleep(0.05)
    statuses = [r.status for r in pipeline.stub.requests("sendgrid")]
    assert statuses == [202, 400 if then == "permanent" else 503]
    # ... and the dead letter says the outcome is unknown
    assert row["status"] == "failed"
    assert [a["outcome"] for a in row["attempts"]] == ["ambiguous", last_outcome]
    assert [d["reason"] for d in row["dead_letters"]] == ["ambiguous"]


def test_a_refused_connection_is_not_ambiguous(api: Api, pipeline: Pipeline, settings_env: Any) -> None:
    settings_env(SENDGRID_BASE_URL="http://127.0.0.1:9", AMBIGUOUS_SENDS="fail")
    nid = create(api, "email", EMAIL)
    pipeline.invoke("sender", pipeline.receive())
    row = pipeline.row(nid)
    assert row["status"] == "queued"
    assert [(a["outcome"], a["error_code"]) for a in row["attempts"]] == [("transient_error", "connection")]


# ---------------------------------------------------------------- the database away


def test_the_api_answers_503_with_retry_after_when_the_database_is_unreachable(
    make_api: Any, tenant: Any, settings_env: Any
) -> None:
    settings_env(
        DATABASE_URL="postgresql://postgres@127.0.0.1:9/none",
        DB_CONNECT_TIMEOUT_SECONDS="1",
        DB_POOL_TIMEOUT_SECONDS="1",
    )
    reply = make_api(tenant.key)("GET", "/api/v1/notifications")
    assert reply.status == 503
    assert reply.error["code"] == "service_unavailable"
    assert reply.headers["Retry-After"] == "5"


def test_a_notification_stored_and_enqueued_is_accepted_when_only_the_queued_mark_fails(
    api: Api, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the database connection lost after the INSERT committed and SQS took the message,
    # while the advisory `queued` mark is being written
    def connection_lost(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "_mark", connection_lost)
        # (with an Idempotency-Key the row may be a replay: it is stored first, then enqueued)
        reply = api(
            "POST",
            "/api/v1/notifications",
            {"channel": "email", "payload": EMAIL},
            headers={"Idempotency-Key": f"mark-{uuid.uuid4()}"},
        )
    # Then the client is told it was accepted (a 503 would invite a retry that sends it twice) ...
    assert reply.status == 202, reply.raw
    nid = str(reply.json["id"])
    assert pipeline.row(nid)["status"] == "pending"
    # ... and its message, already on the queue, sends it once
    pipeline.drain_sender()
    assert pipeline.row(nid)["status"] == "sent"
    assert len(pipeline.stub.requests("sendgrid")) == 1


def test_a_message_sqs_refused_while_the_database_is_lost_leaves_the_row_for_the_sweeper(
    api: Api, pipeline: Pipeline, settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a notification sent ahead of its INSERT, whose message SQS refuses, and the database
    # connection lost while the row is being put back to `pending`
    settings_env(NOTIFICATIONS_QUEUE_URL=pipeline.queue + "-missing", STALE_QUEUED_SECONDS="60")

    def connection_lost(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patch:
        patch.setattr(dispatch, "transition", connection_lost)
        reply = api("POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL})
    # Then the client is told it was accepted: the row is stored, `queued` without a message ...
    assert reply.status == 202, reply.raw
    nid = str(reply.json["id"])
    assert pipeline.row(nid)["status"] == "queued"
    # ... and the sweeper's stale-queued pass sends it once its threshold has passed
    settings_env(NOTIFICATIONS_QUEUE_URL=pipeline.queue, STALE_QUEUED_SECONDS="60")
    pipeline.only([nid])
    pipeline.sql("UPDATE notifications SET queued_at = now() - interval '2 minutes' WHERE id = %s", nid)
    assert sweep()["enqueued"] == {"queued": 1}
    pipeline.drain_sender()
    assert pipeline.row(nid)["status"] == "sent"
    assert len(pipeline.stub.requests("sendgrid")) == 1


# ---------------------------------------------------------------- the DLQ processor


def redriven(pipeline: Pipeline, nid: str, sent_at: datetime) -> dict[str, Any]:
    tenant = pipeline.row(nid)["tenant_id"]
    message = {
        "MessageId": str(uuid.uuid4()),
        "ReceiptHandle": "rh",
        "Body": f'{{"id": "{nid}", "tenant_id": "{tenant}"}}',
        "Attributes": {"SentTimestamp": str(int(sent_at.timestamp() * 1000)), "ApproximateReceiveCount": "3"},
    }
    handler = load_handler("functions/dlq_processor/", "app.handler")
    event = sqs_event([message], pipeline.stack.queues["NotificationsDLQ"].arn)
    return handler(event, LambdaContext("DlqProcessorFunction", 256, 30))


def test_the_dlq_processor_dead_letters_only_what_is_really_dead(api: Api, pipeline: Pipeline) -> None:
    rows = {k: create(api, "email", EMAIL) for k in ("dead", "sent", "live", "requeued", "retrying")}
    drop_messages(pipeline)
    sent_at = datetime.now(UTC) - timedelta(minutes=10)
    pipeline.sql(
        "UPDATE notifications SET queued_at = now() - interval '10 minutes' WHERE id = ANY(%s::uuid[])",
        list(rows.values()),
    )
    pipeline.sql("UPDATE notifications SET status = 'sent', sent_at = now() WHERE id = %s", rows["sent"])
    pipeline.sql(
        "UPDATE notifications SET status = 'sending', claimed_until = now() + interval '1 minute' WHERE id = %s",
        rows["live"],
    )
    pipeline.sql("UPDATE notifications SET queued_at = now() WHERE id = %s", rows["requeued"])
    pipeline.sql(
        "UPDATE notifications SET status = 'retrying', next_attempt_at = now() WHERE id = %s",
        rows["retrying"],
    )
    for nid in rows.values():
        assert redriven(pipeline, nid, sent_at) == {"batchItemFailures": []}
    after = {k: pipeline.row(nid) for k, nid in rows.items()}
    assert {k: r["status"] for k, r in after.items()} == {
        "dead": "failed",
        "sent": "sent",
        "live": "sending",
        "requeued": "queued",
        "retrying": "retrying",
    }
    assert {k: [d["reason"] for d in r["dead_letters"]] for k, r in after.items()} == {
        "dead": ["redrive"],
        "sent": [],
        "live": [],
        "requeued": [],
        "retrying": [],
    }
    assert "3 receives" in after["dead"]["dead_letters"][0]["last_error"]


def test_a_message_that_overtakes_its_row_is_put_back_and_then_sent(pipeline: Pipeline, tenant: Any) -> None:
    # Given a message on the queue whose row is not committed yet (ingest sends while it inserts)
    nid = uuid.uuid4()
    pipeline.env.sqs.send_message(
        QueueUrl=pipeline.queue, MessageBody=f'{{"id": "{nid}", "tenant_id": "{tenant.id}"}}'
    )
    messages = pipeline.receive()
    assert len(messages) == 1
    # When the sender gets it first, it puts it back for a moment instead of dropping it
    assert pipeline.invoke("sender", messages) == {"batchItemFailures": []}
    delayed = pipeline.env.sqs.get_queue_attributes(
        QueueUrl=pipeline.queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    assert delayed == "1"
    # And once the row is there, the message comes back and the notification is sent
    pipeline.sql(
        "INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts)"
        " VALUES (%s, %s, 'email', 'sendgrid', %s::jsonb, 'pending', 3)",
        nid,
        tenant.id,
        '{"to": "ada@example.com", "from": "ops@example.com", "subject": "Hi", "body": "Hello"}',
    )
    again = pipeline.receive(wait=3, rounds=3)
    assert [json.loads(m["Body"])["id"] for m in again] == [str(nid)]
    pipeline.invoke("sender", again)
    assert pipeline.row(str(nid))["status"] == "sent"


def test_the_sweeper_takes_due_work_in_bounded_batches(
    api: Api, pipeline: Pipeline, settings_env: Any
) -> None:
    # Given five due retries and batches of two
    ids = [create(api, "email", EMAIL) for _ in range(5)]
    pipeline.only(ids)
    drop_messages(pipeline)
    pipeline.sql(
        "UPDATE notifications SET status = 'retrying', next_attempt_at = now() WHERE id = ANY(%s::uuid[])",
        ids,
    )
    settings_env(SWEEP_BATCH_SIZE="2")
    # When one sweep runs, it goes on until a batch comes back short
    report = sweep()
    assert (report["enqueued"], report["batches"], report["failed_to_enqueue"]) == ({"retrying": 5}, 3, 0)
    assert {pipeline.row(i)["status"] for i in ids} == {"queued"}


def test_what_sqs_refuses_stays_for_the_next_sweep(api: Api, pipeline: Pipeline, settings_env: Any) -> None:
    nid = create(api, "email", EMAIL)
    pipeline.only([nid])
    drop_messages(pipeline)
    pipeline.sql("UPDATE notifications SET status = 'retrying', next_attempt_at = now() WHERE id = %s", nid)
    settings_env(NOTIFICATIONS_QUEUE_URL=pipeline.queue + "-missing", STALE_QUEUED_SECONDS="600")
    report = sweep()
    assert (report["enqueued"], report["failed_to_enqueue"]) == ({}, 1)
    assert pipeline.row(nid)["status"] == "retrying"


def test_without_the_queue_s_attributes_the_stale_threshold_falls_back(
    pipeline: Pipeline, settings_env: Any
) -> None:
    from notify_core import clients

    settings_env(NOTIFICATIONS_QUEUE_URL=pipeline.queue + "-missing")
    clients.forget("stale-queued-seconds")
    assert sweeper.stale_queued_seconds(get_settings()) == sweeper.DEFAULT_STALE_SECONDS == 180 * 5 + 900
