"""The API function's edge, with no services: the events in events/ drive the real handler.
Everything checked here is answered before any database, Redis or SQS call (sockets are off)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from notify_local.lambda_env import LambdaContext, load_handler

EVENTS = Path(__file__).resolve().parents[2] / "events"


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from notify_core.config import get_settings

    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    get_settings.cache_clear()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    handler = load_handler("functions/api/", "app.handler")
    return handler(event, LambdaContext("ApiFunction", 512, 25))


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def test_health_sample_event() -> None:
    reply = invoke(event("api_health.json"))
    assert reply["statusCode"] == 200
    assert json.loads(reply["body"])["status"] == "ok"


def test_oversize_body_is_413_before_anything_else() -> None:
    ev = event("api_create_notification.json")
    ev["body"] = json.dumps({"channel": "email", "payload": {"body": "x" * 5000}})
    reply = invoke(ev)
    assert reply["statusCode"] == 413
    assert json.loads(reply["body"])["error"]["code"] == "payload_too_large"


def test_non_json_media_type_is_415() -> None:
    ev = event("api_create_notification.json")
    ev["headers"] = {**ev["headers"], "Content-Type": "text/plain"}
    ev["multiValueHeaders"] = {**ev["multiValueHeaders"], "Content-Type": ["text/plain"]}
    reply = invoke(ev)
    assert reply["statusCode"] == 415
    body = json.loads(reply["body"])
    assert body["error"]["code"] == "unsupported_media_type"
    assert body["error"]["details"][0]["field"] == "Content-Type"


def test_sample_events_are_api_gateway_rest_proxy_events() -> None:
    for path in sorted(EVENTS.glob("api_*.json")):
        ev = json.loads(path.read_text())
        assert ev["requestContext"]["stage"], path.name
        assert ev["httpMethod"] in {"GET", "POST", "PATCH", "DELETE"}, path.name
