"""The served OpenAPI document and the API's edge, with no services: what is documented follows
from the routes, every error is documented with the envelope, /health and /swagger are public, and
Swagger UI needs nothing from the internet."""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import re
from typing import Any

import psycopg
import pytest

from notify_core.models import ErrorEnvelope
from notify_core.openapi import ERRORS, operations
from notify_local.lambda_env import LambdaContext, load_handler, rest_event

PUBLIC = {
    ("GET", "/health"),
    ("GET", "/swagger"),
    # feedback: authenticated by the provider's signature, not an API key
    ("POST", "/callbacks/sendgrid"),
    ("POST", "/callbacks/twilio"),
}
# audience (issue 10): one-click unsubscribe, authenticated by its signed token
PUBLIC |= {("GET", "/u/{token}"), ("POST", "/u/{token}")}
# the console (issue 14): its page and static files load without a key (the page then asks for one)
PUBLIC |= {("GET", "/console"), ("GET", "/console/{asset}")}
# any valid key may ask who it is: no scope, so never a 403
ANY_KEY = {("GET", "/api/v1/whoami")}


@pytest.fixture(autouse=True)
def _settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from notify_core.config import get_settings

    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "1")
    get_settings.cache_clear()


def api_module() -> dict[str, Any]:
    return inspect.unwrap(load_handler("functions/api/", "app.handler")).__globals__


def call(method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    handler = load_handler("functions/api/", "app.handler")
    return handler(rest_event(method, path, **kwargs), LambdaContext("ApiFunction", 512, 25))


def headers_of(reply: dict[str, Any]) -> dict[str, str]:
    return {name: values[-1] for name, values in (reply.get("multiValueHeaders") or {}).items()}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    reply = call("GET", "/swagger", query={"format": "json"})
    assert reply["statusCode"] == 200
    return json.loads(reply["body"])


def each_operation(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, ops in document["paths"].items() for m, op in ops.items()]


def test_every_route_is_documented_with_exactly_the_statuses_it_declares(document: dict[str, Any]) -> None:
    specs = {op: spec for spec in api_module()["routes"].specs for op in operations([spec])}
    documented = {(m, p): {int(c) for c in op["responses"]} for m, p, op in each_operation(document)}
    assert set(documented) == set(specs)
    for key, spec in specs.items():
        assert documented[key] == set(spec.statuses), key


def test_what_each_kind_of_route_can_answer_is_documented(document: dict[str, Any]) -> None:
    for method, path, op in each_operation(document):
        statuses = {int(c) for c in op["responses"]}
        assert 500 in statuses, (method, path)
        if (method, path) in ANY_KEY:
            assert {401, 429, 503} <= statuses and 403 not in statuses, (method, path)
        elif (method, path) not in PUBLIC:
            assert {401, 403, 429, 503} <= statuses, (method, path)
        if "requestBody" in op:
            assert {400, 413, 415, 422} <= statuses, (method, path)
        if "{" in path:
            assert {404, 422} <= statuses, (method, path)
        assert any(200 <= s < 300 for s in statuses), (method, path)
    ops = {(m, p): op for m, p, op in each_operation(document)}
    assert {int(c) for c in ops[("POST", "/api/v1/notifications/batch")]["responses"]} >= {202, 207, 422}
    assert {int(c) for c in ops[("POST", "/api/v1/users")]["responses"]} >= {201, 409}
    assert {int(c) for c in ops[("DELETE", "/api/v1/users/{id}")]["responses"]} >= {204}


def test_each_error_is_the_envelope_with_an_example(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for method, path, op in each_operation(document):
        for code, reply in op["responses"].items():
            if int(code) < 400:
                continue
            content = reply["content"]["application/json"]
            name = content["schema"]["$ref"].rsplit("/", 1)[-1]
            # the envelope, or a model that extends it (batch results, health checks alongside)
            assert schemas[name]["properties"]["error"] == {"$ref": "#/components/schemas/ErrorBody"}, name
            assert "error" in schemas[name]["required"]
            (example,) = content["examples"].values()
            ErrorEnvelope.model_validate(example["value"])
            assert example["value"]["error"]["code"] == ERRORS[int(code)][1], (method, path, code)


def test_success_replies_have_their_models(document: dict[str, Any]) -> None:
    for method, path, op in each_operation(document):
        for code, reply in op["responses"].items():
            if int(code) == 204:
                assert "content" not in reply, (method, path)
            elif int(code) < 300:
                assert reply["content"], (method, path, code)
                schema = next(iter(reply["content"].values()))["schema"]
                text = path == "/swagger" or path.startswith("/console")  # HTML and static files
                assert schema != {"type": "string"} or text, (method, path, code)


def test_health_and_swagger_are_public_and_the_rest_need_a_key(document: dict[str, Any]) -> None:
    for method, path, op in each_operation(document):
        if (method, path) in PUBLIC:
            assert "security" not in op, path
        else:
            assert op["security"] == [{"bearer": []}, {"apiKey": []}], path
    assert "security" not in document
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}


def test_request_models_carry_examples(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for name in ("UserCreate", "UserPatch", "NotificationCreate"):
        assert schemas[name]["examples"], name


def test_swagger_ui_needs_nothing_from_the_internet() -> None:
    reply = call("GET", "/swagger")
    headers = headers_of(reply)
    page = reply["body"]
    assert reply["statusCode"] == 200 and headers["Content-Type"].startswith("text/html")
    # no validator badge (it would send the document's URL to a public service), no remote assets
    assert "validatorUrl: null" in page
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?https?:""", page)
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "http" not in policy and "unsafe-eval" not in policy
    # exactly the page's inline scripts may run
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    hashes = {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts
    }
    allowed = set(re.search(r"script-src ([^;]+)", policy).group(1).split())  # type: ignore[union-attr]
    assert len(scripts) == 2 and hashes == allowed
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_unknown_routes_get_the_envelope_without_touching_a_service() -> None:
    for method, path in (("GET", "/nope"), ("DELETE", "/health"), ("PUT", "/api/v1/users")):
        reply = call(method, path)
        assert reply["statusCode"] == 404
        assert ErrorEnvelope.model_validate_json(reply["body"]).error.code == "not_found"
        assert headers_of(reply)["Cache-Control"] == "no-store"


def test_database_data_errors_are_a_422_never_a_500() -> None:
    backstop = api_module()["unstorable"]
    for exc in (
        psycopg.errors.UntranslatableCharacter(),
        psycopg.errors.NumericValueOutOfRange(),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ):
        reply = backstop(exc)
        assert reply.status_code == 422
        assert ErrorEnvelope.model_validate_json(reply.body).error.code == "validation_error"


def test_an_unexpected_error_is_a_500_envelope_without_a_trace() -> None:
    reply = api_module()["unexpected"](RuntimeError("secret bob@example.com"))
    assert reply.status_code == 500
    envelope = ErrorEnvelope.model_validate_json(reply.body)
    assert envelope.error.code == "internal_error" and "bob@example.com" not in reply.body
