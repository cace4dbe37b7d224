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
