"""The audience's engine steps over real services: API → SQS → sender (the real SendGrid and Twilio
SDKs against the stub) → PostgreSQL. One-click unsubscribe from the header the stub received; a
later opt-out, a suppression and quiet hours decided by the sender; and the statements a batch of
10 and a batch of 100 issue (the same number)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from notify_core.audience import unsubscribe
from notify_core.config import get_settings
from notify_core.delivery import Deadline, Deps, Incoming, deliver
from notify_core.delivery.store import PgStore
from notify_core.queue import QueueMessage
from notify_local.lambda_env import LambdaContext, load_handler, rest_event

from .conftest import Api, Pipeline, Tenant
from .statements import recorded
from .test_audience import category, prefs
from .test_templates import user

EMAIL = {"subject": "Your order", "body": "Shipped", "from": "ops@example.com"}


def send_email(api: Api, uid: str, category_key: str | None = None) -> str:
    body: dict[str, Any] = {"user_id": uid, "channel": "email", "payload": EMAIL}
    if category_key:
        body["category"] = category_key
    reply = api("POST", "/api/v1/notifications", body)
    assert reply.status == 202, reply.raw
    return str(reply.json["id"])


def link_of(pipeline: Pipeline) -> tuple[str, dict[str, str]]:
    (mail,) = pipeline.stub.requests("sendgrid")
    headers = mail.body.get("headers") or {}
    url = headers.get("List-Unsubscribe", "").strip("<>")
    return url.removeprefix(get_settings().public_base_url), headers


def browser(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    handler = load_handler("functions/api/", "app.handler")
    headers = {"Accept": "text/html,application/xhtml+xml"}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    reply = handler(
        rest_event(method, path, headers=headers, body=body), LambdaContext("ApiFunction", 512, 25)
    )
    reply["headers"] = {k: v[-1] for k, v in (reply.get("multiValueHeaders") or {}).items()}
    return reply


def test_one_click_unsubscribe_from_the_sent_header(api: Api, pipeline: Pipeline, tenant: Tenant) -> None:
    # Given a non-critical email sent through the real SendGrid SDK
    category(api, "orders")
    category(api, "security", critical=True)
    uid = user(api)
    send_email(api, uid, "orders")
    pipeline.drain_sender()
    path, headers = link_of(pipeline)
    # Then it carried RFC 8058's headers, the link on PUBLIC_BASE_URL
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert path.startswith("/u/") and headers["List-Unsubscribe"].startswith(
        f"<{get_settings().public_base_url}/u/"
    )
    # A browser sees a page with the one-click form, under a strict CSP, nothing loaded from elsewhere
    page = browser("GET", path)
    assert page["statusCode"] == 200 and page["headers"]["Content-Type"].startswith("text/html")
    assert '<form method="post">' in page["body"] and "http" not in page["body"].split("<body>")[1]
    policy = page["headers"]["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "form-action 'self'" in policy
    # An API client gets JSON; nothing has changed yet
    shown = api("GET", path, key=None)
    assert shown.json == {"done": False, "scope": "category", "category": "orders", "email": None}
    assert api("GET", f"/api/v1/users/{uid}/preferences").json["categories"] == {}
    # When the mail client posts the one-click form (no API key)
    done = api(
        "POST",
        path,
        raw="List-Unsubscribe=One-Click",
        key=None,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status == 200 and done.json["done"] is True
    assert api("POST", path, key=None).status == 200  # idempotent
    # Then orders are off on email for that user, audited as the system
    assert api("GET", f"/api/v1/users/{uid}/preferences").json["categories"] == {
        "orders": {"enabled": None, "channels": {"email": False}}
    }
    assert (
        api(
            "POST",
            "/api/v1/notifications",
            {"user_id": uid, "channel": "email", "payload": EMAIL, "category": "orders"},
        ).status
        == 422
    )
    # and a critical email carries no unsubscribe link
    pipeline.stub.reset()
    send_email(api, uid, "security")
    pipeline.drain_sender()
    assert "List-Unsubscribe" not in link_of(pipeline)[1]


def test_unsubscribe_without_a_user_suppresses_the_address(api: Api, pipeline: Pipeline) -> None:
    reply = api(
        "POST", "/api/v1/notifications", {"channel": "email", "payload": {**EMAIL, "to": "Zed@example.com"}}
    )
    assert reply.status == 202
    pipeline.drain_sender()
    path, _ = link_of(pipeline)
    page = browser("POST", path, "List-Unsubscribe=One-Click")
    assert page["statusCode"] == 200 and "Unsubscribed" in page["body"]
    (row,) = api("GET", "/api/v1/suppressions", query={"address": "zed@example.com"}).json["data"]
    assert (row["reason"], row["note"]) == ("unsubscribe", "one-click")


def test_forged_damaged_and_expired_links_are_a_clear_404(api: Api, tenant: Tenant) -> None:
    key = get_settings().unsubscribe_key()
    claims = unsubscribe.Claims(tenant.id, None, "a@example.com", None, int(time.time()) + 60)
    good = unsubscribe.sign(claims, key)
    expired = unsubscribe.sign(unsubscribe.Claims(tenant.id, None, "a@example.com", None, 1), key)
    forged = unsubscribe.sign(claims, b"another key entirely, not ours")
    for token, message in (
        (expired, "this unsubscribe link has expired"),
        (forged, "this unsubscribe link is not valid"),
        (good[:-3] + "AAA", "this unsubscribe link is not valid"),
        ("x" * 3000, "this unsubscribe link is not valid"),
        ("not-a-token", "this unsubscribe link is not valid"),
    ):
        for method in ("GET", "POST"):
            reply = api(method, f"/u/{token}", key=None)
            assert (reply.status, reply.error["code"], reply.error["message"]) == (404, "not_found", message)
    page = browser("GET", f"/u/{expired}")
    assert page["statusCode"] == 404 and "expired" in page["body"]
    assert page["headers"]["Content-Type"].startswith("text/html")
    assert api("GET", "/api/v1/suppressions").json["data"] == []  # nothing happened


def test_a_later_opt_out_and_a_suppression_end_suppressed_at_send(api: Api, pipeline: Pipeline) -> None:
    category(api, "orders")
    category(api, "security", critical=True)
    uid = user(api)
    bob = user(api, email="bob@example.com", phone="+14155550111")
    opted = send_email(api, uid, "orders")
    critical = send_email(api, bob, "security")
    unsubscribed = send_email(api, bob, "orders")
    sms = api(
        "POST", "/api/v1/notifications", {"user_id": bob, "channel": "sms", "payload": {"body": "hi"}}
    ).json["id"]
    # after ingest: Ada turns orders off on email; Bob's phone sends STOP and he unsubscribes by email
    prefs(api, uid, {"categories": {"orders": {"channels": {"email": False}}}})
    api("POST", "/api/v1/suppressions", {"channel": "sms", "address": "+14155550111", "reason": "sms_stop"})
    api(
        "POST",
        "/api/v1/suppressions",
        {"channel": "email", "address": "bob@example.com", "reason": "unsubscribe"},
    )
    pipeline.drain_sender()

    def outcome(nid: str) -> tuple[str, str | None]:
        row = pipeline.row(nid)
        return row["status"], row["last_error"]

    assert outcome(opted) == ("suppressed", "preference: the user turned off orders on email")
    assert outcome(sms) == ("suppressed", "sms_stop: the address is suppressed")
    assert outcome(unsubscribed) == ("suppressed", "unsubscribe: the address is suppressed")
    assert outcome(critical) == ("sent", None)  # a critical category passes an unsubscribe
    assert len(pipeline.stub.requests("sendgrid")) == 1 and pipeline.stub.requests("twilio") == []


def test_quiet_hours_hold_a_send_until_the_window_ends(api: Api, pipeline: Pipeline) -> None:
    uid = user(api, timezone="America/New_York")
    nid = send_email(api, uid)
    # after ingest, quiet hours start that cover now (in New York)
    local = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    start, end = (
        (local - timedelta(minutes=30)).strftime("%H:%M"),
        (local + timedelta(hours=3)).strftime("%H:%M"),
    )
    prefs(api, uid, {"quiet_hours": {"start": start, "end": end}})
    pipeline.drain_sender()
    row = pipeline.row(nid)
    assert row["status"] == "scheduled" and row["attempt_count"] == 0 and row["attempts"] == []
    assert timedelta(hours=2, minutes=58) < row["next_attempt_at"] - datetime.now(UTC) <= timedelta(hours=3)
    assert pipeline.stub.requests("sendgrid") == []
    # when the window has ended, the sweeper puts it back and it is sent
    prefs(api, uid, {})
    pipeline.only([nid])
    pipeline.sql("UPDATE notifications SET next_attempt_at = now() WHERE id = %s", nid)
    sweeper = load_handler("functions/retry_sweeper/", "app.handler")
    sweeper({"source": "aws.events"}, LambdaContext("RetrySweeperFunction", 512, 55))
    pipeline.drain_sender()
    assert pipeline.row(nid)["status"] == "sent"


def _batch(api: Api, tenant: Tenant, n: int) -> list[Incoming]:
    """n rows of every kind the audience steps decide: sent, held, suppressed (preference and address)."""
    ids = []
    for i in range(n):
        kind = i % 4
        uid = user(api, email=f"u{uuid.uuid4().hex[:8]}@example.com", timezone="Europe/Berlin")
        body = {
            "user_id": uid,
            "channel": "email",
            "provider": "console",
            "payload": EMAIL,
            "category": "orders",
        }
        reply = api("POST", "/api/v1/notifications", body)
        assert reply.status == 202, reply.raw
        ids.append(reply.json["id"])
        if kind == 1:  # quiet hours that began after ingest
            local = datetime.now(UTC).astimezone(ZoneInfo("Europe/Berlin"))
            window = {
                "start": (local - timedelta(hours=1)).strftime("%H:%M"),
                "end": (local + timedelta(hours=2)).strftime("%H:%M"),
            }
            prefs(api, uid, {"quiet_hours": window})
        if kind == 2:
            prefs(api, uid, {"categories": {"orders": {"enabled": False}}})
        if kind == 3:
            email = api("GET", f"/api/v1/users/{uid}").json["email"]
            api("POST", "/api/v1/suppressions", {"channel": "email", "address": email, "reason": "complaint"})
    return [
        Incoming(f"m{i}", QueueMessage(id=uuid.UUID(nid), tenant_id=tenant.id)) for i, nid in enumerate(ids)
    ]


def test_a_batch_of_10_and_a_batch_of_100_issue_the_same_statements(
    api: Api, tenant: Tenant, pipeline: Pipeline, settings_env: Any
) -> None:
    # One flush per batch (outcomes are otherwise written in groups as sends finish); the tenant's
    # routes read for every batch, not from the container's route cache
    settings_env(OUTCOME_FLUSH_MS="5000", PROVIDER_ROUTE_CACHE_SECONDS="0")
    category(api, "orders")
    counts: dict[int, tuple[int, int]] = {}
    for n in (10, 100):
        batch = _batch(api, tenant, n)
        pipeline.only([str(i.message.id) for i in batch])
        store = PgStore()
        spans: list[tuple[int, int]] = []
        with recorded() as statements:
            original = store.prefetch

            def prefetch(
                rows: Any, original: Any = original, statements: Any = statements, spans: Any = spans
            ) -> Any:
                before = len(statements)
                out = original(rows)
                spans.append((before, len(statements)))
                return out

            store.prefetch = prefetch
            deps = Deps.production()
            deps.store = store
            report = deliver(batch, Deadline(25_000), deps)
        kinds = sorted({o.kind for o in report.outcomes.values()})
        assert kinds == ["held", "sent", "suppressed"], kinds
        ((start, end),) = spans
        reads = statements[start:end]
        # what the audience steps read (categories, users' preferences and quiet hours, suppressions)
        # and the routing step (the tenant's provider routes), in one transaction
        assert len(reads) == 4 and all(r.lstrip().startswith("SELECT") for r in reads), reads
        counts[n] = (len(statements), len(reads))
    # the same number of statements for the whole batch, whatever its size
    assert counts[10] == counts[100], counts
