from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from .conftest import Api, ServiceEnv, drain

EMAIL_PAYLOAD = {
    "to": "recipient@example.com",
    "from": "sender@example.com",
    "subject": "Test",
    "body": "Hello World",
}


def _row(env: ServiceEnv, notification_id: str) -> dict[str, Any]:
    with psycopg.connect(env.database_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute("SELECT * FROM notifications WHERE id = %s", (notification_id,)).fetchone()
    assert row is not None
    return row


def test_original_design_request_is_stored_and_enqueued(api: Api, test_env: ServiceEnv) -> None:
    # Given the original design's request: message_type alias, payload as a JSON string
    user = api("POST", "/api/v1/users", {"email": "test@example.com", "username": "testuser"}).json
    reply = api(
        "POST",
        "/api/v1/notifications",
        {
            "user_id": user["id"],
            "message_type": "email",
            "provider": "sendgrid",
            "payload": json.dumps(EMAIL_PAYLOAD),
        },
    )
    # Then it is accepted, stored queued, and its id is on the queue
    assert reply.status == 202, reply.raw
    body = reply.json
    assert body["status"] == "queued" and body["channel"] == "email" and body["provider"] == "sendgrid"
    assert body["payload"] == EMAIL_PAYLOAD
    row = _row(test_env, body["id"])
    assert row["status"] == "queued" and row["queued_at"] is not None and row["next_attempt_at"] is None
    messages = drain(test_env.sqs, test_env.queue_url, {body["id"]})
    assert [m["id"] for m in messages] == [body["id"]]
    assert messages[0]["tenant_id"] == row["tenant_id"].__str__()


def test_recipient_comes_from_the_user_when_missing(api: Api) -> None:
    user = api(
        "POST", "/api/v1/users", {"email": "u@example.com", "phone": "+447700900123", "push_tokens": ["t1"]}
    )
    uid = user.json["id"]
    sms = api("POST", "/api/v1/notifications", {"user_id": uid, "channel": "sms", "payload": {"body": "hi"}})
    assert (
        sms.status == 202
        and sms.json["payload"]["to"] == "+447700900123"
        and sms.json["provider"] == "twilio"
    )
    push = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "push", "payload": {"title": "t", "body": "b"}},
    )
    assert push.json["payload"]["token"] == "t1" and push.json["provider"] == "fcm"
    email = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "email", "payload": {"subject": "s", "body": "b"}},
    )
    assert email.json["payload"]["to"] == "u@example.com"


def test_bad_notifications_get_precise_details(api: Api) -> None:
    no_phone = api("POST", "/api/v1/users", {"email": "x@example.com"}).json["id"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"channel": "pigeon", "payload": {"body": "x"}}, 422, "channel"),
        ({"channel": "email", "provider": "carrier-pigeon", "payload": EMAIL_PAYLOAD}, 422, "provider"),
        (
            {"channel": "sms", "provider": "sendgrid", "payload": {"to": "+14155550100", "body": "x"}},
            422,
            "provider",
        ),
        ({"channel": "email", "payload": {**EMAIL_PAYLOAD, "to": "nope"}}, 422, "payload.to"),
        ({"channel": "sms", "payload": {"to": "0044123", "body": "x"}}, 422, "payload.to"),
        ({"channel": "sms", "payload": {"to": "+14155550100", "body": "x" * 1601}}, 422, "payload.body"),
        ({"channel": "push", "payload": {"token": "", "title": "t", "body": "b"}}, 422, "payload.token"),
        ({"channel": "email", "payload": "[1, 2]"}, 422, "payload"),
        ({"channel": "email", "payload": "{not json"}, 422, "payload"),
        ({"channel": "sms", "user_id": no_phone, "payload": {"body": "x"}}, 422, "payload.to"),
        ({"channel": "email", "payload": {"subject": "s", "body": "b"}}, 422, "payload.to"),
        ({"channel": "email", "user_id": str(uuid.uuid4()), "payload": EMAIL_PAYLOAD}, 422, "user_id"),
        ({"channel": "email", "user_id": "42", "payload": EMAIL_PAYLOAD}, 422, "user_id"),
        ({"channel": "email", "payload": EMAIL_PAYLOAD, "max_attempts": "many"}, 422, "max_attempts"),
        ({"channel": "email", "payload": EMAIL_PAYLOAD, "send_at": "2026-12-01T09:00:00"}, 422, "send_at"),
        ({"channel": "email", "payload": EMAIL_PAYLOAD, "surprise": True}, 422, "surprise"),
        ({"payload": EMAIL_PAYLOAD}, 422, "channel"),
    ]
    for body, status, field in cases:
        reply = api("POST", "/api/v1/notifications", body)
        assert reply.status == status, (body, reply.raw)
        assert reply.error["code"] == "validation_error"
        assert field in [d["field"] for d in reply.error["details"]], (body, reply.raw)


def test_malformed_oversize_and_wrong_media_type(api: Api, settings_env) -> None:
    bad = api("POST", "/api/v1/notifications", raw='{"channel": "email",')
    assert bad.status == 400 and bad.error["code"] == "validation_error"
    not_object = api("POST", "/api/v1/notifications", raw="[1,2,3]")
    assert not_object.status == 422
    form = api(
        "POST",
        "/api/v1/notifications",
        raw="a=b",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 415 and form.error["code"] == "unsupported_media_type"
    settings_env(MAX_BODY_BYTES="2048")
    huge = api(
        "POST",
        "/api/v1/notifications",
        {"channel": "email", "payload": {**EMAIL_PAYLOAD, "body": "x" * 5000}},
    )
    assert huge.status == 413 and huge.error["code"] == "payload_too_large"


def test_batch_all_valid_is_one_insert_and_batched_sends(api: Api, test_env: ServiceEnv) -> None:
    items = [{"channel": "email", "payload": {**EMAIL_PAYLOAD, "subject": f"n{i}"}} for i in range(25)]
    reply = api("POST", "/api/v1/notifications/batch", {"notifications": items})
    assert reply.status == 202, reply.raw
    results = reply.json["results"]
    assert [r["index"] for r in results] == list(range(25))
    assert all(r["status"] == "queued" for r in results)
    ids = {r["id"] for r in results}
    assert len(ids) == 25
    messages = drain(test_env.sqs, test_env.queue_url, ids)
    assert sorted(m["id"] for m in messages) == sorted(ids)


def test_batch_mixed_is_207_with_per_item_results(api: Api) -> None:
    items: list[Any] = [
        {"channel": "email", "payload": EMAIL_PAYLOAD},
        {"channel": "sms", "payload": {"to": "bad", "body": "x"}},
        "not an object",
        {"channel": "push", "payload": {"topic": "news", "title": "t", "body": "b"}},
    ]
    reply = api("POST", "/api/v1/notifications/batch", {"notifications": items})
    assert reply.status == 207, reply.raw
    results = reply.json["results"]
    assert "id" in results[0] and "id" in results[3]
    assert results[1]["error"]["details"][0]["field"] == "payload.to"
    assert results[2]["error"]["code"] == "validation_error"
    assert reply.json["accepted"] == 2 and reply.json["rejected"] == 2


def test_batch_limits(api: Api) -> None:
    over = api("POST", "/api/v1/notifications/batch", {"notifications": [{"channel": "email"}] * 101})
    assert over.status == 422 and over.error["details"][0]["field"] == "notifications"
    empty = api("POST", "/api/v1/notifications/batch", {"notifications": []})
    assert empty.status == 422
    all_bad = api(
        "POST", "/api/v1/notifications/batch", {"notifications": [{"channel": "x"}, {"channel": "y"}]}
    )
    assert all_bad.status == 422
    assert [r["index"] for r in all_bad.json["results"]] == [0, 1]


def test_idempotency_key_field_and_header(api: Api, test_env: ServiceEnv) -> None:
    body = {"channel": "email", "payload": EMAIL_PAYLOAD, "idempotency_key": "order-1234-shipped"}
    first = api("POST", "/api/v1/notifications", body)
    again = api("POST", "/api/v1/notifications", body)
    assert first.status == 202 and again.status == 200
    assert again.json["id"] == first.json["id"]
    changed = api("POST", "/api/v1/notifications", {**body, "payload": {**EMAIL_PAYLOAD, "subject": "Other"}})
    assert changed.status == 409 and changed.error["code"] == "idempotency_mismatch"
    # the string form of the same payload is the same request
    as_string = api("POST", "/api/v1/notifications", {**body, "payload": json.dumps(EMAIL_PAYLOAD)})
    assert as_string.status == 200 and as_string.json["id"] == first.json["id"]

    plain = {"channel": "email", "payload": EMAIL_PAYLOAD}
    h1 = api("POST", "/api/v1/notifications", plain, headers={"Idempotency-Key": "hdr-1"})
    h2 = api("POST", "/api/v1/notifications", plain, headers={"Idempotency-Key": "hdr-1"})
    assert (h1.status, h2.status) == (202, 200) and h1.json["id"] == h2.json["id"]
    # only one message was enqueued for the key
    assert len(drain(test_env.sqs, test_env.queue_url, {h1.json["id"]})) == 1


def test_idempotency_key_is_per_tenant_and_expires(
    api: Api, make_tenant, make_api, test_env: ServiceEnv
) -> None:
    body = {"channel": "email", "payload": EMAIL_PAYLOAD, "idempotency_key": "shared-key"}
    mine = api("POST", "/api/v1/notifications", body).json["id"]
    theirs = make_api(make_tenant("other").key)("POST", "/api/v1/notifications", body)
    assert theirs.status == 202 and theirs.json["id"] != mine
    # after the 24 h window the key starts a new notification
    with psycopg.connect(test_env.database_url) as conn:
        conn.execute(
            "UPDATE notifications SET created_at = now() - interval '25 hours' WHERE id = %s", (mine,)
        )
    fresh = api("POST", "/api/v1/notifications", body)
    assert fresh.status == 202 and fresh.json["id"] != mine


def test_batch_with_idempotency_header_replays_whole_batch(api: Api) -> None:
    items = [{"channel": "email", "payload": {**EMAIL_PAYLOAD, "subject": str(i)}} for i in range(3)]
    first = api(
        "POST", "/api/v1/notifications/batch", {"notifications": items}, headers={"Idempotency-Key": "b1"}
    )
    second = api(
        "POST", "/api/v1/notifications/batch", {"notifications": items}, headers={"Idempotency-Key": "b1"}
    )
    assert [r["id"] for r in first.json["results"]] == [r["id"] for r in second.json["results"]]
    assert all(r.get("idempotent_replay") for r in second.json["results"])


def test_sqs_failure_keeps_the_row_pending_for_the_sweeper(
    api: Api, settings_env, test_env: ServiceEnv
) -> None:
    # Given a queue that does not exist (SQS refuses every send)
    settings_env(NOTIFICATIONS_QUEUE_URL=test_env.queue_url + "-missing")
    reply = api("POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL_PAYLOAD})
    # Then the client still gets 202 and the row waits, pending, due for the sweeper's next run
    # (the API call gave up on it, so there is no grace to wait for)
    assert reply.status == 202, reply.raw
    assert reply.json["status"] == "pending"
    row = _row(test_env, reply.json["id"])
    assert row["status"] == "pending" and row["queued_at"] is None
    assert row["next_attempt_at"] <= datetime.now(UTC)


def test_future_send_at_is_scheduled_not_enqueued(api: Api, test_env: ServiceEnv) -> None:
    when = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    reply = api(
        "POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL_PAYLOAD, "send_at": when}
    )
    assert reply.status == 202 and reply.json["status"] == "scheduled"
    row = _row(test_env, reply.json["id"])
    assert row["next_attempt_at"] == row["send_at"]
    assert drain(test_env.sqs, test_env.queue_url, {reply.json["id"]}, rounds=2) == []


def test_get_list_paginate_filter(api: Api, make_tenant, make_api) -> None:
    uid = api("POST", "/api/v1/users", {"phone": "+14155550111"}).json["id"]
    created = []
    for i in range(5):
        channel = "sms" if i % 2 else "email"
        payload = {"body": f"m{i}"} if channel == "sms" else {**EMAIL_PAYLOAD, "subject": f"m{i}"}
        created.append(
            api(
                "POST", "/api/v1/notifications", {"user_id": uid, "channel": channel, "payload": payload}
            ).json
        )
    one = api("GET", f"/api/v1/notifications/{created[0]['id']}")
    assert one.status == 200 and one.json["attempt_count"] == 0 and one.json["last_error"] is None

    seen: list[str] = []
    cursor = None
    for _ in range(5):
        query = {"limit": "2", "user_id": uid} | ({"cursor": cursor} if cursor else {})
        page = api("GET", "/api/v1/notifications", query=query).json
        seen += [n["id"] for n in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [n["id"] for n in reversed(created)]  # newest first, no gaps, no repeats

    sms = api("GET", "/api/v1/notifications", query={"channel": "sms", "user_id": uid}).json["data"]
    assert {n["id"] for n in sms} == {created[1]["id"], created[3]["id"]}
    queued = api("GET", "/api/v1/notifications", query={"status": "queued", "user_id": uid}).json["data"]
    assert len(queued) == 5
    # another tenant sees none of them
    other = make_api(make_tenant("other").key)
    assert other("GET", "/api/v1/notifications").json["data"] == []
    assert other("GET", f"/api/v1/notifications/{created[0]['id']}").status == 404


def test_list_rejects_bad_parameters(api: Api) -> None:
    for query, field in (
        ({"cursor": "garbage"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"status": "lost"}, "status"),
        ({"user_id": "nope"}, "user_id"),
    ):
        reply = api("GET", "/api/v1/notifications", query=query)
        assert reply.status == 422, (query, reply.raw)
        assert reply.error["details"][0]["field"] == field


def test_cancel_and_attempts(api: Api, test_env: ServiceEnv, make_tenant, make_api) -> None:
    nid = api("POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL_PAYLOAD}).json["id"]
    other = make_api(make_tenant("other").key)
    assert other("POST", f"/api/v1/notifications/{nid}/cancel").status == 404
    assert other("GET", f"/api/v1/notifications/{nid}/attempts").status == 404

    cancelled = api("POST", f"/api/v1/notifications/{nid}/cancel")
    assert cancelled.status == 200 and cancelled.json["status"] == "cancelled"
    assert cancelled.json["cancelled_at"] is not None
    again = api("POST", f"/api/v1/notifications/{nid}/cancel")
    assert again.status == 409 and again.error["code"] == "conflict"
    assert api("GET", f"/api/v1/notifications/{nid}/attempts").json == {"data": []}

    # a notification already being sent can no longer be cancelled
    sending = api("POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL_PAYLOAD}).json["id"]
    with psycopg.connect(test_env.database_url) as conn:
        conn.execute("UPDATE notifications SET status = 'sending' WHERE id = %s", (sending,))
        conn.execute(
            "INSERT INTO notification_attempts (notification_id, tenant_id, attempt_number, provider, outcome,"
            " error, duration_ms) SELECT id, tenant_id, 1, 'sendgrid', 'transient_error', 'timeout', 120"
            " FROM notifications WHERE id = %s",
            (sending,),
        )
    assert api("POST", f"/api/v1/notifications/{sending}/cancel").status == 409
    attempts = api("GET", f"/api/v1/notifications/{sending}/attempts").json["data"]
    assert attempts[0]["outcome"] == "transient_error" and attempts[0]["duration_ms"] == 120
    assert api("POST", f"/api/v1/notifications/{uuid.uuid4()}/cancel").status == 404
