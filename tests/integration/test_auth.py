from __future__ import annotations

import hashlib
import json

import psycopg
import pytest

from notify_core import cli

from .conftest import ServiceEnv, Tenant

EMAIL = {"channel": "email", "payload": {"to": "a@example.com", "subject": "s", "body": "b"}}


def test_missing_unknown_and_malformed_keys_are_401(make_api, tenant: Tenant) -> None:
    for key in (None, "nk_nope", "x"):
        reply = make_api(key)("GET", "/api/v1/notifications")
        assert reply.status == 401 and reply.error["code"] == "unauthorized"
    # 401 comes before body validation: an anonymous caller learns nothing about the schema
    anonymous = make_api(None)("POST", "/api/v1/notifications", {"bogus": 1})
    assert anonymous.status == 401


def test_bearer_and_x_api_key_both_work(make_api, tenant: Tenant) -> None:
    api = make_api(None)
    assert (
        api("GET", "/api/v1/notifications", headers={"Authorization": f"Bearer {tenant.key}"}).status == 200
    )
    assert api("GET", "/api/v1/notifications", headers={"x-api-key": tenant.key}).status == 200


def test_health_needs_no_key(make_api, test_env: ServiceEnv) -> None:
    reply = make_api(None)("GET", "/health", query={"deep": "1"})
    assert reply.status == 200, reply.raw
    assert reply.json["checks"] == {"postgres": "ok", "redis": "ok", "sqs": "ok"}
    swagger = make_api(None)("GET", "/swagger", query={"format": "json"})
    assert swagger.status == 200
    paths = json.loads(swagger.raw)["paths"]
    assert "/api/v1/notifications/batch" in paths and "/api/v1/users/{id}" in paths


def test_deep_health_says_which_dependency_is_down(make_api, settings_env) -> None:
    settings_env(REDIS_URL="redis://127.0.0.1:9/0")  # nothing listens there
    reply = make_api(None)("GET", "/health", query={"deep": "1"})
    assert reply.status == 503, reply.raw
    assert reply.error["code"] == "service_unavailable"
    ((detail),) = reply.error["details"]
    assert detail["field"] == "checks.redis" and detail["message"].startswith("error: ")
    checks = reply.json["checks"]
    assert (checks["postgres"], checks["sqs"]) == ("ok", "ok") and checks["redis"] == detail["message"]


def test_cli_refuses_a_key_for_a_tenant_that_does_not_exist(
    capsys: pytest.CaptureFixture[str], test_env: ServiceEnv
) -> None:
    missing = "00000000-0000-4000-8000-000000000001"
    assert cli.main(["create-key", missing, "--name", "ci", "--scopes", "notifications:read"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"tenant {missing} does not exist" in captured.err


def test_scopes_are_enforced(make_tenant, make_api) -> None:
    reader = make_api(make_tenant(scopes=("notifications:read",)).key)
    assert reader("GET", "/api/v1/notifications").status == 200
    denied = reader("POST", "/api/v1/notifications", EMAIL)
    assert denied.status == 403 and denied.error["code"] == "forbidden"
    assert reader("POST", "/api/v1/users", {"email": "a@example.com"}).status == 403


def test_key_is_stored_only_as_a_hash(tenant: Tenant, test_env: ServiceEnv) -> None:
    with psycopg.connect(test_env.database_url) as conn:
        row = conn.execute("SELECT * FROM api_keys WHERE prefix = %s", (tenant.prefix,)).fetchone()
    assert row is not None
    assert bytes(row[4]) == hashlib.sha256(tenant.key.encode()).digest()
    assert all(tenant.key not in str(value) for value in row)
    assert tenant.key.startswith(tenant.prefix + "_")


def test_cli_creates_lists_and_revokes_keys(
    capsys: pytest.CaptureFixture[str], make_api, test_env: ServiceEnv
) -> None:
    assert cli.main(["create-tenant", "cli-co"]) == 0
    tenant_id = capsys.readouterr().out.strip()
    assert cli.main(["create-key", tenant_id, "--name", "ci", "--scopes", "notifications:read"]) == 0
    issued = json.loads(capsys.readouterr().out)
    api = make_api(issued["key"])
    assert api("GET", "/api/v1/notifications").status == 200

    assert cli.main(["list-keys", tenant_id]) == 0
    listed = capsys.readouterr().out
    assert issued["prefix"] in listed and issued["key"] not in listed

    assert cli.main(["revoke-key", issued["prefix"]]) == 0
    capsys.readouterr()
    revoked = api("GET", "/api/v1/notifications")
    assert revoked.status == 401
    assert cli.main(["revoke-key", issued["prefix"]]) == 1  # already revoked
    assert cli.main(["create-key", tenant_id, "--scopes", "everything"]) == 2  # unknown scope


def test_cli_migrate_is_idempotent(capsys: pytest.CaptureFixture[str], test_env: ServiceEnv) -> None:
    assert cli.main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_failed_authentications_are_throttled_per_source_address(
    make_api, tenant: Tenant, settings_env, test_env: ServiceEnv
) -> None:
    # Given a budget of 3 failed authentications per address
    settings_env(AUTH_FAILURE_LIMIT="3", AUTH_FAILURE_WINDOW_SECONDS="60")
    attacker = make_api("nk_random_guess")
    statuses = [attacker("GET", "/api/v1/notifications").status for _ in range(3)]
    assert statuses == [401, 401, 401]

    # When the same address tries again, even with a valid key that needs a lookup
    blocked = attacker("GET", "/api/v1/notifications")
    with_valid_key = attacker("GET", "/api/v1/notifications", key=tenant.key)

    # Then it is refused before any key lookup, with Retry-After
    for reply in (blocked, with_valid_key):
        assert reply.status == 429 and reply.error["code"] == "rate_limited", reply.raw
        assert int(reply.headers["Retry-After"]) >= 1
    # and another address is not affected
    assert make_api(tenant.key)("GET", "/api/v1/notifications").status == 200
    assert make_api("nk_other_guess")("GET", "/api/v1/notifications").status == 401


def test_failed_authentication_throttle_fails_open_without_redis(make_api, settings_env) -> None:
    settings_env(AUTH_FAILURE_LIMIT="1", REDIS_URL="redis://127.0.0.1:1/0")
    guesser = make_api("nk_random_guess")
    assert [guesser("GET", "/api/v1/notifications").status for _ in range(3)] == [401, 401, 401]


def test_a_flood_of_unknown_keys_does_not_push_known_keys_out_of_the_cache(
    make_api, tenant: Tenant, settings_env
) -> None:
    from notify_core import auth

    # Given the key cache on, and a known key in it
    settings_env(API_KEY_CACHE_SECONDS="60", AUTH_FAILURE_LIMIT="100000")
    assert make_api(tenant.key)("GET", "/api/v1/notifications").status == 200
    known = auth.hash_key(tenant.key)
    assert known in auth._cache

    # When more unknown keys than the cache of misses holds are tried
    for i in range(auth._misses.capacity + 50):
        with pytest.raises(auth.Unauthorized):
            auth.authenticate(f"nk_flood_{i}")

    # Then the misses cycled in their own bounded cache and the known key is still cached
    assert len(auth._misses) == auth._misses.capacity
    assert known in auth._cache
