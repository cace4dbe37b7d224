"""End to end through the local runtime: the real template.yaml, every function, HTTP requests to
the runtime's API Gateway stand-in, its SQS pollers and schedules, LocalStack (or moto), PostgreSQL,
Redis, and the real provider SDKs talking to the stub."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from notify_core import clients, providers
from notify_local.invoker import Invocation
from notify_local.provider_stub import ProviderStub
from notify_local.runtime import Runtime
from notify_local.sandbox import Sandbox
from notify_local.stack import Stack

from .conftest import Tenant
from .test_runtime import Http, http

EMAIL = {"to": "ada@example.com", "from": "ops@example.com", "subject": "Hi", "body": "Hello"}


@dataclass
class System:
    runtime: Runtime
    stack: Stack
    stub: ProviderStub
    env: Sandbox
    key: str
    calls: list[Invocation]

    def call(self, method: str, path: str, body: Any = None) -> Http:
        return http(self.runtime.url, method, path, body, {"X-Api-Key": self.key})

    def create(self, payload: dict[str, Any] | None = None, **extra: Any) -> str:
        reply = self.call(
            "POST", "/api/v1/notifications", {"channel": "email", "payload": payload or EMAIL, **extra}
        )
        assert reply.status == 202, reply.body
        return str(reply.body["id"])

    def row(self, nid: str) -> dict[str, Any]:
        with psycopg.connect(self.env.database_url, row_factory=dict_row) as conn:
            row = conn.execute("SELECT * FROM notifications WHERE id = %s", (nid,)).fetchone()
            assert row is not None
            row["attempts"] = [
                r["outcome"]
                for r in conn.execute(
                    "SELECT outcome FROM notification_attempts WHERE notification_id = %s ORDER BY attempt_number",
                    (nid,),
                )
            ]
            row["dead_letters"] = [
                r["reason"]
                for r in conn.execute(
                    "SELECT reason FROM notification_dlq WHERE notification_id = %s", (nid,)
                )
            ]
        return row

    def wait_status(self, nid: str, status: str, timeout: float = 25) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.row(nid)
            if row["status"] == status:
                return row
            time.sleep(0.2)
        raise AssertionError(
            f"{nid} still {self.row(nid)['status']!r} after {timeout} s, expected {status!r}"
        )


@pytest.fixture(scope="module")
def stub() -> Iterator[ProviderStub]:
    with ProviderStub() as server:
        yield server


@pytest.fixture
def system(
    test_env: Sandbox, stub: ProviderStub, tenant: Tenant, settings_env: Callable[..., None]
) -> Iterator[System]:
    stub.reset()
    stack = Stack.load(f"e{uuid.uuid4().hex[:10]}", {"MaxReceiveCount": "2"})
    stack.create_queues(test_env.sqs)
    # a short visibility timeout, so that a failed record comes back (and is redriven) within the test
    test_env.sqs.set_queue_attributes(
        QueueUrl=stack.queues["NotificationsQueue"].url, Attributes={"VisibilityTimeout": "2"}
    )
    settings_env(
        NOTIFICATIONS_QUEUE_URL=stack.queues["NotificationsQueue"].url,
        RETRY_BASE_SECONDS="1",
        RETRY_CAP_SECONDS="2",
        **stub.env(),
    )
    providers.reset_providers()
    # rate(1 minute) sped up 30x: the retry sweeper fires every 2 s, as its schedule would every minute
    calls: list[Invocation] = []
    runtime = Runtime(stack, test_env.sqs, port=0, poll_wait=1, schedule_speedup=30, observers=[calls.append])
    runtime.start()
    try:
        yield System(runtime, stack, stub, test_env, tenant.key, calls)
    finally:
        runtime.stop()
        providers.reset_providers()
        stack.delete_queues(test_env.sqs)


def test_created_over_http_is_sent_through_the_provider(system: System) -> None:
    nid = system.create()
    row = system.wait_status(nid, "sent")
    assert row["attempts"] == ["sent"]
    (request,) = system.stub.requests("sendgrid")
    assert request.body["personalizations"][0]["to"] == [{"email": "ada@example.com"}]
    assert system.call("GET", f"/api/v1/notifications/{nid}").body["status"] == "sent"


def test_provider_failing_twice_then_recovering_ends_sent(system: System) -> None:
    system.stub.configure("sendgrid", fail_next=2, failure="5xx")
    nid = system.create()
    row = system.wait_status(nid, "sent")
    assert row["attempts"] == ["transient_error", "transient_error", "sent"]
    attempts = system.call("GET", f"/api/v1/notifications/{nid}/attempts").body["data"]
    assert [a["outcome"] for a in attempts] == row["attempts"]


def test_permanent_failure_ends_in_a_dead_letter(system: System) -> None:
    system.stub.configure("sendgrid", fail_next=1, failure="permanent")
    nid = system.create()
    row = system.wait_status(nid, "failed")
    assert row["dead_letters"] == ["permanent_error"]
    letters = system.call("GET", "/api/v1/dlq").body["data"]
    assert [d["reason"] for d in letters if d["notification_id"] == nid] == ["permanent_error"]


class Exploding:
    name = "console"
    max_send_seconds = 1.0

    def send(self, message: object) -> object:
        raise RuntimeError("simulated bug in a provider")


def test_handler_that_raises_is_redriven_to_the_dlq_processor(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(clients._clients, "provider:console", Exploding())
    nid = system.create(provider="console")
    # the sender fails it, SQS redelivers it (2 s visibility) and after 2 receives redrives it to the
    # DLQ, whose poller invokes the DLQ processor
    row = system.wait_status(nid, "failed", timeout=40)
    assert row["dead_letters"] == ["redrive"]
    # the sender reported it as failed exactly maxReceiveCount times; the DLQ processor deleted it
    failing = [c for c in system.calls if c.function == "SenderFunction" and c.failed]
    assert len(failing) == 2
    assert any(c.function == "DlqProcessorFunction" and c.deleted for c in system.calls)


def test_sweeper_schedule_enqueues_a_stranded_pending_row(system: System) -> None:
    # Given a row the API stored but never got onto SQS (as when SQS failed after the insert)
    nid = str(uuid.uuid4())
    with psycopg.connect(system.env.database_url) as conn:
        conn.execute(
            "INSERT INTO notifications (id, tenant_id, channel, provider, payload, status, max_attempts,"
            " next_attempt_at) SELECT %s, tenant_id, 'email', 'sendgrid', %s, 'pending', 5,"
            " now() - interval '1 second' FROM api_keys WHERE key_hash = sha256(%s::bytea)",
            (nid, Jsonb(EMAIL), system.key.encode()),
        )
    # Then the sweeper's schedule fires, enqueues it, and the sender sends it
    row = system.wait_status(nid, "sent")
    assert row["attempts"] == ["sent"]
    assert any(c.kind == "schedule" and c.function == "RetrySweeperFunction" for c in system.calls)
