"""The API behind the operator console (issue 14): the page and its files, who a key is, the
activity feed's filters, a notification's timeline, and bulk replay of dead letters."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from notify_core import console, timeline
from notify_local.sandbox import Sandbox

from .conftest import EMAIL, SMS, Api, Pipeline, Tenant, create
from .test_feedback import Loop, delivered_event, loop  # noqa: F401  (the fixture)


@pytest.fixture
def db(test_env: Sandbox) -> str:
    return test_env.database_url


# ---------------------------------------------------------------- the page and its files


def test_the_console_is_served_without_a_key_under_a_strict_policy(make_api: Any) -> None:
    anonymous = make_api(None)
    # When the page is loaded without any key
    page = anonymous("GET", "/console")
    # Then it is HTML under a policy that allows only this origin: no inline script or style, no
    # framing, no plugins
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    # and everything it loads is one of the console's own files, by a relative URL (stage-safe)
    loaded = re.findall(r'(?:src|href)="([^"#]+)"', page.raw)
    assert loaded and all(url.startswith("console/") for url in loaded), loaded
    assert "<script>" not in page.raw and "<style" not in page.raw and " style=" not in page.raw
    for url in loaded:
        reply = anonymous("GET", f"/{url}")
        assert reply.status == 200, url
        assert reply.headers["Content-Security-Policy"] == policy
    script = anonymous("GET", "/console/app.js")
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"


def test_a_file_the_console_does_not_have_is_the_envelopes_404(make_api: Any) -> None:
    anonymous = make_api(None)
    for name in ("nope.js", "index.html", "..%2Fapp.py", "app.py", "APP.JS", "x" * 200 + ".js"):
        reply = anonymous("GET", f"/console/{name}")
        assert reply.status == 404, name
        assert reply.error["code"] == "not_found"


def test_the_console_loads_nothing_from_elsewhere_and_writes_data_only_as_text() -> None:
    # Every file of our own (the vendored chart library aside) names no other origin, and no script
    # puts markup built from data into the page
    ours = [n for n in console.names() if not n.startswith("uplot")]
    assert {"app.js", "api.js", "dom.js", "feed.js", "console.css"} <= set(ours)
    for name in [*ours, "index.html"]:
        text = (console.STATIC / name).read_text(encoding="utf-8")
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a place
        assert not re.search(r"https?://", text), name
        assert (
            "innerHTML" not in text and "insertAdjacentHTML" not in text and "document.write" not in text
        ), name
    assert console.UPLOT_VERSION in (console.STATIC / "uplot.iife.min.js").read_text(encoding="utf-8")
    assert (console.STATIC / "uplot.LICENSE.txt").read_text(encoding="utf-8").startswith("The MIT License")


# ---------------------------------------------------------------- who am I


def test_whoami_names_the_keys_tenant_and_scopes_whatever_they_are(make_tenant: Any, make_api: Any) -> None:
    tenant = make_tenant("Acme Ops", scopes=("metrics:read", "dlq:read"))
    reply = make_api(tenant.key)("GET", "/api/v1/whoami")
    assert reply.status == 200
    assert reply.json["tenant_id"] == str(tenant.id)
    assert reply.json["tenant_name"] == "Acme Ops"
    assert reply.json["key_prefix"] == tenant.prefix
    assert reply.json["scopes"] == ["dlq:read", "metrics:read"]
    assert reply.json["rate_limit"] >= 1
    # a key with no scope at all may still ask
    bare = make_tenant("Bare", scopes=())
    assert make_api(bare.key)("GET", "/api/v1/whoami").json["scopes"] == []
    # a wrong key is the 401 envelope
    wrong = make_api("nk_00000000_not-a-key")("GET", "/api/v1/whoami")
    assert wrong.status == 401 and wrong.error["code"] == "unauthorized"


# ---------------------------------------------------------------- the feed's filters


def _ids(reply: Any) -> list[str]:
    assert reply.status == 200, reply.raw
    return [n["id"] for n in reply.json["data"]]


def test_the_feed_filters_by_category_time_range_and_search(
    api: Api, make_tenant: Any, make_api: Any, db: str
) -> None:
    # Given notifications of two categories to several addresses, and another tenant's lookalike
    order = create(api, "email", {**EMAIL, "to": "Ada.Lovelace@Example.com"}, category="orders")
    promo = create(api, "email", {**EMAIL, "to": "ada_l@example.com"}, category="marketing")
    text = create(api, "sms", SMS, category="orders")
    other = make_api(make_tenant("other").key)
    create(other, "email", {**EMAIL, "to": "ada.lovelace@example.com"}, category="orders")

    def listed(**query: str) -> list[str]:
        return _ids(api("GET", "/api/v1/notifications", query=query))

    # category, alone and with channel
    assert listed(category="orders") == [text, order]
    assert listed(category="orders", channel="email") == [order]
    assert listed(category="nothing-here") == []
    # search: the start of the address, case-insensitive; wildcards are literal
    assert listed(q="ADA.") == [order]
    assert listed(q="ada") == [promo, order]
    assert listed(q="ada_") == [promo]  # `_` is not "any character"
    assert listed(q="%") == []
    assert listed(q="+1415") == [text]
    # search: an exact id (the notification's own; another tenant's is not found)
    assert listed(q=order) == [order]
    assert listed(q=str(uuid.uuid4())) == []
    # the time range: [created_after, created_before)
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE notifications SET created_at = now() - interval '3 hours' WHERE id = %s", (order,)
        )
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    assert listed(created_before=two_hours_ago) == [order]
    assert order not in listed(created_after=two_hours_ago)
    assert set(listed(created_after=two_hours_ago)) == {promo, text}
    # keyset pagination keeps the filters
    first = api("GET", "/api/v1/notifications", query={"q": "ada", "limit": "1"})
    assert _ids(first) == [promo]
    cursor = first.json["next_cursor"]
    assert _ids(api("GET", "/api/v1/notifications", query={"q": "ada", "limit": "1", "cursor": cursor})) == [
        order
    ]


def test_bad_feed_filters_are_a_422_naming_the_field(api: Api) -> None:
    cases = {
        "category": ("Not A Slug!", "category"),
        "created_after": ("yesterday", "created_after"),
        "created_before": ("2026-13-01T00:00:00Z", "created_before"),
        "q": ("x" * 256, "q"),
    }
    for name, (value, field) in cases.items():
        reply = api("GET", "/api/v1/notifications", query={name: value})
        assert reply.status == 422, (name, reply.raw)
        assert reply.error["code"] == "validation_error"
        assert [d["field"] for d in reply.error["details"]] == [field], reply.raw
    # a reversed or empty range says so
    now = datetime.now(UTC).isoformat()
    empty = api("GET", "/api/v1/notifications", query={"created_after": now, "created_before": now})
    assert empty.status == 422 and empty.error["details"][0]["field"] == "created_after"


# ---------------------------------------------------------------- the timeline


def test_the_timeline_of_a_sent_notification_in_order(api: Api, pipeline: Pipeline) -> None:
    nid = create(api, "email", {**EMAIL, "html": "<script>alert(1)</script>"}, category="orders")
    pipeline.drain_sender()
    reply = api("GET", f"/api/v1/notifications/{nid}/timeline")
    assert reply.status == 200, reply.raw
    body = reply.json
    assert body["notification"]["id"] == nid
    assert body["notification"]["payload"]["html"] == "<script>alert(1)</script>"  # the content, as stored
    kinds = [e["kind"] for e in body["entries"]]
    assert kinds == ["created", "queued", "attempt", "sent"]
    attempt = body["entries"][2]
    assert attempt["detail"]["provider"] == "sendgrid" and attempt["detail"]["outcome"] == "sent"
    assert attempt["detail"]["duration_ms"] >= 0
    assert "attempt 1 via sendgrid: sent in" in attempt["summary"]
    times = [e["at"] for e in body["entries"]]
    assert times == sorted(times)


def test_the_timeline_of_a_failure_its_dead_letter_and_replay(api: Api, pipeline: Pipeline) -> None:
    pipeline.stub.configure("sendgrid", fail_next=1, failure="permanent")
    nid = create(api, "email", EMAIL)
    pipeline.drain_sender()
    letter = next(d for d in api("GET", "/api/v1/dlq").json["data"] if d["notification_id"] == nid)
    assert api("POST", f"/api/v1/dlq/{letter['id']}/replay").status == 202
    pipeline.drain_sender()
    entries = api("GET", f"/api/v1/notifications/{nid}/timeline").json["entries"]
    kinds = [e["kind"] for e in entries]
    # (queued_at is the latest time it went on the queue: after the replay)
    assert kinds == ["created", "attempt", "dead_letter", "replayed", "queued", "attempt", "sent"]
    assert entries[1]["detail"]["outcome"] == "permanent_error" and entries[1]["detail"]["error"]
    assert entries[2]["detail"]["reason"] == "permanent_error"
    assert entries[4]["summary"] == "put back on the delivery queue"


def test_the_timeline_shows_a_hold_for_quiet_hours_provider_events_and_webhooks(
    loop: Loop,  # noqa: F811
) -> None:
    api = loop.api
    # Given a user whose quiet hours are now (UTC)
    user = api("POST", "/api/v1/users", {"email": "quiet@example.com", "timezone": "UTC"}).json
    now = datetime.now(UTC)
    window = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=1)).strftime("%H:%M"),
    }
    assert api("PUT", f"/api/v1/users/{user['id']}/preferences", {"quiet_hours": window}).status == 200
    held = create(api, "email", {**EMAIL, "to": "quiet@example.com"}, user_id=user["id"])
    entries = api("GET", f"/api/v1/notifications/{held}/timeline").json["entries"]
    hold = next(e for e in entries if e["kind"] == "held")
    assert "quiet hours" in hold["summary"]
    assert datetime.fromisoformat(hold["detail"]["until"]) > now

    # And a sent one that a webhook endpoint hears about and the provider reports delivered
    endpoint = loop.endpoint(["notification.sent", "notification.delivered"])
    nid = loop.send()
    assert loop.sendgrid([delivered_event(nid, loop.tenant)]).status == 200
    loop.dispatch()
    entries = api("GET", f"/api/v1/notifications/{nid}/timeline").json["entries"]
    events = [e for e in entries if e["kind"] == "provider_event"]
    assert [e["detail"]["type"] for e in events] == ["delivered"]
    hooks = [e for e in entries if e["kind"] == "webhook"]
    assert sorted(h["detail"]["event_type"] for h in hooks) == ["notification.delivered", "notification.sent"]
    assert {h["detail"]["endpoint_id"] for h in hooks} == {endpoint["id"]}
    assert all(h["detail"]["status"] == "delivered" for h in hooks)


def test_another_tenants_timeline_is_not_found(api: Api, make_tenant: Any, make_api: Any) -> None:
    nid = create(api, "email", EMAIL)
    other = make_api(make_tenant("other").key)
    reply = other("GET", f"/api/v1/notifications/{nid}/timeline")
    assert reply.status == 404 and reply.error["code"] == "not_found"
    assert api("GET", f"/api/v1/notifications/{uuid.uuid4()}/timeline").status == 404


def test_timeline_entries_sort_by_time_then_by_kind() -> None:
    at = datetime(2026, 11, 1, 12, tzinfo=UTC)
    row = {
        "id": uuid.uuid4(),
        "channel": "sms",
        "provider": "twilio",
        "status": "suppressed",
        "created_at": at,
        "updated_at": at + timedelta(seconds=2),
        "queued_at": at,
        "last_error": "preference: sms is off",
        "held_until": at + timedelta(hours=8),
        "held_at": at + timedelta(seconds=1),
    }
    entries = timeline.entries(row)
    assert [e.kind for e in entries] == ["created", "queued", "held", "suppressed"]
    assert entries[-1].summary == "not sent: preference: sms is off"


# ---------------------------------------------------------------- dead letters: filters, bulk replay


def _dead_letters(db: str, tenant: Tenant, specs: list[tuple[str, str, str]]) -> dict[str, str]:
    """Failed notifications with an open dead letter each: (channel, provider, reason) → letter id."""
    out: dict[str, str] = {}
    with psycopg.connect(db) as conn:
        for channel, provider, reason in specs:
            nid, letter = uuid.uuid4(), uuid.uuid4()
            payload = EMAIL if channel == "email" else SMS
            conn.execute(
                "INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts,"
                " attempt_count, last_error, failed_at) VALUES (%s, %s, %s, %s, %s, 'failed', 3, 3, 'boom', now())",
                (nid, tenant.id, channel, provider, Jsonb(payload)),
            )
            conn.execute(
                "INSERT INTO notification_dlq (id, notification_id, tenant_id, channel, provider, reason,"
                " last_error, attempt_count) VALUES (%s, %s, %s, %s, %s, %s, 'boom', 3)",
                (letter, nid, tenant.id, channel, provider, reason),
            )
            out[f"{channel}/{provider}/{reason}/{len(out)}"] = str(letter)
    return out


def test_dead_letters_filter_and_bulk_replay_only_the_matching_ones(
    api: Api, tenant: Tenant, pipeline: Pipeline, make_tenant: Any, make_api: Any, db: str
) -> None:
    letters = _dead_letters(
        db,
        tenant,
        [
            ("email", "sendgrid", "permanent_error"),
            ("email", "sendgrid", "permanent_error"),
            ("email", "sendgrid", "max_attempts"),
            ("sms", "twilio", "permanent_error"),
        ],
    )
    other = make_tenant("other")
    theirs = _dead_letters(db, other, [("email", "sendgrid", "permanent_error")])
    # the list filters
    listed = api("GET", "/api/v1/dlq", query={"reason": "permanent_error", "channel": "email"}).json["data"]
    wanted = {v for k, v in letters.items() if k.startswith("email/sendgrid/permanent_error")}
    assert {d["id"] for d in listed} == wanted
    assert api("GET", "/api/v1/dlq", query={"reason": "nonsense"}).status == 422

    # When the filtered set is replayed, one at a time (limit 1), then the rest
    first = api("POST", "/api/v1/dlq/replay", {"reason": "permanent_error", "channel": "email", "limit": 1})
    assert first.status == 200, first.raw
    assert len(first.json["replayed"]) == 1 and first.json["remaining"] == 1
    rest = api("POST", "/api/v1/dlq/replay", {"reason": "permanent_error", "channel": "email"})
    assert len(rest.json["replayed"]) == 1 and rest.json["remaining"] == 0
    replayed = {r["id"] for r in first.json["replayed"] + rest.json["replayed"]}
    # Then exactly those were replayed (and queued), audited one by one as bulk replays
    assert replayed == wanted
    assert all(r["status"] == "queued" for r in first.json["replayed"] + rest.json["replayed"])
    left = {d["id"] for d in api("GET", "/api/v1/dlq").json["data"]}
    assert left == set(letters.values()) - wanted
    audit = api("GET", "/api/v1/audit-events", query={"action": "dead_letter.replay"}).json["data"]
    assert {a["target"]["id"] for a in audit} == wanted
    assert all(a["changes"]["bulk"] is True for a in audit)
    # and the other tenant's letter is neither seen nor replayed, even by id
    by_id = api("POST", "/api/v1/dlq/replay", {"ids": list(theirs.values())})
    assert by_id.status == 200 and by_id.json["replayed"] == [] and by_id.json["remaining"] == 0
    assert {d["id"] for d in make_api(other.key)("GET", "/api/v1/dlq").json["data"]} == set(theirs.values())


def test_bulk_replay_skips_a_letter_whose_notification_moved_on(
    api: Api, tenant: Tenant, pipeline: Pipeline, db: str
) -> None:
    letters = _dead_letters(
        db, tenant, [("email", "sendgrid", "ambiguous"), ("email", "sendgrid", "ambiguous")]
    )
    moved, kept = sorted(letters.values())
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE notifications SET status = 'cancelled', cancelled_at = now() WHERE id ="
            " (SELECT notification_id FROM notification_dlq WHERE id = %s)",
            (moved,),
        )
    reply = api("POST", "/api/v1/dlq/replay", {"ids": [moved, kept]})
    assert [r["id"] for r in reply.json["replayed"]] == [kept]
    assert [s["id"] for s in reply.json["skipped"]] == [moved]
    # the skipped one stays open, as a single replay's 409 leaves it
    assert moved in {d["id"] for d in api("GET", "/api/v1/dlq").json["data"]}
    assert reply.json["remaining"] == 1


def test_bad_bulk_replay_bodies_are_a_422(api: Api) -> None:
    for body, field in (
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"ids": []}, "ids"),
        ({"ids": ["not-a-uuid"]}, "ids[0]"),
        ({"reason": "boom"}, "reason"),
        ({"surprise": 1}, "surprise"),
    ):
        reply = api("POST", "/api/v1/dlq/replay", body)
        assert reply.status == 422, (body, reply.raw)
        assert [d["field"] for d in reply.error["details"]] == [field], reply.raw


def test_a_hold_decided_at_send_time_stays_on_the_timeline(api: Api, pipeline: Pipeline) -> None:
    # Given a notification queued for a user without quiet hours
    user = api("POST", "/api/v1/users", {"email": "late@example.com", "timezone": "UTC"}).json
    nid = create(api, "email", {**EMAIL, "to": "late@example.com"}, user_id=user["id"])
    # When the user's quiet hours start covering now before the sender gets to it
    now = datetime.now(UTC)
    window = {
        "start": (now - timedelta(hours=1)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
    }
    assert api("PUT", f"/api/v1/users/{user['id']}/preferences", {"quiet_hours": window}).status == 200
    pipeline.drain_sender()
    # Then the engine held it (scheduled until the window ends), and the timeline says so
    row = pipeline.row(nid)
    assert row["status"] == "scheduled" and row["held_until"] == row["next_attempt_at"]
    entries = api("GET", f"/api/v1/notifications/{nid}/timeline").json["entries"]
    assert [e["kind"] for e in entries] == ["created", "queued", "held"]
    assert datetime.fromisoformat(entries[-1]["detail"]["until"]) > now + timedelta(minutes=59)
