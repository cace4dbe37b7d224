"""The audit log over HTTP and the CLI: every mutating call writes its event in the change's own
transaction (actor, action, target, API Gateway's request id, changed fields without secrets), listed
newest first with filters and a cursor; the CLI's commands are audited as `cli`; old events go."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from notify_core import audit, cleanup, cli, users
from notify_core.config import get_settings
from notify_core.errors import DatabaseUnavailable
from notify_local.sandbox import Sandbox

from .conftest import EMAIL, Api, Pipeline, Tenant, create

pytestmark = pytest.mark.integration

EVENTS = "/api/v1/audit-events"


def events(api: Api, **query: str) -> list[dict[str, Any]]:
    reply = api("GET", EVENTS, query={"limit": "100", **query})
    assert reply.status == 200, reply.raw
    return list(reply.json["data"])


def test_every_mutating_route_writes_its_event(api: Api, tenant: Tenant, pipeline: Pipeline) -> None:
    user = api("POST", "/api/v1/users", {"email": "ada@example.com", "push_tokens": ["device-secret"]}).json
    create_request = api.last_request_id
    api("PATCH", f"/api/v1/users/{user['id']}", {"locale": "fr"})
    api("DELETE", f"/api/v1/users/{user['id']}")
    nid = create(api, "email", EMAIL, send_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    api("POST", f"/api/v1/notifications/{nid}/cancel")
    pipeline.stub.configure("sendgrid", fail_next=1, failure="permanent")
    failed = create(api, "email", EMAIL)
    pipeline.drain_sender()
    letters = api("GET", "/api/v1/dlq").json["data"]
    letter = next(d for d in letters if d["notification_id"] == failed)
    api("POST", f"/api/v1/dlq/{letter['id']}/replay")
    pipeline.drain_sender()
    pipeline.stub.configure("sendgrid", fail_next=1, failure="permanent")
    again = create(api, "email", EMAIL)
    pipeline.drain_sender()
    second = next(d for d in api("GET", "/api/v1/dlq").json["data"] if d["notification_id"] == again)
    api("DELETE", f"/api/v1/dlq/{second['id']}")

    found = events(api)
    assert [e["action"] for e in reversed(found)] == [
        "user.create",
        "user.update",
        "user.delete",
        "notification.cancel",
        "dead_letter.replay",
        "dead_letter.delete",
    ]
    assert all(e["actor"] == {"type": "api_key", "prefix": tenant.prefix} for e in found)
    created = found[-1]
    assert created["target"] == {"type": "user", "id": user["id"]}
    assert created["request_id"] == create_request
    assert created["changes"] == {"email": "ada@example.com", "push_tokens": "[redacted]"}
    assert found[-2]["changes"] == {"locale": "fr"}
    assert {"type": "notification", "id": nid} in [e["target"] for e in found]


def test_filters_and_cursor(api: Api, tenant: Tenant) -> None:
    ids = [api("POST", "/api/v1/users", {"external_id": f"u{i}"}).json["id"] for i in range(5)]
    api("DELETE", f"/api/v1/users/{ids[0]}")
    assert [e["action"] for e in events(api, action="user.delete")] == ["user.delete"]
    assert len(events(api, target_type="user")) == 6
    assert [e["action"] for e in events(api, target_id=ids[0])] == ["user.delete", "user.create"]
    assert len(events(api, actor=tenant.prefix)) == 6 and events(api, actor="cli") == []
    seen: list[str] = []
    cursor = None
    while True:
        page = api("GET", EVENTS, query={"limit": "2", **({"cursor": cursor} if cursor else {})}).json
        seen += [e["id"] for e in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 6
    for bad in ({"action": "x\u0000"}, {"limit": "0"}, {"cursor": "!!"}, {"action": "A B"}):
        assert api("GET", EVENTS, query=bad).status == 422, bad


def test_a_change_and_its_event_commit_or_fail_together(
    api: Api, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    api("POST", "/api/v1/users", {"external_id": "dup"})
    assert api("POST", "/api/v1/users", {"external_id": "dup"}).status == 409
    assert len(events(api, action="user.create")) == 1  # the refused create wrote nothing

    def refused(*args: Any, **kwargs: Any) -> None:
        raise psycopg.errors.QueryCanceled("statement timeout")

    monkeypatch.setattr(audit, "record", refused)
    with pytest.raises(DatabaseUnavailable):  # what a statement timeout becomes
        users.create_user(tenant.id, users.UserCreate(external_id="lost"), audit.CLI)
    monkeypatch.undo()
    with psycopg.connect(get_settings().database_url) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE external_id = 'lost'").fetchone() == (0,)


def test_the_scope_is_required(make_tenant: Callable[..., Tenant], make_api: Callable[..., Api]) -> None:
    assert make_api(make_tenant(scopes=("users:write",)).key)("GET", EVENTS).status == 403


def run_cli(*args: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(list(args)) == 0
    return out.getvalue()


def test_cli_commands_are_audited_as_cli(test_env: Sandbox, tmp_path: Any) -> None:
    tenant_id = run_cli("create-tenant", "Acme CLI").strip()
    key = json.loads(run_cli("create-key", tenant_id, "--name", "ops", "--scopes", "notifications:read"))
    credentials = tmp_path / "sendgrid.json"
    credentials.write_text(json.dumps({"api_key": "SG.cli-secret"}))
    config = json.loads(
        run_cli(
            "provider-config-add",
            tenant_id,
            "--channel",
            "email",
            "--provider",
            "sendgrid",
            "--priority",
            "1",
            "--settings",
            '{"default_from": "ops@example.com"}',
            "--credentials-file",
            str(credentials),
        )
    )
    assert config["credential_fields"] == ["api_key"] and "SG.cli-secret" not in json.dumps(config)
    run_cli("provider-config-set", tenant_id, config["id"], "--priority", "2", "--inactive")
    listed = [json.loads(line) for line in run_cli("provider-config-list", tenant_id).splitlines()]
    assert [(c["priority"], c["active"]) for c in listed] == [(2, False)]
    run_cli("provider-config-remove", tenant_id, config["id"])
    run_cli("revoke-key", key["prefix"])

    tail = [json.loads(line) for line in run_cli("audit-tail", tenant_id, "--limit", "10").splitlines()]
    assert [e["action"] for e in tail] == [
        "tenant.create",
        "api_key.create",
        "provider_config.create",
        "provider_config.update",
        "provider_config.delete",
        "api_key.revoke",
    ]
    assert all(e["actor"] == {"type": "cli", "prefix": None} for e in tail)
    assert "SG.cli-secret" not in json.dumps(tail) and key["key"] not in json.dumps(tail)
    only = run_cli("audit-tail", tenant_id, "--action", "api_key.revoke").splitlines()
    assert [json.loads(line)["action"] for line in only] == ["api_key.revoke"]


def test_bad_cli_input_is_refused_with_the_reason(
    test_env: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant_id = run_cli("create-tenant", "Acme").strip()
    assert (
        cli.main(
            [
                "provider-config-add",
                tenant_id,
                "--channel",
                "sms",
                "--provider",
                "sendgrid",
                "--priority",
                "1",
            ]
        )
        == 2
    )
    assert "sendgrid cannot send on the sms channel" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "provider-config-add",
                tenant_id,
                "--channel",
                "email",
                "--provider",
                "sendgrid",
                "--priority",
                "1",
            ]
        )
        == 2
    )
    assert "credentials.api_key" in capsys.readouterr().err


def test_retention_removes_old_events_only(api: Api, tenant: Tenant) -> None:
    api("POST", "/api/v1/users", {"external_id": "old"})
    api("POST", "/api/v1/users", {"external_id": "new"})
    old = next(e for e in events(api) if e["changes"].get("external_id") == "old")
    with psycopg.connect(get_settings().database_url) as conn:
        conn.execute(
            "UPDATE audit_events SET created_at = now() - make_interval(days => %s + 1) WHERE id = %s",
            (get_settings().audit_retention_days, old["id"]),
        )
    assert cleanup.run()["audit_events"] >= 1
    assert [e["changes"]["external_id"] for e in events(api)] == ["new"]
