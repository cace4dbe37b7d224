"""The feedback loop end to end through the local runtime (template.yaml's functions, its API
Gateway stand-in, SQS pollers and schedules): create → sent through the real SendGrid SDK to the
stub → the stub's signed Event Webhook callback to /callbacks/sendgrid → `delivered` → a
`notification.delivered` webhook dispatched by the webhook_dispatcher function to a local receiver
that verifies it with the `standardwebhooks` library. And the bounce path: bounce → `failed` +
suppression → the next send to that address ends `suppressed`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core import providers
from notify_local.provider_stub import ProviderStub
from notify_local.runtime import Runtime
from notify_local.sandbox import Sandbox
from notify_local.stack import Stack
from notify_local.webhook_receiver import WebhookReceiver

from .conftest import Tenant
from .test_runtime import Http, http

EMAIL = {"to": "ada@example.com", "from": "ops@example.com", "subject": "Hi", "body": "Hello"}


@dataclass
class Loop:
    runtime: Runtime
    stub: ProviderStub
    receiver: WebhookReceiver
    env: Sandbox
    key: str

    def call(self, method: str, path: str, body: Any = None) -> Http:
        return http(self.runtime.url, method, path, body, {"X-Api-Key": self.key})

    def create(self, payload: dict[str, Any]) -> str:
        reply = self.call("POST", "/api/v1/notifications", {"channel": "email", "payload": payload})
        assert reply.status == 202, reply.body
        return str(reply.body["id"])

    def status(self, nid: str) -> dict[str, Any]:
        with psycopg.connect(self.env.database_url, row_factory=dict_row) as conn:
            row = conn.execute(
                "SELECT status, last_error FROM notifications WHERE id = %s", (nid,)
            ).fetchone()
        assert row is not None
        return row

    def wait_status(self, nid: str, status: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.status(nid)
            if row["status"] == status:
                return row
            time.sleep(0.1)
        raise AssertionError(f"{nid} is {self.status(nid)} after {timeout} s, expected {status}")


@pytest.fixture(scope="module")
def stub() -> Iterator[ProviderStub]:
    with ProviderStub() as server:
        yield server


@pytest.fixture
def loop(
    test_env: Sandbox, stub: ProviderStub, tenant: Tenant, settings_env: Callable[..., None]
) -> Iterator[Loop]:
    stub.reset()
    stack = Stack.load(f"f{uuid.uuid4().hex[:10]}", {"MaxReceiveCount": "2"})
    stack.create_queues(test_env.sqs)
    runtime = Runtime(stack, test_env.sqs, port=0, poll_wait=1, schedule_speedup=30)
    settings_env(
        NOTIFICATIONS_QUEUE_URL=stack.queues["NotificationsQueue"].url,
        WEBHOOK_QUEUE_URL=stack.queues["WebhooksQueue"].url,
        WEBHOOK_ALLOW_PRIVATE_TARGETS="true",  # as the local runtime sets it
        PUBLIC_BASE_URL=runtime.url,
        **stub.env(),
    )
    stub.configure_callbacks(sendgrid_url=f"{runtime.url}/callbacks/sendgrid", delay_ms=100)
    providers.reset_providers()
    with WebhookReceiver() as receiver:
        runtime.start()
        try:
            yield Loop(runtime, stub, receiver, test_env, tenant.key)
        finally:
            runtime.stop()
            providers.reset_providers()
            stack.delete_queues(test_env.sqs)


def test_delivered_callback_reaches_the_customer_as_a_verified_webhook(loop: Loop) -> None:
    # Given an endpoint subscribed to notification.delivered, registered over HTTP
    created = loop.call(
        "POST", "/api/v1/webhooks", {"url": loop.receiver.url, "events": ["notification.delivered"]}
    )
    assert created.status == 201
    loop.receiver.secrets.append(created.body["secret"])
    # When a notification is created, sent through the stub, and the stub reports it delivered
    nid = loop.create(EMAIL)
    loop.wait_status(nid, "delivered")
    # Then the receiver got notification.delivered, verified with the standardwebhooks library
    (webhook,) = loop.receiver.wait_for(1, timeout=30)
    assert webhook.verified, webhook.error
    assert webhook.json["type"] == "notification.delivered"
    assert webhook.json["data"]["id"] == nid and webhook.json["data"]["status"] == "delivered"
    (callback,) = loop.stub.callbacks("sendgrid")
    assert callback.status == 200
    events = loop.call("GET", f"/api/v1/notifications/{nid}/events").body["data"]
    assert [e["type"] for e in events] == ["delivered"]


def test_a_bounce_suppresses_the_address_for_the_next_send(loop: Loop) -> None:
    # Given the stub bouncing what it accepts (as SendGrid reports an unknown mailbox)
    loop.stub.configure_callbacks(sendgrid="bounce", delay_ms=100)
    nid = loop.create(EMAIL)
    row = loop.wait_status(nid, "failed")
    assert row["last_error"].startswith("bounced: 550")
    # When the next notification goes to that address
    loop.stub.configure_callbacks(sendgrid="delivered", delay_ms=100)
    sends = len(loop.stub.requests("sendgrid"))
    again = loop.create({**EMAIL, "subject": "Again"})
    # Then it ends suppressed, and SendGrid never sees it
    row = loop.wait_status(again, "suppressed")
    assert row["last_error"] == "hard_bounce: the address is suppressed"
    assert len(loop.stub.requests("sendgrid")) == sends
