"""Tenant isolation and scopes, over the route table itself, so that every route — present and
future — is covered: a route this file does not know how to exercise fails the suite until it is
taught (add a factory for its resource, and a body if it takes one).

- every route that needs a key answers 403 to a key with every scope but its own;
- every route with an id in its path answers another tenant's id exactly as a missing one (404),
  and leaves that tenant's resource as it was;
- every list and stats route shows a fresh tenant none of another tenant's rows (lists empty,
  counts zero), while the owner sees exactly its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notify_core import auth, dead_letters
from notify_core.db import transaction
from notify_local.lambda_env import load_module

from .conftest import EMAIL, Api, Tenant

ROUTES = load_module("functions/api/", "app").routes.specs
KEYED = [spec for spec in ROUTES if spec.gate.scope is not None]


def resource(path: str) -> str:
    """The resource a route belongs to: the path segment after /api/v1/."""
    return path.split("/")[3]


# ---------------------------------------------------------------- how to make one of each resource


def _user(api: Api) -> dict[str, str]:
    reply = api("POST", "/api/v1/users", {"email": "owner@example.com", "external_id": "owner-1"})
    assert reply.status == 201, reply.raw
    return {"id": reply.json["id"]}


def _notification(api: Api) -> dict[str, str]:
    reply = api("POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL})
    assert reply.status == 202, reply.raw
    return {"id": reply.json["id"]}


def _dead_letter(api: Api) -> dict[str, str]:
    nid = _notification(api)["id"]
    with transaction() as conn:
        conn.execute("UPDATE notifications SET status = 'failed', failed_at = now() WHERE id = %s", (nid,))
        dead_letters.record_dead_letters(conn, [(nid, "permanent_error", "http_400: refused")])
        (row,) = conn.execute("SELECT id FROM notification_dlq WHERE notification_id = %s", (nid,)).fetchall()
    return {"id": str(row["id"]), "notification_id": nid}


TEMPLATE = {
    "name": "Owner's template",
    "variants": [
        {"channel": "email", "locale": "en", "subject": "Hi {{ name }}", "body": "Hello {{ name }}"}
    ],
}


def _template(api: Api) -> dict[str, str]:
    reply = api("POST", "/api/v1/templates", {"key": "owner-template", **TEMPLATE})
    assert reply.status == 201, reply.raw
    return {"key": "owner-template"}


def _message(api: Api) -> dict[str, str]:
    user = api("POST", "/api/v1/users", {"email": "reader@example.com"}).json["id"]
    api("POST", "/api/v1/templates", {"key": "owner-message", **TEMPLATE})
    reply = api(
        "POST",
        "/api/v1/messages",
        {"to": [user], "template": "owner-message", "data": {"name": "Ada"}, "channels": ["email"]},
    )
    assert reply.status == 202, reply.raw
    notification = reply.json["notifications"][0]["id"]
    return {"id": reply.json["id"], "user": user, "notification": notification, "template": "owner-message"}


def _suppression(api: Api) -> dict[str, str]:
    reply = api(
        "POST",
        "/api/v1/suppressions",
        {"channel": "email", "address": "gone@example.com", "reason": "manual"},
    )
    assert reply.status == 201, reply.raw
    return {"id": reply.json["id"]}


def _webhook(api: Api) -> dict[str, str]:
    reply = api(
        "POST",
        "/api/v1/webhooks",
        {"url": "http://127.0.0.1:9/hooks", "events": ["notification.sent"], "description": "owner"},
    )
    assert reply.status == 201, reply.raw
    wid = reply.json["id"]
    assert api("POST", f"/api/v1/webhooks/{wid}/test").status == 202
    (delivery,) = api("GET", f"/api/v1/webhooks/{wid}/deliveries").json["data"]
    return {"id": wid, "delivery_id": delivery["id"]}


def _provider_config(api: Api) -> dict[str, str]:
    reply = api(
        "POST",
        "/api/v1/provider-configs",
        {
            "channel": "email",
            "provider": "sendgrid",
            "priority": 10,
            "credentials": {"api_key": "SG.owner-credentials"},
            "settings": {"default_from": "owner@example.com"},
        },
    )
    assert reply.status == 201, reply.raw
    return {"id": reply.json["id"]}


def _api_key(api: Api) -> dict[str, str]:
    reply = api("POST", "/api/v1/api-keys", {"name": "owner-ci", "scopes": ["notifications:read"]})
    assert reply.status == 201, reply.raw
    return {"id": reply.json["id"]}


FACTORIES: dict[str, Callable[[Api], dict[str, str]]] = {
    "users": _user,
    "notifications": _notification,
    "dlq": _dead_letter,
    "templates": _template,
    "messages": _message,
    "suppressions": _suppression,
    "webhooks": _webhook,
    "provider-configs": _provider_config,
    "api-keys": _api_key,
}

# A valid body for each route that takes one and has an id in its path: so that the call reaches
# the tenant check instead of stopping at validation.
BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/api/v1/users/<id>"): {"username": "someone-else"},
    ("PUT", "/api/v1/users/<id>/preferences"): {"channels": {"sms": False}},
    ("PATCH", "/api/v1/users/<id>/preferences"): {"channels": {"sms": False}},
    ("PUT", "/api/v1/templates/<key>"): TEMPLATE,
    ("POST", "/api/v1/templates/<key>/preview"): {"channel": "email", "data": {"name": "Eve"}},
    ("PATCH", "/api/v1/webhooks/<id>"): {"description": "taken over"},
    ("PATCH", "/api/v1/provider-configs/<id>"): {"priority": 1},
}


def test_every_keyed_route_is_known_to_this_file() -> None:
    unknown = sorted({resource(s.path) for s in KEYED if "<" in s.path} - set(FACTORIES))
    assert unknown == [], f"teach test_isolation.py to make these resources: {unknown}"
    missing = [
        f"{s.method} {s.path}"
        for s in KEYED
        if "<" in s.path and s.gate.takes_body and (s.method, s.path) not in BODIES
    ]
    assert missing == [], f"give test_isolation.py a valid body for: {missing}"


# ---------------------------------------------------------------- scopes


SCOPED = [spec for spec in KEYED if spec.gate.scope != auth.ANY_SCOPE]  # whoami: any valid key


@pytest.mark.parametrize("spec", SCOPED, ids=[f"{s.method} {s.path}" for s in SCOPED])
def test_a_key_without_the_routes_scope_is_refused(spec: Any, make_tenant: Any, make_api: Any) -> None:
    others = tuple(s for s in auth.SCOPES if s != spec.gate.scope)
    caller = make_api(make_tenant(scopes=others).key)
    path = re.sub(r"<\w*id>", "00000000-0000-4000-8000-000000000000", spec.path).replace("<key>", "some-key")
    reply = caller(
        spec.method, path, BODIES.get((spec.method, spec.path), {}) if spec.gate.takes_body else None
    )
    assert reply.status == 403, reply.raw
    assert reply.error["code"] == "forbidden"


# ---------------------------------------------------------------- another tenant's ids


@pytest.fixture
def owner(
    make_tenant: Callable[..., Tenant], make_api: Callable[..., Api], settings_env: Any
) -> tuple[Api, dict[str, dict[str, str]]]:
    settings_env(WEBHOOK_ALLOW_PRIVATE_TARGETS="true")  # a loopback endpoint, as the local runtime allows
    api = make_api(make_tenant("owner").key)
    return api, {name: factory(api) for name, factory in FACTORIES.items()}


_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
# Queries that make a read repeatable (the metrics' window otherwise ends at the time of the read).
QUERIES = {
    "/api/v1/metrics": {
        "from": (_HOUR - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "to": (_HOUR + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
}


def snapshot(api: Api, made: dict[str, dict[str, str]]) -> dict[str, Any]:
    """What the owner sees of its resources: every keyed GET route, with its ids filled in."""
    seen: dict[str, Any] = {}
    for spec in KEYED:
        if spec.method != "GET":
            continue
        ids = made.get(resource(spec.path), {}) if "<" in spec.path else {}
        path = spec.path
        for name, value in ids.items():
            path = path.replace(f"<{name}>", value)
        reply = api("GET", path, query=QUERIES.get(spec.path))
        seen[f"GET {spec.path}"] = (reply.status, _stable(reply.json))
    return seen


def _stable(body: Any) -> Any:
    """A reply without what changes by itself between two reads (ages, timestamps of reads)."""
    if isinstance(body, dict):
        return {k: _stable(v) for k, v in body.items() if k not in ("oldest_age_seconds",)}
    if isinstance(body, list):
        return [_stable(v) for v in body]
    return body


ID_ROUTES = [s for s in KEYED if "<" in s.path]


def test_another_tenants_ids_are_answered_as_missing_and_left_alone(
    owner: tuple[Api, dict[str, dict[str, str]]], make_tenant: Any, make_api: Any
) -> None:
    api, made = owner
    before = snapshot(api, made)
    stranger = make_api(make_tenant("stranger").key)
    answers = {}
    for spec in ID_ROUTES:
        path = spec.path
        for name, value in made[resource(spec.path)].items():
            path = path.replace(f"<{name}>", value)
        body = BODIES.get((spec.method, spec.path)) if spec.gate.takes_body else None
        reply = stranger(spec.method, path, body)
        answers[f"{spec.method} {spec.path}"] = (
            reply.status,
            reply.json["error"]["code"] if reply.raw else None,
        )
    assert answers == {f"{s.method} {s.path}": (404, "not_found") for s in ID_ROUTES}
    assert snapshot(api, made) == before


def _prefix(api: Api) -> str:
    assert api.key is not None
    return "_".join(api.key.split("_")[:2])


def _row_is_own(row: dict[str, Any], owned: set[str], prefix: str) -> bool:
    """A listed row belongs to the caller: one of the resources it made, its own key, or an audit
    event its key wrote about one of them."""
    if row.get("prefix") == prefix:  # the caller's own API key
        return True
    if "actor" in row and "target" in row:  # an audit event
        return row["actor"].get("prefix") == prefix and row["target"].get("id") in owned
    return row.get("id", row.get("key")) in owned


def test_lists_and_stats_show_a_fresh_tenant_nothing_of_others(
    owner: tuple[Api, dict[str, dict[str, str]]], make_tenant: Any, make_api: Any
) -> None:
    api, made = owner
    owned = {value for ids in made.values() for value in ids.values()}
    stranger = make_api(make_tenant("stranger").key)
    for spec in KEYED:
        if spec.method != "GET" or "<" in spec.path:
            continue
        mine, theirs = api("GET", spec.path), stranger("GET", spec.path)
        assert mine.status == theirs.status == 200, (spec.path, mine.raw, theirs.raw)
        assert not any(value in theirs.raw for value in owned), (spec.path, theirs.raw)
        body = theirs.json
        if "data" in body:  # a list: a fresh tenant has none but its own key; the owner only its own
            assert [r for r in body["data"] if r.get("prefix") != _prefix(stranger)] == [], spec.path
            assert all(_row_is_own(row, owned, _prefix(api)) for row in mine.json["data"]), spec.path
        if "total" in body:  # counts
            assert body["total"] == 0, spec.path
            assert mine.json["total"] == 1, spec.path


def test_a_notification_cannot_point_at_another_tenants_user(
    owner: tuple[Api, dict[str, dict[str, str]]], make_tenant: Any, make_api: Any
) -> None:
    _, made = owner
    stranger = make_api(make_tenant("stranger").key)
    reply = stranger(
        "POST",
        "/api/v1/notifications",
        {"channel": "email", "user_id": made["users"]["id"], "payload": {"subject": "s", "body": "b"}},
    )
    assert reply.status == 422, reply.raw
    assert reply.error["details"] == [{"field": "user_id", "message": "no user with this id"}]
    assert json.loads(reply.raw)["error"]["code"] == "validation_error"
