"""The platform's shared ground over the real database: idempotent creates (Powertools'
Idempotency over PostgreSQL) and the audit log (written in the change's transaction, secrets
redacted, listed per tenant)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from notify_core import audit, idempotency
from notify_core.db import transaction
from notify_core.errors import IdempotencyMismatch, NotFound

from .conftest import Tenant


class Creator:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> idempotency.Created:
        self.calls += 1
        return idempotency.Created(201, {"id": str(uuid.uuid4()), "n": self.calls})


def once(tenant: Tenant, key: str | None, body: Any, create: Any, route: str = "POST /things") -> Any:
    return idempotency.create_once(tenant_id=tenant.id, route=route, key=key, body=body, create=create)


def test_the_same_key_and_body_replays_the_first_reply(tenant: Tenant) -> None:
    create = Creator()
    first = once(tenant, "k-1", {"a": 1}, create)
    again = once(tenant, "k-1", {"a": 1}, create)
    assert (first.status, first.replayed) == (201, False)
    assert (again.status, again.replayed, again.body) == (200, True, first.body)
    assert create.calls == 1


def test_the_same_key_with_another_body_is_a_mismatch(tenant: Tenant) -> None:
    create = Creator()
    once(tenant, "k-2", {"a": 1}, create)
    with pytest.raises(IdempotencyMismatch):
        once(tenant, "k-2", {"a": 2}, create)
    assert create.calls == 1


def test_keys_are_per_tenant_and_route_and_optional(tenant: Tenant, make_tenant: Any) -> None:
    create = Creator()
    once(tenant, "k-3", {"a": 1}, create)
    once(make_tenant("other"), "k-3", {"a": 1}, create)
    once(tenant, "k-3", {"a": 1}, create, route="POST /others")
    once(tenant, None, {"a": 1}, create)
    once(tenant, None, {"a": 1}, create)
    assert create.calls == 5


def test_a_failed_create_leaves_the_key_free(tenant: Tenant) -> None:
    def fail() -> idempotency.Created:
        raise NotFound("no such thing")

    with pytest.raises(NotFound):
        once(tenant, "k-4", {"a": 1}, fail)
    create = Creator()
    assert once(tenant, "k-4", {"a": 1}, create).status == 201
    assert create.calls == 1


def test_audit_events_are_recorded_in_the_transaction_and_redacted(tenant: Tenant, make_tenant: Any) -> None:
    actor = audit.Actor.api_key("nk_abcd1234", "req-1")
    with transaction() as conn:
        audit.record(
            conn,
            tenant.id,
            actor,
            "webhook.create",
            "webhook",
            "w1",
            {
                "url": "https://x.example",
                "secret": "whsec_x",
                "credentials": {"api_key": "k"},
                "n": [{"token": "t"}],
            },
        )

    def failing_change() -> None:
        with transaction() as conn:  # rolled back with its change
            audit.record(conn, tenant.id, audit.CLI, "webhook.delete", "webhook", "w1")
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failing_change()
    other = make_tenant("other")
    with transaction() as conn:
        audit.record(conn, other.id, audit.SYSTEM, "webhook.disable", "webhook", "w9")

    page = audit.list_page(tenant.id)
    assert [e.action for e in page.data] == ["webhook.create"]
    (event,) = page.data
    assert event.actor == {"type": "api_key", "prefix": "nk_abcd1234"}
    assert event.target == {"type": "webhook", "id": "w1"}
    assert event.request_id == "req-1"
    assert event.changes == {
        "url": "https://x.example",
        "secret": "[redacted]",
        "credentials": "[redacted]",
        "n": [{"token": "[redacted]"}],
    }
    assert [e.action for e in audit.list_page(tenant.id, actor="nk_abcd1234").data] == ["webhook.create"]
    assert audit.list_page(tenant.id, actor="cli").data == []
    assert audit.list_page(tenant.id, target_type="template").data == []
    assert [e.action for e in audit.list_page(other.id, actor="system").data] == ["webhook.disable"]
