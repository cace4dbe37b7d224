"""Fixtures over real services: a database, a Redis key prefix and queues per xdist worker."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest

from notify_core import auth
from notify_local.lambda_env import LambdaContext, load_handler, rest_event
from notify_local.sandbox import Sandbox as ServiceEnv
from notify_local.sandbox import reset_clients, sandbox

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
        tenant_id = auth.create_tenant(name)
        issued = auth.create_api_key(tenant_id, "test", scopes, rate_limit)
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


class Api:
    """Calls the API function's handler with the REST proxy events API Gateway would send."""

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.handler = load_handler("functions/api/", "app.handler")

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
        event = rest_event(method, path, headers=h, query=query, body=text)
        result = self.handler(event, LambdaContext("ApiFunction", 512, 25))
        out_headers = {k: v for k, v in (result.get("headers") or {}).items()}
        for k, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[k] = values[-1]
        return Reply(result["statusCode"], out_headers, result.get("body") or "")


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
