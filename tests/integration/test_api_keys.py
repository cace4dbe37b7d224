"""API keys over HTTP: shown once, scopes and rate limit at most the creator's, listed without secrets,
revoked at once here and within API_KEY_CACHE_SECONDS in other containers, last use kept cheaply."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core import auth
from notify_core.errors import Unauthorized
from notify_local.sandbox import Sandbox

from .conftest import Api, Tenant

pytestmark = pytest.mark.integration

PATH = "/api/v1/api-keys"


def sql(test_env: Sandbox, statement: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(test_env.database_url, row_factory=dict_row) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def test_a_new_key_is_shown_once_and_works_with_its_scopes_only(
    api: Api, make_api: Callable[..., Api]
) -> None:
    reply = api("POST", PATH, {"name": "reader", "scopes": ["notifications:read"]})
    assert reply.status == 201, reply.raw
    created = reply.json
    assert created["key"].startswith(created["prefix"] + "_") and created["scopes"] == ["notifications:read"]
    new = make_api(created["key"])
    assert new("GET", "/api/v1/notifications").status == 200
    assert new("POST", "/api/v1/users", {"email": "a@example.com"}).status == 403
    listed = api("GET", PATH)
    assert created["key"] not in listed.raw and "key_hash" not in listed.raw
    mine = next(k for k in listed.json["data"] if k["id"] == created["id"])
    assert set(mine) == {
        "id",
        "name",
        "prefix",
        "scopes",
        "rate_limit",
        "created_at",
        "last_used_at",
        "revoked_at",
    }
    assert mine["last_used_at"] is not None  # it was just used


def test_a_key_cannot_grant_more_than_it_holds(
    make_tenant: Callable[..., Tenant], make_api: Callable[..., Api]
) -> None:
    api = make_api(make_tenant(scopes=("keys:admin", "notifications:read"), rate_limit=50).key)
    wider = api("POST", PATH, {"name": "x", "scopes": ["notifications:read", "notifications:write"]})
    assert wider.status == 403 and wider.error["details"] == [
        {"field": "scopes", "message": "not held by the creating key: notifications:write"}
    ]
    assert api("POST", PATH, {"name": "x", "scopes": ["notifications:read"], "rate_limit": 51}).status == 403
    unknown = api("POST", PATH, {"name": "x", "scopes": ["root"]})
    assert unknown.status == 422 and unknown.error["details"][0]["field"] == "scopes"
    assert api("POST", PATH, {"name": "x", "scopes": []}).status == 422
    assert api("POST", PATH, {"name": "", "scopes": ["notifications:read"]}).status == 422
    assert api("POST", PATH, {"name": "x", "scopes": ["notifications:read"], "rate_limit": 50}).status == 201
    assert len(api("GET", PATH).json["data"]) == 2  # the creator and the one allowed


def test_revocation_is_immediate_here(api: Api, make_api: Callable[..., Api]) -> None:
    created = api("POST", PATH, {"name": "temp", "scopes": ["notifications:read"]}).json
    temp = make_api(created["key"])
    assert temp("GET", "/api/v1/notifications").status == 200
    assert api("DELETE", f"{PATH}/{created['id']}").status == 204
    assert temp("GET", "/api/v1/notifications").status == 401
    assert api("DELETE", f"{PATH}/{created['id']}").status == 204  # already revoked: still revoked
    assert created["id"] not in [k["id"] for k in api("GET", PATH).json["data"]]
    revoked = [
        k for k in api("GET", PATH, query={"revoked": "true"}).json["data"] if k["id"] == created["id"]
    ]
    assert revoked and revoked[0]["revoked_at"] is not None
    assert api("DELETE", f"{PATH}/{uuid.uuid4()}").status == 404


def test_other_containers_stop_accepting_a_revoked_key_within_the_cache_time(
    api: Api, test_env: Sandbox, settings_env: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_env(API_KEY_CACHE_SECONDS="5")
    key = api("POST", PATH, {"name": "cached", "scopes": ["notifications:read"]}).json["key"]
    assert auth.authenticate(key).scopes == frozenset({"notifications:read"})  # now cached here
    # Given another container revokes it (this one's cache is not told)
    sql(test_env, "UPDATE api_keys SET revoked_at = now() WHERE key_hash = %s", auth.hash_key(key))
    assert auth.authenticate(key)  # still cached: at most API_KEY_CACHE_SECONDS
    later = time.monotonic() + 5.01
    monkeypatch.setattr(auth.time, "monotonic", lambda: later)
    with pytest.raises(Unauthorized):
        auth.authenticate(key)


def test_last_use_is_written_at_most_once_a_minute(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    def last_used() -> Any:
        return sql(test_env, "SELECT last_used_at FROM api_keys WHERE prefix = %s", tenant.prefix)[0][
            "last_used_at"
        ]

    api("GET", "/api/v1/notifications")
    sql(
        test_env,
        "UPDATE api_keys SET last_used_at = now() - interval '30 seconds' WHERE prefix = %s",
        tenant.prefix,
    )
    before = last_used()
    api("GET", "/api/v1/notifications")
    assert last_used() == before  # within the minute: not written again
    sql(
        test_env,
        "UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE prefix = %s",
        tenant.prefix,
    )
    stale = last_used()
    api("GET", "/api/v1/notifications")
    assert last_used() > stale


def test_an_idempotent_create_replays_without_the_key(api: Api) -> None:
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    body = {"name": "ci", "scopes": ["notifications:write"]}
    first, again = api("POST", PATH, body, headers=headers), api("POST", PATH, body, headers=headers)
    assert (first.status, again.status) == (201, 200)
    assert first.json["key"] and again.json["key"] is None and again.json["id"] == first.json["id"]
    assert [k["name"] for k in api("GET", PATH).json["data"]].count("ci") == 1


def test_key_changes_are_audited_without_the_key(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    created = api("POST", PATH, {"name": "audited", "scopes": ["notifications:read"]})
    request_id = api.last_request_id
    api("DELETE", f"{PATH}/{created.json['id']}")
    events = sql(
        test_env,
        "SELECT * FROM audit_events WHERE tenant_id = %s AND target_id = %s ORDER BY created_at",
        tenant.id,
        created.json["id"],
    )
    assert [(e["action"], e["actor_prefix"]) for e in events] == [
        ("api_key.create", tenant.prefix),
        ("api_key.revoke", tenant.prefix),
    ]
    assert events[0]["request_id"] == request_id
    assert events[0]["changes"]["scopes"] == ["notifications:read"]
    assert created.json["key"] not in json.dumps([e["changes"] for e in events])


def test_another_tenants_keys_are_invisible(
    api: Api, make_tenant: Callable[..., Tenant], make_api: Callable[..., Api]
) -> None:
    created = api("POST", PATH, {"name": "mine", "scopes": ["notifications:read"]}).json
    other = make_api(make_tenant("other").key)
    assert other("DELETE", f"{PATH}/{created['id']}").status == 404
    assert created["id"] not in [k["id"] for k in other("GET", PATH).json["data"]]
