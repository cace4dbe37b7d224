"""Provider configs over HTTP: credentials written to Secrets Manager (the local emulator) and never
returned or audited, each provider's declared needs checked when saved, priorities unique among a
channel's active configs, and nothing half-saved when Secrets Manager or the database fails."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core import provider_configs
from notify_local.sandbox import Sandbox

from .conftest import Api, Tenant

pytestmark = pytest.mark.integration

API_KEY = "SG.super-secret-value-" + uuid.uuid4().hex
SENDGRID = {
    "channel": "email",
    "provider": "sendgrid",
    "priority": 10,
    "credentials": {"api_key": API_KEY},
    "settings": {"default_from": "ops@example.com"},
}
PATH = "/api/v1/provider-configs"


def secrets(test_env: Sandbox) -> Any:
    import boto3

    return boto3.client("secretsmanager", endpoint_url=test_env.sqs_endpoint, region_name="us-east-1")


def tenant_secrets(test_env: Sandbox, tenant_id: uuid.UUID) -> list[str]:
    prefix = provider_configs.secret_name(tenant_id, uuid.UUID(int=0)).rsplit("/", 1)[0] + "/"
    pages = (
        secrets(test_env)
        .get_paginator("list_secrets")
        .paginate(Filters=[{"Key": "name", "Values": [prefix]}])
    )
    return [s["Name"] for page in pages for s in page["SecretList"] if s["Name"].startswith(prefix)]


def row(test_env: Sandbox, config_id: str) -> dict[str, Any] | None:
    with psycopg.connect(test_env.database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM provider_configs WHERE id = %s", (config_id,)).fetchone()


def audit_rows(test_env: Sandbox, tenant_id: uuid.UUID) -> list[dict[str, Any]]:
    with psycopg.connect(test_env.database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM audit_events WHERE tenant_id = %s AND target_type = 'provider_config' ORDER BY created_at",
            (tenant_id,),
        ).fetchall()


def test_a_config_round_trip_keeps_its_credentials_in_secrets_manager_only(
    api: Api, tenant: Tenant, test_env: Sandbox
) -> None:
    created = api("POST", PATH, SENDGRID)
    assert created.status == 201, created.raw
    body = created.json
    assert body["credential_fields"] == ["api_key"] and "credentials" not in body
    assert API_KEY not in created.raw
    stored = row(test_env, body["id"])
    assert stored is not None and API_KEY not in json.dumps(stored, default=str)
    value = secrets(test_env).get_secret_value(
        SecretId=stored["secret_arn"], VersionId=stored["secret_version"]
    )
    assert json.loads(value["SecretString"]) == {"api_key": API_KEY}

    listed = api("GET", PATH, query={"channel": "email"})
    assert [c["id"] for c in listed.json["data"]] == [body["id"]] and API_KEY not in listed.raw
    assert api("GET", f"{PATH}/{body['id']}").json["settings"] == {"default_from": "ops@example.com"}

    rotated = "SG.rotated-" + uuid.uuid4().hex
    patched = api("PATCH", f"{PATH}/{body['id']}", {"credentials": {"api_key": rotated}, "priority": 5})
    assert patched.status == 200 and patched.json["priority"] == 5 and rotated not in patched.raw
    after = row(test_env, body["id"])
    assert after is not None and after["secret_arn"] == stored["secret_arn"]
    assert after["secret_version"] != stored["secret_version"]
    current = secrets(test_env).get_secret_value(
        SecretId=after["secret_arn"], VersionId=after["secret_version"]
    )
    assert json.loads(current["SecretString"]) == {"api_key": rotated}

    assert api("DELETE", f"{PATH}/{body['id']}").status == 204
    assert api("GET", f"{PATH}/{body['id']}").status == 404
    assert tenant_secrets(test_env, tenant.id) == []

    events = audit_rows(test_env, tenant.id)
    assert [e["action"] for e in events] == [
        "provider_config.create",
        "provider_config.update",
        "provider_config.delete",
    ]
    assert all(e["actor_prefix"] == tenant.prefix and e["request_id"] for e in events)
    assert events[0]["changes"]["credentials"] == "[redacted]"
    assert events[1]["changes"] == {"priority": 5, "credentials": "[redacted]"}
    for secret in (API_KEY, rotated):
        assert secret not in json.dumps([e["changes"] for e in events])


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({**SENDGRID, "provider": "mailgun"}, "provider", 422),
        ({**SENDGRID, "channel": "sms"}, "provider", 422),
        ({**SENDGRID, "credentials": {}}, "credentials.api_key", 422),
        ({**SENDGRID, "credentials": {"api_key": ""}}, "credentials.api_key", 422),
        ({**SENDGRID, "credentials": {"api_key": "k", "extra": "x"}}, "credentials.extra", 422),
        ({**SENDGRID, "settings": {"default_from": "not an address"}}, "settings.default_from", 422),
        ({**SENDGRID, "settings": {"base_url": "http://169.254.169.254"}}, "settings.base_url", 422),
        ({**SENDGRID, "priority": -1}, "priority", 422),
        ({**SENDGRID, "priority": "1"}, "priority", 422),
        (
            {
                "channel": "sms",
                "provider": "twilio",
                "priority": 1,
                "credentials": {"account_sid": "AC" + "0" * 32, "auth_token": "t"},
            },
            "settings",
            422,
        ),
        (
            {
                "channel": "sms",
                "provider": "twilio",
                "priority": 1,
                "credentials": {"auth_token": "t"},
                "settings": {"from_number": "+15005550006"},
            },
            "credentials.account_sid",
            422,
        ),
        (
            {
                "channel": "push",
                "provider": "fcm",
                "priority": 1,
                "credentials": {"service_account_json": {"type": "service_account"}},
            },
            "credentials.service_account_json",
            422,
        ),
        (
            {
                "channel": "email",
                "provider": "ses",
                "priority": 1,
                "credentials": {"access_key_id": "AKIAEXAMPLE00000"},
            },
            "credentials",
            422,
        ),
    ],
)
def test_a_config_that_could_not_send_is_refused_and_nothing_is_stored(
    api: Api, tenant: Tenant, test_env: Sandbox, body: dict[str, Any], field: str, status: int
) -> None:
    reply = api("POST", PATH, body)
    assert reply.status == status, reply.raw
    assert reply.error["code"] == "validation_error"
    assert any(d["field"] == field for d in reply.error["details"]), reply.error
    assert api("GET", PATH).json["data"] == []
    assert tenant_secrets(test_env, tenant.id) == []


def test_priorities_are_unique_among_a_channels_active_configs(
    api: Api, tenant: Tenant, test_env: Sandbox
) -> None:
    assert api("POST", PATH, SENDGRID).status == 201
    clash = api("POST", PATH, {**SENDGRID, "provider": "console", "credentials": {}, "settings": {}})
    assert clash.status == 409 and clash.error["details"][0]["field"] == "priority"
    # inactive configs may share it, another channel too; activating the clash is refused
    parked = api(
        "POST", PATH, {**SENDGRID, "provider": "console", "credentials": {}, "settings": {}, "active": False}
    )
    assert parked.status == 201
    assert api("POST", PATH, {"channel": "sms", "provider": "console", "priority": 10}).status == 201
    assert api("PATCH", f"{PATH}/{parked.json['id']}", {"active": True}).status == 409
    assert api("PATCH", f"{PATH}/{parked.json['id']}", {"active": True, "priority": 11}).status == 200
    assert len(tenant_secrets(test_env, tenant.id)) == 1  # the one sendgrid config's


def test_channel_and_provider_never_change_and_nulls_are_refused(api: Api) -> None:
    config = api("POST", PATH, SENDGRID).json
    patches: list[dict[str, Any]] = [
        {"provider": "ses"},
        {"channel": "sms"},
        {"priority": None},
        {"credentials": {}},
    ]
    for patch in patches:
        reply = api("PATCH", f"{PATH}/{config['id']}", patch)
        assert reply.status == 422, (patch, reply.raw)
    assert api("GET", f"{PATH}/{config['id']}").json == config


def test_another_tenants_config_is_not_found(
    api: Api, make_tenant: Callable[..., Tenant], make_api: Callable[..., Api]
) -> None:
    config = api("POST", PATH, SENDGRID).json
    other = make_api(make_tenant("other").key)
    for method, body in (("GET", None), ("PATCH", {"priority": 3}), ("DELETE", None)):
        assert other(method, f"{PATH}/{config['id']}", body).status == 404
    assert other("GET", PATH).json["data"] == []


def test_the_scope_is_required(make_tenant: Callable[..., Tenant], make_api: Callable[..., Api]) -> None:
    api = make_api(make_tenant(scopes=("notifications:write",)).key)
    assert api("POST", PATH, SENDGRID).status == 403
    assert api("GET", PATH).status == 403


def test_an_idempotent_create_replays_without_a_second_config(
    api: Api, tenant: Tenant, test_env: Sandbox
) -> None:
    key = {"Idempotency-Key": f"cfg-{uuid.uuid4()}"}
    first = api("POST", PATH, SENDGRID, headers=key)
    again = api("POST", PATH, SENDGRID, headers=key)
    assert (first.status, again.status) == (201, 200)
    assert again.json["id"] == first.json["id"]
    assert len(api("GET", PATH).json["data"]) == 1 and len(tenant_secrets(test_env, tenant.id)) == 1
    other = api("POST", PATH, {**SENDGRID, "priority": 99}, headers=key)
    assert other.status == 409 and other.error["code"] == "idempotency_mismatch"


def test_secrets_manager_down_is_a_503_and_nothing_is_saved(
    api: Api, tenant: Tenant, settings_env: Callable[..., None]
) -> None:
    settings_env(AWS_ENDPOINT_URL="http://127.0.0.1:9")
    reply = api("POST", PATH, SENDGRID)
    assert reply.status == 503 and reply.error["code"] == "service_unavailable"
    assert reply.headers.get("Retry-After") == "5"
    settings_env()
    assert api("GET", PATH).json["data"] == []


def test_a_failed_transaction_takes_its_new_secret_back(
    api: Api, tenant: Tenant, test_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_gone(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError("connection lost")  # what the pool raises mid-transaction

    monkeypatch.setattr(provider_configs.audit, "record", database_gone)
    reply = api("POST", PATH, SENDGRID)
    assert reply.status == 503
    monkeypatch.undo()
    assert api("GET", PATH).json["data"] == []
    assert tenant_secrets(test_env, tenant.id) == []


def test_credentials_changed_in_a_failed_transaction_are_never_read(
    api: Api, tenant: Tenant, test_env: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = api("POST", PATH, SENDGRID).json
    before = row(test_env, config["id"])

    def database_gone(*args: Any, **kwargs: Any) -> None:
        raise psycopg.OperationalError("connection lost")

    monkeypatch.setattr(provider_configs.audit, "record", database_gone)
    assert api("PATCH", f"{PATH}/{config['id']}", {"credentials": {"api_key": "SG.half"}}).status == 503
    monkeypatch.undo()
    after = row(test_env, config["id"])
    assert after is not None and before is not None
    assert after["secret_version"] == before["secret_version"]
    value = secrets(test_env).get_secret_value(
        SecretId=after["secret_arn"], VersionId=after["secret_version"]
    )
    assert json.loads(value["SecretString"]) == {"api_key": API_KEY}


def test_orphan_secrets_are_removed_by_the_cleanup_job(api: Api, tenant: Tenant, test_env: Sandbox) -> None:
    kept = api("POST", PATH, SENDGRID).json
    orphan_arn, _ = provider_configs.create_secret(tenant.id, uuid.uuid4(), {"api_key": "x"})
    assert provider_configs.remove_orphan_secrets(min_age_seconds=3600) == 0  # too young yet
    assert provider_configs.remove_orphan_secrets(min_age_seconds=0) == 1
    names = tenant_secrets(test_env, tenant.id)
    assert names == [provider_configs.secret_name(tenant.id, uuid.UUID(kept["id"]))]
    assert orphan_arn not in names
