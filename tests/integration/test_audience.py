"""Categories, preferences, quiet hours, suppressions and messages over the real API, database and
queue: resolution at ingest (what is blocked is not created), the fan-out of messages with each
skipped reason, idempotency, and the bad input the issue lists."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from notify_core.config import get_settings

from .conftest import Api, Tenant
from .statements import recorded
from .test_templates import DATA, SHIPPED, make_template, user


def category(api: Api, key: str, **fields: Any) -> None:
    reply = api("POST", "/api/v1/categories", {"key": key, "name": key.title(), **fields})
    assert reply.status == 201, reply.raw


def prefs(api: Api, uid: str, body: dict[str, Any], method: str = "PUT") -> Any:
    return api(method, f"/api/v1/users/{uid}/preferences", body)


def test_categories_and_preferences_round_trip(api: Api, tenant: Tenant) -> None:
    category(api, "orders", default_channels=["push", "email"])
    category(api, "security", critical=True)
    assert api("POST", "/api/v1/categories", {"key": "orders", "name": "x"}).status == 409
    keys = [c["key"] for c in api("GET", "/api/v1/categories").json["data"]]
    assert sorted(keys) == ["orders", "security"]
    uid = user(api, timezone="Europe/Berlin")
    empty = api("GET", f"/api/v1/users/{uid}/preferences").json
    assert empty == {
        "user_id": uid,
        "timezone": "Europe/Berlin",
        "channels": {},
        "categories": {},
        "quiet_hours": None,
    }
    body = {
        "channels": {"sms": False},
        "categories": {"orders": {"channels": {"email": False}}},
        "quiet_hours": {"start": "22:00", "end": "07:00", "days": ["fri", "sat"]},
    }
    assert prefs(api, uid, body).json["categories"] == {
        "orders": {"enabled": None, "channels": {"email": False}}
    }
    patched = prefs(api, uid, {"channels": {"sms": None, "push": False}, "quiet_hours": None}, "PATCH").json
    assert patched["channels"] == {"push": False} and patched["quiet_hours"] is None
    assert patched["categories"]["orders"]["channels"] == {"email": False}


def test_preferences_bad_input(api: Api, make_tenant: Any, make_api: Any) -> None:
    uid = user(api)
    for body, field in (
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "22:00", "end": "7:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "days": ["funday"]}}, "quiet_hours.days"),
        ({"categories": {"unknown": {"enabled": False}}}, "categories.unknown"),
        ({"channels": {"sms": "no"}}, "channels.sms"),
    ):
        reply = prefs(api, uid, body)
        assert reply.status == 422, (body, reply.raw)
        assert reply.error["details"][0]["field"] == field, reply.raw
    assert api("PATCH", f"/api/v1/users/{uid}/preferences", {"quiet_hours": {"start": "23:00"}}).status == 422
    bad_zone = api("PATCH", f"/api/v1/users/{uid}", {"timezone": "Mars/Olympus"})
    assert bad_zone.status == 422 and bad_zone.error["details"][0]["field"] == "timezone"
    other = make_api(make_tenant("other").key)
    assert other("GET", f"/api/v1/users/{uid}/preferences").status == 404
    assert other("PUT", f"/api/v1/users/{uid}/preferences", {}).status == 404


def test_ingest_refuses_what_preferences_block_and_stops_what_suppressions_block(api: Api) -> None:
    category(api, "marketing")
    category(api, "security", critical=True)
    uid = user(api)
    prefs(api, uid, {"channels": {"sms": False}, "categories": {"marketing": {"enabled": False}}})
    sms = {"user_id": uid, "channel": "sms", "payload": {"body": "hi"}}
    blocked = api("POST", "/api/v1/notifications", {**sms, "category": "marketing"})
    assert blocked.status == 422
    assert blocked.error["details"] == [
        {"field": "category", "message": "preference: the user turned off marketing on sms"}
    ]
    assert api("POST", "/api/v1/notifications", {**sms, "category": "security"}).status == 202  # critical
    # a suppressed address: stored `suppressed` with the reason and never sent, whatever the
    # category, but critical passes an unsubscribe
    email = {"channel": "email", "payload": {"to": "Bob@Example.com", "subject": "s", "body": "b"}}
    made = api(
        "POST",
        "/api/v1/suppressions",
        {"channel": "email", "address": "bob@example.com", "reason": "unsubscribe"},
    )
    assert made.status == 201
    stopped = api("POST", "/api/v1/notifications", email)
    assert stopped.status == 202
    assert (stopped.json["status"], stopped.json["last_error"]) == (
        "suppressed",
        "unsubscribe: the address is suppressed",
    )
    assert api("POST", "/api/v1/notifications", {**email, "category": "security"}).json["status"] == "queued"
    api(
        "POST",
        "/api/v1/suppressions",
        {"channel": "email", "address": "bob@example.com", "reason": "hard_bounce"},
    )
    critical = api("POST", "/api/v1/notifications", {**email, "category": "security"})
    assert (critical.status, critical.json["status"]) == (202, "suppressed")
    assert critical.json["last_error"] == "hard_bounce: the address is suppressed"
    # nothing half-created in a batch: the item preferences block has an error, the others are
    # stored (the one to a suppressed address as `suppressed`)
    batch = api(
        "POST",
        "/api/v1/notifications/batch",
        {"notifications": [{**sms, "category": "marketing"}, email, {**sms, "category": "security"}]},
    )
    assert batch.status == 207
    assert [("error" in r, r.get("status")) for r in batch.json["results"]] == [
        (True, None),
        (False, "suppressed"),
        (False, "queued"),
    ]


def test_quiet_hours_hold_at_ingest(api: Api) -> None:
    category(api, "security", critical=True)
    uid = user(api, timezone="Asia/Kolkata")
    now = datetime.now(UTC)
    local = now.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=2)).strftime("%H:%M")
    prefs(api, uid, {"quiet_hours": {"start": start, "end": end}})
    held = api("POST", "/api/v1/notifications", {"user_id": uid, "channel": "sms", "payload": {"body": "hi"}})
    assert held.status == 202 and held.json["status"] == "scheduled"
    until = datetime.fromisoformat(held.json["next_attempt_at"])
    assert timedelta(hours=1, minutes=58) < until - now <= timedelta(hours=2)
    critical = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "sms", "payload": {"body": "code"}, "category": "security"},
    )
    assert critical.json["status"] == "queued"


def test_suppressions_api(api: Api, tenant: Tenant, make_tenant: Any, make_api: Any) -> None:
    a = api(
        "POST", "/api/v1/suppressions", {"channel": "sms", "address": "+14155550100", "reason": "sms_stop"}
    )
    assert a.status == 201 and a.json["address"] == "+14155550100"
    b = api(
        "POST",
        "/api/v1/suppressions",
        {"channel": "email", "address": "ADA@example.com", "reason": "manual", "note": "asked"},
    )
    assert b.json["address"] == "ada@example.com"
    assert (
        api(
            "POST",
            "/api/v1/suppressions",
            {"channel": "email", "address": "ada@example.com", "reason": "manual"},
        ).status
        == 409
    )
    assert (
        api(
            "POST", "/api/v1/suppressions", {"channel": "sms", "address": "not-a-phone", "reason": "manual"}
        ).status
        == 422
    )
    assert (
        api(
            "POST", "/api/v1/suppressions", {"channel": "email", "address": "a@b.co", "reason": "bored"}
        ).status
        == 422
    )
    by_reason = api("GET", "/api/v1/suppressions", query={"reason": "sms_stop"}).json["data"]
    assert [s["id"] for s in by_reason] == [a.json["id"]]
    by_address = api("GET", "/api/v1/suppressions", query={"address": "Ada@Example.com"}).json["data"]
    assert [s["id"] for s in by_address] == [b.json["id"]]
    assert len(api("GET", "/api/v1/suppressions", query={"channel": "email"}).json["data"]) == 1
    other = make_api(make_tenant("other").key)
    assert other("GET", "/api/v1/suppressions").json["data"] == []
    assert other("DELETE", f"/api/v1/suppressions/{a.json['id']}").status == 404
    assert api("DELETE", f"/api/v1/suppressions/{a.json['id']}").status == 204
    assert api("DELETE", f"/api/v1/suppressions/{a.json['id']}").status == 404
    with psycopg.connect(get_settings().database_url) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM audit_events WHERE tenant_id = %s AND target_type = 'suppression'"
                " ORDER BY created_at",
                (tenant.id,),
            )
        ]
    assert actions == ["suppression.create", "suppression.create", "suppression.delete"]


# ---------------------------------------------------------------- messages


def message(api: Api, **body: Any) -> Any:
    return api("POST", "/api/v1/messages", {"template": "order-shipped", "data": DATA, **body})


def test_message_fans_out_with_routing_and_skipped_reasons(api: Api) -> None:
    category(api, "orders", default_channels=["email", "sms"])
    make_template(api, category="orders")
    ada = user(api, external_id="crm-ada")
    no_phone = user(api, email="nophone@example.com", phone=None)
    opted_out = user(api, email="out@example.com")
    prefs(api, opted_out, {"categories": {"orders": {"channels": {"email": False}}}})
    suppressed = user(api, email="gone@example.com", phone="+14155550199")
    api("POST", "/api/v1/suppressions", {"channel": "sms", "address": "+14155550199", "reason": "sms_stop"})
    reply = message(
        api,
        to=[{"external_id": "crm-ada"}, no_phone, opted_out, suppressed, {"external_id": "nobody"}],
        channels=["email", "sms", "push"],
    )
    assert reply.status == 202, reply.raw
    got = {(n["user_id"], n["channel"]): n["status"] for n in reply.json["notifications"]}
    assert got == {
        (ada, "email"): "queued",
        (ada, "sms"): "queued",
        (no_phone, "email"): "queued",
        (opted_out, "sms"): "queued",
        (suppressed, "email"): "queued",
    }
    skipped = {(s["user_id"], s["channel"], s["reason"]) for s in reply.json["skipped"]}
    assert skipped == {
        (ada, "push", "no_contact"),
        (no_phone, "sms", "no_contact"),
        (no_phone, "push", "no_contact"),
        (opted_out, "email", "preference"),
        (opted_out, "push", "no_contact"),
        (suppressed, "sms", "suppressed"),
        (suppressed, "push", "no_contact"),
        (None, None, "unknown_user"),
    }
    # each notification records the message and the template; the payload is rendered
    shown = api("GET", f"/api/v1/messages/{reply.json['id']}").json
    assert {n["id"] for n in shown["notifications"]} == {n["id"] for n in reply.json["notifications"]}
    assert shown["skipped"] == reply.json["skipped"] and shown["template_version"] == 1
    one = api("GET", f"/api/v1/notifications/{reply.json['notifications'][0]['id']}").json
    assert one["message_id"] == reply.json["id"] and one["template_key"] == "order-shipped"
    assert one["payload"]["subject"] == "Order A-1 shipped" and one["category"] == "orders"
    # routing first: per user the first channel taken; the category's default channels when none given
    first = message(api, to=[ada, opted_out], routing="first")
    assert {(n["user_id"], n["channel"]) for n in first.json["notifications"]} == {
        (ada, "email"),
        (opted_out, "sms"),
    }
    assert [(s["user_id"], s["channel"], s["reason"]) for s in first.json["skipped"]] == [
        (opted_out, "email", "preference")
    ]
    # a channel the template has no variant for
    variants = [v for v in SHIPPED["variants"] if v["channel"] != "push"]
    api("PUT", "/api/v1/templates/order-shipped", {"name": "x", "category": "orders", "variants": variants})
    no_variant = message(api, to=[ada], channels=["push"])
    assert no_variant.json["skipped"] == [
        {"user_id": ada, "external_id": None, "channel": "push", "reason": "no_variant"}
    ]


def test_message_is_one_insert_and_idempotent(api: Api, tenant: Tenant) -> None:
    make_template(api)
    ids = [user(api, email=f"u{i}@example.com") for i in range(100)]
    body = {"to": ids, "channels": ["email", "sms"]}
    with recorded() as statements:
        first = message(api, **body, idempotency_key="shipped-100")
    assert first.status == 202 and len(first.json["notifications"]) == 200
    assert len(statements.starting("INSERT INTO notifications")) == 1  # the whole fan-out, one INSERT
    assert len(statements.starting("INSERT INTO messages")) == 1
    again = message(api, **body, idempotency_key="shipped-100")
    assert again.status == 200 and again.json["id"] == first.json["id"]
    other = message(api, to=ids[:3], channels=["email"], idempotency_key="shipped-100")
    assert other.status == 409 and other.error["code"] == "idempotency_mismatch"
    with psycopg.connect(get_settings().database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM notifications WHERE message_id = %s", (first.json["id"],)
        ).fetchone()
    assert count == (200,)


def test_message_bad_input(api: Api, tenant: Tenant, make_tenant: Any, make_api: Any) -> None:
    make_template(api)
    uid = user(api)
    stranger = user(make_api(make_tenant("other").key))

    def refused(**body: Any) -> list[dict[str, str]]:
        reply = message(api, **body)
        assert reply.status == 422, reply.raw
        return reply.error["details"]

    assert refused(to=[str(uuid.uuid4()) for _ in range(101)], channels=["sms"])[0]["field"] == "to"
    assert refused(to=[uid, uid], channels=["sms"]) == [
        {"field": "to[1]", "message": "the same user is listed twice"}
    ]
    assert refused(to=[uid, stranger], channels=["sms"]) == [
        {"field": "to[1]", "message": "no user with this id"}
    ]
    assert refused(to=[uid], channels=["sms"], template="nope")[0]["field"] == "template"
    assert refused(to=[uid], channels=["sms"], category="nope")[0]["field"] == "category"
    assert refused(to=[uid])[0]["field"] == "channels"
    assert (
        refused(to=[uid], channels=["sms"], locale="zz-ZZ")[0]["field"] == "locale"
    )  # no channels and no category defaults
    assert refused(to=[uid], channels=["sms"], data={"name": "x"})[0]["field"] == "data.order"
    with psycopg.connect(get_settings().database_url) as conn:
        found = conn.execute("SELECT count(*) FROM messages WHERE tenant_id = %s", (tenant.id,)).fetchone()
    assert found == (0,)  # nothing half-created
