"""Fixtures over real services: a database, a Redis key prefix and queues per xdist worker."""

from __future__ import annotations

import functools
import json
import os
import random
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row

from notify_core import auth, clients, providers
from notify_local.lambda_env import LambdaContext, load_handler, rest_event, sqs_event
from notify_local.provider_stub import ProviderStub
from notify_local.sandbox import Sandbox as ServiceEnv
from notify_local.sandbox import reset_clients, sandbox
from notify_local.stack import Stack

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def test_env() -> Iterator[ServiceEnv]:
    if not os.environ.get("NOTIFY_TEST_SQS"):
        pytest.fail("integration services were not started (see tests/conftest.py)")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw")
    with sandbox(
        f"notify_test_{os.environ['NOTIFY_TEST_RUN']}_{worker}",
        os.environ["NOTIFY_TEST_PG"],
        os.environ["NOTIFY_TEST_REDIS"],
        os.environ["NOTIFY_TEST_SQS"],
        overrides={"ApiKeyCacheSeconds": "0"},
        pooler_url=os.environ.get("NOTIFY_TEST_POOLER"),
    ) as env:
        yield env


@pytest.fixture
def settings_env(test_env: ServiceEnv, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Change settings for one test; clients are rebuilt before and after."""

    def change(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        reset_clients()

    yield change
    monkeypatch.undo()
    reset_clients()


@dataclass
class Tenant:
    id: UUID
    key: str
    prefix: str


@pytest.fixture
def make_tenant(test_env: ServiceEnv) -> Callable[..., Tenant]:
    def make(
        name: str = "acme", scopes: tuple[str, ...] = auth.SCOPES, rate_limit: int | None = None
    ) -> Tenant:
        tenant_id = auth.create_tenant(name, actor=None)  # set-up, not a change under test: no audit
        issued = auth.create_api_key(tenant_id, "test", scopes, rate_limit, actor=None)
        return Tenant(tenant_id, issued.key, issued.prefix)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[..., Tenant]) -> Tenant:
    return make_tenant()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: str

    @property
    def json(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    @property
    def error(self) -> dict[str, Any]:
        body = self.json
        assert isinstance(body, dict) and "error" in body, f"not an error body: {self.raw}"
        return body["error"]


def documented_statuses(method: str, path: str) -> set[int] | None:
    """The statuses the served OpenAPI document lists for the operation serving `method path` (None:
    no operation serves it)."""
    document = _document()
    for template, operations in document["paths"].items():
        pattern = "^" + re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template)) + "$"
        operation = operations.get(method.lower())
        if operation is not None and re.match(pattern, path.split("?")[0]):
            return {int(code) for code in operation["responses"]}
    return None


@functools.cache
def _document() -> dict[str, Any]:
    handler = load_handler("functions/api/", "app.handler")
    reply = handler(
        rest_event("GET", "/swagger", query={"format": "json"}), LambdaContext("ApiFunction", 512, 25)
    )
    assert reply["statusCode"] == 200
    return json.loads(reply["body"])


class Api:
    """Calls the API function's handler with the REST proxy events API Gateway would send, from a
    source address of its own (failed authentications are counted per address), and checks that
    every reply's status is one the OpenAPI document lists for the operation."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.handler = load_handler("functions/api/", "app.handler")
        self.source_ip = f"127.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        self.last_request_id: str | None = None  # API Gateway's request id of the last call

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        raw: str | None = None,
        key: str | None = "default",
    ) -> Reply:
        h = {"Content-Type": "application/json"}
        use_key = self.key if key == "default" else key
        if use_key:
            h["X-Api-Key"] = use_key
        h.update(headers or {})
        text = raw if raw is not None else (json.dumps(body) if body is not None else None)
        event = rest_event(method, path, headers=h, query=query, body=text, source_ip=self.source_ip)
        self.last_request_id = event["requestContext"]["requestId"]
        result = self.handler(event, LambdaContext("ApiFunction", 512, 25))
        out_headers = {k: v for k, v in (result.get("headers") or {}).items()}
        for k, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[k] = values[-1]
        reply = Reply(result["statusCode"], out_headers, result.get("body") or "")
        documented = documented_statuses(method, path)
        if documented is None:
            assert reply.status == 404, f"{method} {path} has no operation but answered {reply.status}"
        else:
            assert reply.status in documented, (
                f"{method} {path} answered {reply.status}, which its OpenAPI operation does not list"
                f" {sorted(documented)}: {reply.raw[:300]}"
            )
        if reply.status >= 400:
            assert set(reply.error) == {"code", "message", "details"}, reply.raw
        return reply


@pytest.fixture
def api(tenant: Tenant) -> Api:
    return Api(tenant.key)


@pytest.fixture
def make_api(test_env: ServiceEnv) -> Callable[[str | None], Api]:
    return Api


def drain(sqs: Any, queue_url: str, ids: set[str], rounds: int = 15) -> list[dict[str, Any]]:
    """Receive (and delete) messages until every id in `ids` arrived and the queue answers empty.
    Returns the bodies of the messages for `ids` (other tests' messages on the worker's queue are
    deleted and ignored)."""
    got: list[dict[str, Any]] = []
    for _ in range(rounds):
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = reply.get("Messages", [])
        for m in messages:
            body = json.loads(m["Body"])
            if body.get("id") in ids:
                got.append(body)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
        if not messages and ids <= {b["id"] for b in got}:
            break
    return got


# ---------------------------------------------------------------- the delivery pipeline

EMAIL = {
    "to": "ada@example.com",
    "from": "ops@example.com",
    "subject": "Hi",
    "body": "Hello",
    "html": "<p>Hello</p>",
}
SMS = {"to": "+14155550100", "body": "Your code is 123456"}
PUSH = {"token": "device-token-1", "title": "Ping", "body": "You have mail", "data": {"k": "v"}}


@pytest.fixture(scope="module")
def stub() -> Iterator[ProviderStub]:
    with ProviderStub() as server:
        yield server


@dataclass
class Pipeline:
    env: ServiceEnv
    stack: Stack
    stub: ProviderStub

    @property
    def queue(self) -> str:
        return self.stack.queues["NotificationsQueue"].url

    @property
    def dlq(self) -> str:
        return self.stack.queues["NotificationsDLQ"].url

    def receive(self, queue_url: str | None = None, wait: int = 1, rounds: int = 3) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        for _ in range(rounds):
            reply = self.env.sqs.receive_message(
                QueueUrl=queue_url or self.queue,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got += reply.get("Messages", [])
            if got:
                break
        return got

    def invoke(
        self, function: str, messages: list[dict[str, Any]], queue: str = "NotificationsQueue"
    ) -> dict[str, Any]:
        """Invoke a queue consumer as Lambda's event source mapping does, and delete what it did not
        report as failed (ReportBatchItemFailures)."""
        arn = self.stack.queues[queue].arn
        handler = load_handler(f"functions/{function}/", "app.handler")
        reply = handler(sqs_event(messages, arn), LambdaContext(function, 512, 30))
        failed = {f["itemIdentifier"] for f in reply["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.env.sqs.delete_message(
                    QueueUrl=self.stack.queues[queue].url, ReceiptHandle=m["ReceiptHandle"]
                )
        return reply

    def drain_sender(self, rounds: int = 10) -> None:
        for _ in range(rounds):
            messages = self.receive(rounds=1)
            if not messages:
                return
            self.invoke("sender", messages)

    def row(self, notification_id: str) -> dict[str, Any]:
        with psycopg.connect(self.env.database_url, row_factory=dict_row) as conn:
            row = conn.execute("SELECT * FROM notifications WHERE id = %s", (notification_id,)).fetchone()
            assert row is not None
            row["attempts"] = conn.execute(
                "SELECT * FROM notification_attempts WHERE notification_id = %s ORDER BY attempt_number",
                (notification_id,),
            ).fetchall()
            row["dead_letters"] = conn.execute(
                "SELECT * FROM notification_dlq WHERE notification_id = %s", (notification_id,)
            ).fetchall()
        return row

    def only(self, ids: list[str]) -> None:
        """The sweeper works on the whole database: settle every other test's unfinished rows, so
        that a sweep in this test sees exactly the rows it made."""
        self.sql(
            "UPDATE notifications SET status = 'cancelled', cancelled_at = now() WHERE NOT (id = ANY(%s::uuid[]))"
            " AND status IN ('pending', 'scheduled', 'queued', 'sending', 'retrying')",
            ids,
        )

    def sql(self, statement: str, *params: Any) -> None:
        with psycopg.connect(self.env.database_url) as conn:
            conn.execute(statement, params)


@pytest.fixture
def pipeline(
    test_env: ServiceEnv, stub: ProviderStub, settings_env: Callable[..., None]
) -> Iterator[Pipeline]:
    stub.reset()
    stack = Stack.load(f"d{uuid.uuid4().hex[:10]}", overrides={"MaxReceiveCount": "2"})
    stack.create_queues(test_env.sqs)
    settings_env(
        NOTIFICATIONS_QUEUE_URL=stack.queues["NotificationsQueue"].url,
        RETRY_BASE_SECONDS="1",
        RETRY_CAP_SECONDS="2",
        **stub.env(),
    )
    providers.reset_providers()
    yield Pipeline(test_env, stack, stub)
    providers.reset_providers()
    stack.delete_queues(test_env.sqs)


class Exploding:
    """A provider whose send hits a bug: what the sender must report, not swallow."""

    name = "console"
    max_send_seconds = 1.0

    def send(self, message: object) -> object:
        raise RuntimeError("simulated bug in a provider")


@pytest.fixture
def exploding_console(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(clients._clients, "provider:console", Exploding())


def create(api: Api, channel: str, payload: dict[str, Any], **extra: Any) -> str:
    reply = api("POST", "/api/v1/notifications", {"channel": channel, "payload": payload, **extra})
    assert reply.status == 202, reply.raw
    return str(reply.json["id"])


# ---------------------------------------------------------------- Amazon SES and SNS (operating, issue 12)


def _mime_to(raw: str | None) -> list[str]:
    """The addresses of a MIME message's To header (none without a message)."""
    if not raw:
        return []
    from email.parser import HeaderParser
    from email.utils import getaddresses

    return [address for _, address in getaddresses(HeaderParser().parsestr(raw).get_all("To", []))]


@dataclass
class AwsEmulator:
    """The local emulator the SES and SNS providers are tested against (LocalStack, or moto's server
    when the LocalStack found runs without ses/sns), with what it recorded as sent."""

    endpoint: str
    kind: str  # localstack | moto

    def env(self) -> dict[str, str]:
        return {"SES_BASE_URL": self.endpoint, "SNS_BASE_URL": self.endpoint}

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1")  # type: ignore[call-overload]

    def verify(self, address: str) -> None:
        self.client("ses").verify_email_identity(EmailAddress=address)

    def _get(self, path: str) -> Any:
        import urllib.request

        with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=10) as reply:
            return json.load(reply)

    def emails(self) -> list[dict[str, Any]]:
        """{id, source, to, subject, body, raw} of every email sent (raw: the MIME text, if raw)."""
        if self.kind == "localstack":
            return [
                {
                    "id": m["Id"],
                    "source": m.get("Source"),
                    # a raw send (extra headers such as List-Unsubscribe) names no Destination:
                    # its recipients are the MIME To header's, as moto's listing below has them
                    "to": (m.get("Destination") or {}).get("ToAddresses") or _mime_to(m.get("RawData")),
                    "subject": m.get("Subject"),
                    "body": (m.get("Body") or {}).get("text_part"),
                    "raw": m.get("RawData"),
                }
                for m in self._get("/_aws/ses")["messages"]
            ]
        ses = self._get("/moto-api/data.json").get("ses", {})
        plain = [
            {
                "id": m["id"],
                "source": m["source"],
                "to": m["destinations"]["ToAddresses"],
                "subject": m["subject"],
                "body": m["body"],
                "raw": None,
            }
            for m in ses.get("Message", [])
        ]
        raw = [
            {
                "id": m["id"],
                "source": m["source"],
                # moto lists the Destinations given and the MIME To header's addresses: once each here
                "to": list(dict.fromkeys(m["destinations"])),
                "subject": None,
                "body": None,
                "raw": m["raw_data"],
            }
            for m in ses.get("RawMessage", [])
        ]
        return plain + raw

    def sms(self) -> list[dict[str, Any]]:
        """{id, phone, message, attributes} of every SMS published."""
        if self.kind == "localstack":
            found = self._get("/_aws/sns/sms-messages")["sms_messages"]
            return [
                {
                    "id": m["MessageId"],
                    "phone": m["PhoneNumber"],
                    "message": m["Message"],
                    "attributes": {
                        k: v["StringValue"] for k, v in (m.get("MessageAttributes") or {}).items()
                    },
                }
                for messages in found.values()
                for m in messages
            ]
        return [
            {"id": m["message_id"], "phone": m["phone_number"], "message": m["message"], "attributes": {}}
            for m in self._get("/moto-api/data.json").get("sns", {}).get("SMS", [])
        ]


@pytest.fixture(scope="session")
def aws() -> AwsEmulator:
    endpoint = os.environ.get("NOTIFY_TEST_SES_SNS")
    if not endpoint:
        pytest.fail("the SES/SNS emulator was not set up (see tests/conftest.py)")
    return AwsEmulator(endpoint, os.environ.get("NOTIFY_TEST_SES_SNS_KIND", "moto"))
