"""Provider callbacks, delivery events, suppressions fed by them, and outgoing webhooks, against the
real services: the API handler with real API Gateway events, the sender and the webhook dispatcher
invoked as Lambda's event source would, the real provider SDKs against the stub, callbacks signed
by the stub's own signers and verified with the SDK helpers, and a local receiver that verifies
each webhook with the `standardwebhooks` library."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core.integrations import outbox
from notify_local import provider_callbacks
from notify_local.lambda_env import LambdaContext, load_handler, rest_event
from notify_local.provider_stub import STUB_TWILIO_TOKEN
from notify_local.webhook_receiver import WebhookReceiver

from .conftest import EMAIL, SMS, Api, Pipeline, Tenant, create

PUBLIC = "http://127.0.0.1:3999"


@dataclass
class Loop:
    pipeline: Pipeline
    api: Api
    tenant: Tenant
    receiver: WebhookReceiver

    @property
    def webhooks_queue(self) -> str:
        return self.pipeline.stack.queues["WebhooksQueue"].url

    def send(self, channel: str = "email", payload: dict[str, Any] | None = None, **extra: Any) -> str:
        nid = create(self.api, channel, payload or (EMAIL if channel == "email" else SMS), **extra)
        self.pipeline.drain_sender()
        return nid

    def dispatch(self, rounds: int = 5) -> int:
        """Run the webhook dispatcher over what is on the webhooks queue (as its event source would)."""
        handled = 0
        for _ in range(rounds):
            messages = self.pipeline.receive(self.webhooks_queue, rounds=1)
            if not messages:
                break
            self.pipeline.invoke("webhook_dispatcher", messages, queue="WebhooksQueue")
            handled += len(messages)
        return handled

    def endpoint(self, events: list[str] | None = None, url: str | None = None) -> dict[str, Any]:
        reply = self.api(
            "POST",
            "/api/v1/webhooks",
            {"url": url or self.receiver.url, "events": events or ["notification.delivered"]},
        )
        assert reply.status == 201, reply.raw
        self.receiver.secrets.append(reply.json["secret"])
        return dict(reply.json)

    def sendgrid(self, events: list[Any], *, timestamp: int | None = None, **kw: Any) -> Any:
        body, headers = provider_callbacks.sendgrid_request(events, timestamp)
        return self.api("POST", "/callbacks/sendgrid", raw=body.decode(), headers=headers, key=None, **kw)

    def row(self, nid: str) -> dict[str, Any]:
        return self.pipeline.row(nid)

    def query(self, statement: str, *params: Any) -> list[dict[str, Any]]:
        with psycopg.connect(self.pipeline.env.database_url, row_factory=dict_row) as conn:
            return conn.execute(statement, params).fetchall()


@pytest.fixture
def loop(pipeline: Pipeline, api: Api, tenant: Tenant, settings_env: Callable[..., None]) -> Iterator[Loop]:
    settings_env(
        WEBHOOK_QUEUE_URL=pipeline.stack.queues["WebhooksQueue"].url,
        WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
        WEBHOOK_RETRY_SCHEDULE="0,0,0",
        WEBHOOK_READ_TIMEOUT_SECONDS="2",
        PUBLIC_BASE_URL=PUBLIC,
    )
    with WebhookReceiver() as receiver:
        yield Loop(pipeline, api, tenant, receiver)


def delivered_event(nid: str, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    return {
        "email": "ada@example.com",
        "timestamp": int(time.time()),
        "event": "delivered",
        "sg_event_id": uuid.uuid4().hex,
        "notification_id": nid,
        "tenant_id": str(tenant.id),
        **extra,
    }


# ---------------------------------------------------------------- SendGrid


def test_a_signed_delivered_event_delivers_the_notification_once(loop: Loop) -> None:
    # Given an email the provider took
    nid = loop.send()
    assert loop.row(nid)["status"] == "sent"
    # When SendGrid reports it delivered (and then the same batch again, as it does on a retry)
    events = [delivered_event(nid, loop.tenant), {**delivered_event(nid, loop.tenant), "event": "open"}]
    first = loop.sendgrid(events)
    again = loop.sendgrid(events)
    # Then the notification is delivered, each event stored once, the replay a no-op
    assert first.status == 200 and first.json == {"received": 2, "stored": 2, "duplicates": 0, "ignored": 0}
    assert again.json == {"received": 2, "stored": 0, "duplicates": 2, "ignored": 0}
    assert loop.row(nid)["status"] == "delivered"
    listed = loop.api("GET", f"/api/v1/notifications/{nid}/events").json["data"]
    assert sorted(e["type"] for e in listed) == ["delivered", "opened"]
    assert {e["provider"] for e in listed} == {"sendgrid"}


def test_the_stub_reports_a_send_signed_and_the_api_accepts_it(loop: Loop) -> None:
    # Given the stub reporting to a URL we read back (its events are what SendGrid would post)
    loop.pipeline.stub.configure_callbacks(sendgrid_url=f"{loop.receiver.url}-sendgrid", delay_ms=0)
    nid = loop.send()
    deadline = time.monotonic() + 10
    while not loop.pipeline.stub.callbacks("sendgrid") and time.monotonic() < deadline:
        time.sleep(0.05)
    (sent,) = loop.pipeline.stub.callbacks("sendgrid")
    events = json.loads(sent.body)
    assert [e["event"] for e in events] == ["processed", "delivered"]
    assert {e["notification_id"] for e in events} == {nid}  # custom_args copied onto every event
    # When the same events reach the API, signed by the stub's key
    reply = loop.sendgrid(events)
    assert reply.json["stored"] == 1 and reply.json["ignored"] == 1  # `processed` is not stored
    assert loop.row(nid)["status"] == "delivered"


def test_a_base64_encoded_body_is_verified_over_its_bytes(loop: Loop) -> None:
    nid = loop.send()
    body, headers = provider_callbacks.sendgrid_request([delivered_event(nid, loop.tenant)])
    event = rest_event("POST", "/callbacks/sendgrid", headers=headers, body=body.decode())
    event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    reply = load_handler("functions/api/", "app.handler")(event, LambdaContext("ApiFunction", 512, 25))
    assert reply["statusCode"] == 200, reply["body"]
    assert loop.row(nid)["status"] == "delivered"


@pytest.mark.parametrize(
    "tamper",
    [
        "wrong_signature",
        "missing_signature",
        "missing_timestamp",
        "stale_timestamp",
        "future_timestamp",
        "body_changed",
        "signature_not_base64",
    ],
)
def test_an_unverified_sendgrid_callback_is_401_and_stores_nothing(loop: Loop, tamper: str) -> None:
    nid = loop.send()
    events = [delivered_event(nid, loop.tenant)]
    stamp = int(time.time())
    if tamper == "stale_timestamp":
        stamp -= 301
    if tamper == "future_timestamp":  # ahead by more than the 300 s allowed however late the check runs
        stamp += 360
    body, headers = provider_callbacks.sendgrid_request(events, stamp)
    sig, ts = "X-Twilio-Email-Event-Webhook-Signature", "X-Twilio-Email-Event-Webhook-Timestamp"
    if tamper == "wrong_signature":
        _, other = provider_callbacks.sendgrid_request([delivered_event(nid, loop.tenant)], stamp)
        headers[sig] = other[sig]
    if tamper == "missing_signature":
        del headers[sig]
    if tamper == "missing_timestamp":
        del headers[ts]
    if tamper == "body_changed":
        body = body.replace(b"delivered", b"bounce")
    if tamper == "signature_not_base64":
        headers[sig] = "not base64!"
    reply = loop.api("POST", "/callbacks/sendgrid", raw=body.decode(), headers=headers, key=None)
    assert reply.status == 401 and reply.error["code"] == "unauthorized"
    assert loop.query("SELECT * FROM delivery_events WHERE notification_id = %s", nid) == []
    assert loop.row(nid)["status"] == "sent"


def test_a_signed_body_that_is_not_an_array_is_400(loop: Loop) -> None:
    body = json.dumps({"event": "delivered"})
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": provider_callbacks.sign_sendgrid(body, stamp),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }
    reply = loop.api("POST", "/callbacks/sendgrid", raw=body, headers=headers, key=None)
    assert reply.status == 400 and reply.error["details"][0]["field"] == "body"


def test_events_for_unknown_or_other_tenants_notifications_are_acknowledged_and_ignored(
    loop: Loop, make_tenant: Callable[..., Tenant]
) -> None:
    nid = loop.send()
    other = make_tenant("other")
    events: list[Any] = [
        delivered_event(nid, other),  # our notification, another tenant's id
        delivered_event(str(uuid.uuid4()), loop.tenant),  # no such notification
        {**delivered_event(nid, loop.tenant), "notification_id": "not-a-uuid"},
        {**delivered_event(nid, loop.tenant), "event": "group_unsubscribe"},
        {**delivered_event(nid, loop.tenant), "sg_event_id": None},
        "not an object",
    ]
    reply = loop.sendgrid(events)
    assert reply.status == 200 and reply.json == {"received": 6, "stored": 0, "duplicates": 0, "ignored": 6}
    assert loop.row(nid)["status"] == "sent"
    assert loop.query("SELECT * FROM delivery_events WHERE tenant_id = %s", loop.tenant.id) == []


def test_json_is_required_of_sendgrid_and_a_form_of_twilio(loop: Loop) -> None:
    reply = loop.api(
        "POST", "/callbacks/sendgrid", raw="a=b", headers={"Content-Type": "text/plain"}, key=None
    )
    assert reply.status == 415
    reply = loop.api("POST", "/callbacks/twilio", raw="{}", query={"notification_id": "x"}, key=None)
    assert reply.status == 415  # the Api helper sends application/json


def test_without_a_verification_key_sendgrid_callbacks_are_503(
    loop: Loop, settings_env: Callable[..., None]
) -> None:
    settings_env(SENDGRID_WEBHOOK_PUBLIC_KEY="")
    from notify_core import clients

    clients.forget("callback-provider-settings")
    nid = loop.send()
    reply = loop.sendgrid([delivered_event(nid, loop.tenant)])
    assert reply.status == 503 and reply.headers.get("Retry-After") == "60"


def test_a_hard_bounce_fails_the_notification_suppresses_the_address_and_blocks_the_next_send(
    loop: Loop,
) -> None:
    # Given an email sent to ada@example.com
    nid = loop.send()
    # When SendGrid reports a hard bounce
    loop.sendgrid(
        [
            {
                **delivered_event(nid, loop.tenant),
                "event": "bounce",
                "type": "bounce",
                "reason": "550 no such user",
            }
        ]
    )
    # Then the notification failed, the address is suppressed for hard_bounce
    row = loop.row(nid)
    assert row["status"] == "failed" and "bounced: 550 no such user" in row["last_error"]
    (suppression,) = loop.query("SELECT * FROM suppressions WHERE tenant_id = %s", loop.tenant.id)
    assert (suppression["address"], suppression["reason"]) == ("ada@example.com", "hard_bounce")
    assert str(suppression["notification_id"]) == nid
    # And the next send to that address (in another case) ends suppressed without reaching SendGrid
    before = len(loop.pipeline.stub.requests("sendgrid"))
    again = loop.send(payload={**EMAIL, "to": "Ada@Example.com"})
    row = loop.row(again)
    assert row["status"] == "suppressed" and row["last_error"] == "hard_bounce: the address is suppressed"
    assert len(loop.pipeline.stub.requests("sendgrid")) == before


@pytest.mark.parametrize(
    ("event", "status", "reason"),
    [
        ({"event": "bounce", "type": "blocked"}, "failed", None),
        ({"event": "dropped", "reason": "Bounced Address"}, "failed", "hard_bounce"),
        ({"event": "spamreport"}, "sent", "complaint"),
        ({"event": "deferred"}, "sent", None),
        ({"event": "click", "url": "https://example.com/"}, "sent", None),
    ],
)
def test_what_each_sendgrid_event_does(
    loop: Loop, event: dict[str, str], status: str, reason: str | None
) -> None:
    nid = loop.send()
    loop.sendgrid([{**delivered_event(nid, loop.tenant), **event}])
    assert loop.row(nid)["status"] == status
    reasons = [
        r["reason"]
        for r in loop.query("SELECT reason FROM suppressions WHERE tenant_id = %s", loop.tenant.id)
    ]
    assert reasons == ([reason] if reason else [])


def test_a_callback_that_overtakes_the_send_is_applied_when_the_send_is_recorded(loop: Loop) -> None:
    # Given a notification still on its way to the sender (queued)
    nid = create(loop.api, "email", EMAIL)
    endpoint = loop.endpoint(["notification.sent", "notification.delivered"])
    # When its delivered event arrives first
    assert loop.sendgrid([delivered_event(nid, loop.tenant)]).json["stored"] == 1
    assert loop.row(nid)["status"] != "delivered"
    (event,) = loop.query("SELECT applied, effect FROM delivery_events WHERE notification_id = %s", nid)
    assert event == {"applied": False, "effect": "delivered"}
    # Then recording the send applies it: sent, then delivered, in one transaction
    loop.pipeline.drain_sender()
    assert loop.row(nid)["status"] == "delivered"
    loop.dispatch()
    types = sorted(r.json["type"] for r in loop.receiver.wait_for(2))
    assert types == ["notification.delivered", "notification.sent"]
    assert endpoint["id"]


# ---------------------------------------------------------------- Twilio


def twilio_callback(loop: Loop, nid: str, params: dict[str, str], *, token: str = STUB_TWILIO_TOKEN) -> Any:
    query = {"notification_id": nid, "tenant_id": str(loop.tenant.id)}
    url = f"{PUBLIC}/callbacks/twilio?notification_id={nid}&tenant_id={loop.tenant.id}"
    body, headers = provider_callbacks.twilio_request(url, params, token)
    return loop.api("POST", "/callbacks/twilio", raw=body.decode(), headers=headers, query=query, key=None)


def test_every_sms_asks_twilio_for_status_callbacks_on_the_public_url(loop: Loop) -> None:
    nid = loop.send("sms")
    (request,) = loop.pipeline.stub.requests("twilio")
    assert request.body["StatusCallback"] == (
        f"{PUBLIC}/callbacks/twilio?notification_id={nid}&tenant_id={loop.tenant.id}"
    )


@pytest.mark.parametrize(
    ("outcome", "status", "reason"),
    [("delivered", "delivered", None), ("stop", "failed", "sms_stop"), ("undelivered", "failed", None)],
)
def test_twilio_status_callbacks_signed_with_the_auth_token(
    loop: Loop, outcome: str, status: str, reason: str | None
) -> None:
    nid = loop.send("sms")
    (request,) = loop.pipeline.stub.requests("twilio")
    for params in provider_callbacks.twilio_statuses(request.body, request.response, outcome):
        reply = twilio_callback(loop, nid, params)
        assert reply.status == 200, reply.raw
    assert twilio_callback(loop, nid, params).json["duplicates"] == 1  # the last one again
    assert loop.row(nid)["status"] == status
    suppressions = loop.query("SELECT address, reason FROM suppressions WHERE tenant_id = %s", loop.tenant.id)
    assert suppressions == ([{"address": "+14155550100", "reason": reason}] if reason else [])
    events = loop.api("GET", f"/api/v1/notifications/{nid}/events").json["data"]
    assert [e["type"] for e in events] == ["delivered" if outcome == "delivered" else "undelivered"]


def test_an_unverified_twilio_callback_is_401(loop: Loop, make_tenant: Callable[..., Tenant]) -> None:
    nid = loop.send("sms")
    (request,) = loop.pipeline.stub.requests("twilio")
    params = provider_callbacks.twilio_statuses(request.body, request.response, "delivered")[1]
    assert twilio_callback(loop, nid, params, token="another-token").status == 401
    # the ids in the URL are covered by the signature: pointing it at another tenant fails
    url = f"{PUBLIC}/callbacks/twilio?notification_id={nid}&tenant_id={loop.tenant.id}"
    body, headers = provider_callbacks.twilio_request(url, params, STUB_TWILIO_TOKEN)
    other = make_tenant("other")
    reply = loop.api(
        "POST",
        "/callbacks/twilio",
        raw=body.decode(),
        headers=headers,
        query={"notification_id": nid, "tenant_id": str(other.id)},
        key=None,
    )
    assert reply.status == 401
    missing = loop.api("POST", "/callbacks/twilio", raw=body.decode(), headers=headers, key=None)
    assert missing.status == 401
    assert loop.row(nid)["status"] == "sent"
    assert loop.query("SELECT * FROM delivery_events WHERE notification_id = %s", nid) == []


# ---------------------------------------------------------------- FCM


def test_an_unregistered_push_token_leaves_the_user_and_is_suppressed(loop: Loop) -> None:
    user = loop.api("POST", "/api/v1/users", {"push_tokens": ["dead-token", "live-token"]}).json
    loop.pipeline.stub.configure("fcm", fail_next=1, failure="permanent")  # 404 UNREGISTERED
    nid = loop.send("push", {"title": "t", "body": "b", "token": "dead-token"}, user_id=user["id"])
    assert loop.row(nid)["status"] == "failed"
    assert loop.api("GET", f"/api/v1/users/{user['id']}").json["push_tokens"] == ["live-token"]
    suppressions = loop.query("SELECT address, reason FROM suppressions WHERE tenant_id = %s", loop.tenant.id)
    assert suppressions == [{"address": "dead-token", "reason": "invalid_token"}]


# ---------------------------------------------------------------- outgoing webhooks


def test_webhook_crud_shows_the_secret_once_and_audits_each_change(loop: Loop) -> None:
    created = loop.endpoint(["notification.sent", "notification.failed"])
    assert created["secret"].startswith("whsec_")
    wid = created["id"]
    read = loop.api("GET", f"/api/v1/webhooks/{wid}").json
    assert "secret" not in read and read["events"] == ["notification.sent", "notification.failed"]
    assert [w["id"] for w in loop.api("GET", "/api/v1/webhooks").json["data"]] == [wid]
    patched = loop.api("PATCH", f"/api/v1/webhooks/{wid}", {"active": False, "description": "crm"}).json
    assert patched["active"] is False and patched["description"] == "crm"
    rotated = loop.api("POST", f"/api/v1/webhooks/{wid}/rotate-secret")
    assert rotated.status == 201 and rotated.json["secret"] != created["secret"]
    assert loop.api("DELETE", f"/api/v1/webhooks/{wid}").status == 204
    assert loop.api("GET", f"/api/v1/webhooks/{wid}").status == 404
    audit = loop.query(
        "SELECT action, changes FROM audit_events WHERE tenant_id = %s ORDER BY created_at", loop.tenant.id
    )
    assert [a["action"] for a in audit] == [
        "webhook.create",
        "webhook.update",
        "webhook.rotate_secret",
        "webhook.delete",
    ]
    assert audit[1]["changes"] == {"active": False, "description": "crm"}
    assert created["secret"] not in json.dumps([a["changes"] for a in audit])
    assert rotated.json["secret"] not in json.dumps([a["changes"] for a in audit])


def test_a_replayed_create_with_the_same_key_returns_the_first_endpoint(loop: Loop) -> None:
    body = {"url": loop.receiver.url, "events": ["notification.sent"]}
    first = loop.api("POST", "/api/v1/webhooks", body, headers={"Idempotency-Key": "wh-1"})
    again = loop.api("POST", "/api/v1/webhooks", body, headers={"Idempotency-Key": "wh-1"})
    other = loop.api(
        "POST", "/api/v1/webhooks", {**body, "events": ["dlq.created"]}, headers={"Idempotency-Key": "wh-1"}
    )
    assert (first.status, again.status, other.status) == (201, 200, 409)
    assert again.json["id"] == first.json["id"]
    assert len(loop.api("GET", "/api/v1/webhooks").json["data"]) == 1


@pytest.mark.parametrize(
    ("url", "allow_private", "why"),
    [
        ("http://example.com/hook", "false", "https"),
        ("https://127.0.0.1/hook", "false", "loopback"),
        ("https://localhost/hook", "false", "loopback"),
        ("https://10.1.2.3/hook", "false", "private"),
        ("https://100.64.0.1/hook", "false", "carrier-grade NAT"),
        ("https://[::ffff:127.0.0.1]/hook", "false", "IPv4-mapped"),
        ("https://[fd00::1]/hook", "false", "unique-local"),
        ("https://2130706433/hook", "false", "not a valid"),
        ("http://169.254.169.254/latest/meta-data", "true", "metadata"),
        ("https://user:pw@example.com/hook", "true", "user name"),
        ("ftp://example.com/hook", "true", "https"),
        ("https://example.com/" + "a" * 2048, "true", "2048"),
    ],
)
def test_webhook_urls_that_may_not_be_called_are_422(
    loop: Loop, settings_env: Callable[..., None], url: str, allow_private: str, why: str
) -> None:
    settings_env(WEBHOOK_ALLOW_PRIVATE_TARGETS=allow_private)
    reply = loop.api("POST", "/api/v1/webhooks", {"url": url, "events": ["notification.sent"]})
    assert reply.status == 422, reply.raw
    assert reply.error["details"][0]["field"] == "url"
    assert why in reply.raw
    assert loop.query("SELECT * FROM webhook_endpoints WHERE tenant_id = %s", loop.tenant.id) == []


def test_unknown_event_names_are_422(loop: Loop) -> None:
    reply = loop.api(
        "POST", "/api/v1/webhooks", {"url": loop.receiver.url, "events": ["notification.opened"]}
    )
    assert reply.status == 422 and reply.error["details"][0]["field"].startswith("events")
    reply = loop.api("POST", "/api/v1/webhooks", {"url": loop.receiver.url, "events": []})
    assert reply.status == 422


def test_state_changes_reach_the_endpoint_signed_and_only_subscribed_tenants_pay(
    loop: Loop, make_tenant: Callable[..., Tenant], make_api: Callable[[str | None], Api]
) -> None:
    # Given an endpoint for sent + cancelled, and another tenant without any endpoint
    loop.endpoint(["notification.sent", "notification.cancelled"])
    other_tenant = make_tenant("quiet")
    other = make_api(other_tenant.key)
    # When notifications are sent (ours and theirs) and one of ours is cancelled
    sent = loop.send()
    create(other, "email", EMAIL)
    loop.pipeline.drain_sender()
    scheduled = create(loop.api, "email", EMAIL, send_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat())
    assert loop.api("POST", f"/api/v1/notifications/{scheduled}/cancel").status == 200
    loop.dispatch()
    # Then exactly our two events arrive, each verified by the receiver with the endpoint's secret
    got = loop.receiver.wait_for(2)
    assert sorted((r.json["type"], r.json["data"]["id"]) for r in got) == sorted(
        [("notification.sent", sent), ("notification.cancelled", scheduled)]
    )
    assert all(r.verified for r in got)
    # and the other tenant has no delivery rows at all
    rows = loop.query(
        "SELECT DISTINCT tenant_id FROM webhook_deliveries WHERE tenant_id = ANY(%s)",
        [loop.tenant.id, other_tenant.id],
    )
    assert [r["tenant_id"] for r in rows] == [loop.tenant.id]


def test_an_event_names_the_notifications_user_when_it_has_one(loop: Loop) -> None:
    loop.endpoint(["notification.cancelled"])
    user = loop.api("POST", "/api/v1/users", {"email": "ada@example.com"}).json["id"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    nid = create(loop.api, "email", {"subject": "s", "body": "b"}, user_id=user, send_at=later)
    assert loop.api("POST", f"/api/v1/notifications/{nid}/cancel").status == 200
    loop.dispatch()
    (got,) = loop.receiver.wait_for(1)
    assert got.json["type"] == "notification.cancelled"
    assert got.json["data"] == {
        "id": nid,
        "status": "cancelled",
        "channel": "email",
        "provider": "sendgrid",
        "user_id": user,
    }


def test_a_failing_endpoint_is_retried_then_delivered_with_each_attempt_logged(loop: Loop) -> None:
    endpoint = loop.endpoint(["notification.sent"])
    loop.receiver.configure(fail_rate=1.0)
    nid = loop.send()
    loop.dispatch(rounds=2)  # the first attempt, then its retry (schedule 0 s)
    loop.receiver.configure(fail_rate=0.0)
    loop.dispatch()
    (delivery,) = loop.api("GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries").json["data"]
    assert delivery["status"] == "delivered" and delivery["status_code"] == 200
    attempts = delivery["attempts"]
    assert [a["status_code"] for a in attempts] == [503] * (len(attempts) - 1) + [200]
    assert len(attempts) >= 2
    assert all(a["error"] == "HTTP 503" and a["next_retry_at"] for a in attempts[:-1])
    assert attempts[-1]["error"] is None and attempts[-1]["duration_ms"] >= 0
    assert json.loads(loop.receiver.wait_for(1)[0].body)["data"]["id"] == nid


def test_an_endpoint_failing_throughout_is_disabled_and_audited(
    loop: Loop, settings_env: Callable[..., None]
) -> None:
    settings_env(WEBHOOK_DISABLE_AFTER_SECONDS="1", WEBHOOK_RETRY_SCHEDULE="0,0")
    endpoint = loop.endpoint(["notification.sent"])
    loop.receiver.configure(status=500)
    loop.send()
    loop.query(
        "UPDATE webhook_endpoints SET failing_since = now() - interval '1 hour' WHERE id = %s RETURNING id",
        endpoint["id"],
    )
    loop.dispatch()
    read = loop.api("GET", f"/api/v1/webhooks/{endpoint['id']}").json
    assert read["active"] is False and read["disabled_at"] is not None
    (delivery,) = loop.api("GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries").json["data"]
    assert (
        delivery["status"] == "failed"
        and delivery["attempt_count"] == 3
        and delivery["next_retry_at"] is None
    )
    audit = loop.query(
        "SELECT actor_type, action, changes FROM audit_events WHERE action = 'webhook.disable'"
    )
    assert [(a["actor_type"], a["changes"]["active"]) for a in audit] == [("system", False)]
    # a disabled endpoint gets no new events
    loop.send()
    assert (
        loop.query("SELECT count(*) AS n FROM webhook_deliveries WHERE tenant_id = %s", loop.tenant.id)[0][
            "n"
        ]
        == 1
    )


def test_test_event_rotation_signs_with_both_secrets_and_redeliver_keeps_the_webhook_id(loop: Loop) -> None:
    endpoint = loop.endpoint(["dlq.created"])
    old_secret = endpoint["secret"]
    new_secret = loop.api("POST", f"/api/v1/webhooks/{endpoint['id']}/rotate-secret").json["secret"]
    test = loop.api("POST", f"/api/v1/webhooks/{endpoint['id']}/test")
    assert test.status == 202 and test.json["event_type"] == "webhook.test"
    loop.dispatch()
    (got,) = loop.receiver.wait_for(1)
    assert got.json["type"] == "webhook.test"
    # each secret alone verifies it: receivers still on the old one keep working for 24 h
    for secret in (old_secret, new_secret):
        loop.receiver.secrets = [secret]
        assert loop.receiver.verify(got.body, got.headers) is None
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    again = loop.api("POST", f"/api/v1/webhooks/{endpoint['id']}/deliveries/{test.json['id']}/redeliver")
    assert again.status == 202 and again.json["redelivery_of"] == test.json["id"]
    loop.dispatch()
    second = loop.receiver.wait_for(2)[1]
    assert second.webhook_id == got.webhook_id == test.json["event_id"]
    assert (
        loop.api("POST", f"/api/v1/webhooks/{endpoint['id']}/deliveries/{uuid.uuid4()}/redeliver").status
        == 404
    )


def test_a_dead_letter_emits_failed_and_dlq_created(loop: Loop) -> None:
    loop.endpoint(["notification.failed", "dlq.created"])
    loop.pipeline.stub.configure("sendgrid", fail_next=1, failure="permanent")
    nid = loop.send()
    loop.dispatch()
    got = {r.json["type"]: r.json["data"] for r in loop.receiver.wait_for(2)}
    assert got["notification.failed"]["id"] == nid
    letter = loop.api("GET", "/api/v1/dlq").json["data"][0]
    assert got["dlq.created"] == {
        "id": letter["id"],
        "notification_id": nid,
        "reason": "permanent_error",
        "error": letter["last_error"],
    }


def test_the_sweeper_enqueues_outbox_rows_that_never_reached_the_queue(
    loop: Loop, settings_env: Callable[..., None]
) -> None:
    loop.endpoint(["notification.sent"])
    settings_env(WEBHOOK_QUEUE_URL="")  # the enqueue after the commit "fails"
    loop.send()
    settings_env(WEBHOOK_QUEUE_URL=loop.webhooks_queue, WEBHOOK_OUTBOX_GRACE_SECONDS="1")
    assert loop.dispatch() == 0  # nothing on the queue
    # the sweeper works on the whole database: settle other tests' deliveries first
    loop.query(
        "UPDATE webhook_deliveries SET status = 'failed' WHERE tenant_id <> %s RETURNING id", loop.tenant.id
    )
    loop.query(
        "UPDATE webhook_deliveries SET created_at = now() - interval '5 seconds' WHERE tenant_id = %s RETURNING id",
        loop.tenant.id,
    )
    assert outbox.sweep() == 1
    assert outbox.sweep() == 0  # enqueued once
    loop.dispatch()
    assert [r.json["type"] for r in loop.receiver.wait_for(1)] == ["notification.sent"]


def test_the_dispatcher_does_not_follow_redirects_and_refuses_private_targets_at_send(
    loop: Loop, settings_env: Callable[..., None]
) -> None:
    endpoint = loop.endpoint(["notification.sent"])
    loop.receiver.configure(status=302)
    loop.send()
    loop.dispatch()
    (delivery,) = loop.api("GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries").json["data"]
    assert delivery["attempts"][0]["error"] == "HTTP 302: redirects are not followed"
    # local mode switched off after creation: the rules are checked again at send (http refused)
    settings_env(WEBHOOK_ALLOW_PRIVATE_TARGETS="false")
    loop.receiver.configure()
    before = len(loop.receiver.received)
    loop.send()
    loop.dispatch()
    newest = loop.api("GET", f"/api/v1/webhooks/{endpoint['id']}/deliveries").json["data"][0]
    assert newest["status"] == "failed"
    assert newest["error"] == "refused: must be an https:// URL"
    assert len(loop.receiver.received) == before


def test_the_guarded_client_gives_up_on_a_receiver_that_does_not_answer(
    loop: Loop, settings_env: Callable[..., None]
) -> None:
    from notify_core.integrations import guarded_http

    settings_env(
        WEBHOOK_READ_TIMEOUT_SECONDS="0.3",
        WEBHOOK_CONNECT_TIMEOUT_SECONDS="0.3",
        WEBHOOK_ALLOW_PRIVATE_TARGETS="true",
    )
    loop.receiver.configure(delay_ms=1500)
    result = guarded_http.post(loop.receiver.url, b"{}", {"Content-Type": "application/json"})
    assert (result.status, result.error) == (None, "timed out")


def test_a_row_committed_between_the_claim_and_its_lookup_is_put_back_not_dropped(
    loop: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by bench.webhooks: ingest sends messages while its INSERT commits; a row that became
    visible after the claim's UPDATE but before its follow-up SELECT used to count as `skipped`, its
    message deleted and the row stranded `queued`."""
    from notify_core.delivery import store

    nid = uuid.uuid4()
    real = store.transition

    def commit_meanwhile(*args: Any, **kwargs: Any) -> Any:
        moved = real(*args, **kwargs)
        loop.query(
            "INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts, queued_at)"
            " VALUES (%s, %s, 'email', 'sendgrid', %s, 'queued', 5, now()) RETURNING id",
            nid,
            loop.tenant.id,
            json.dumps(EMAIL),
        )
        return moved

    monkeypatch.setattr(store, "transition", commit_meanwhile)
    claimed = store.PgStore().claim([nid], uuid.uuid4(), datetime.now(UTC) + timedelta(seconds=30))
    assert claimed.rows == {} and claimed.absent == set()
    assert claimed.early[nid] == (loop.tenant.id, "queued", store.RACED_DELAY_S)
