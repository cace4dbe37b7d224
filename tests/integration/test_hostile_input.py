"""No input produces a 500: each input that once did (issue 9) is answered with the contract's
envelope and the status its operation documents (the Api helper checks both on every reply)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from notify_local.lambda_env import LambdaContext, load_handler, rest_event

from .conftest import Api, Reply, Tenant

EMAIL = {"to": "a@example.com", "from": "b@example.com", "subject": "Hi", "body": "Hello"}
SMS = {"to": "+14155550100", "body": "Hello"}
PUSH = {"token": "tok", "title": "Hi", "body": "Hello", "data": {"k": "v"}}
NUL = "a\u0000b"
SURROGATE = "a\ud800b"  # what the JSON escape "\ud800" decodes to


def fields_of(reply: Reply) -> list[str]:
    return [d["field"] for d in reply.error["details"]]


def invalid(reply: Reply, status: int, field: str) -> None:
    assert reply.status == status, reply.raw
    assert field in fields_of(reply), reply.raw


# ---------------------------------------------------------------- characters PostgreSQL cannot store

USER_FIELDS = ["email", "phone", "username", "external_id", "locale", "timezone"]


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
@pytest.mark.parametrize("field", USER_FIELDS)
def test_unstorable_characters_in_user_fields_are_422(api: Api, field: str, bad: str) -> None:
    invalid(api("POST", "/api/v1/users", {field: bad}), 422, field)


def test_unstorable_characters_in_push_tokens_and_patch_are_422(api: Api) -> None:
    invalid(api("POST", "/api/v1/users", {"push_tokens": ["ok", NUL]}), 422, "push_tokens[1]")
    user = api("POST", "/api/v1/users", {"username": "u"}).json
    invalid(api("PATCH", f"/api/v1/users/{user['id']}", {"username": SURROGATE}), 422, "username")


NOTIFICATION_CASES: list[tuple[str, dict[str, Any], str]] = [
    *[("email", {**EMAIL, key: NUL}, f"payload.{key}") for key in ("to", "from", "subject", "body")],
    ("email", {**EMAIL, "html": NUL}, "payload.html"),
    ("email", {**EMAIL, "reply_to": NUL}, "payload.reply_to"),
    ("sms", {**SMS, "to": NUL}, "payload.to"),
    ("sms", {**SMS, "body": NUL}, "payload.body"),
    ("push", {**PUSH, "token": NUL}, "payload.token"),
    ("push", {"topic": NUL, "title": "t", "body": "b"}, "payload.topic"),
    ("push", {**PUSH, "title": NUL}, "payload.title"),
    ("push", {**PUSH, "body": SURROGATE}, "payload.body"),
    ("push", {**PUSH, "data": {"k": NUL}}, "payload.data.k"),
    ("push", {**PUSH, "data": {NUL: "v"}}, "payload.data"),
]


@pytest.mark.parametrize(
    ("channel", "payload", "field"), NOTIFICATION_CASES, ids=[f"{c[0]}-{c[2]}" for c in NOTIFICATION_CASES]
)
def test_unstorable_characters_in_payloads_are_422(
    api: Api, channel: str, payload: dict[str, Any], field: str
) -> None:
    reply = api(
        "POST", "/api/v1/notifications", {"channel": channel, "provider": "console", "payload": payload}
    )
    invalid(reply, 422, field)


def test_unstorable_idempotency_keys_and_category_are_422(api: Api) -> None:
    base = {"channel": "email", "payload": EMAIL}
    invalid(api("POST", "/api/v1/notifications", {**base, "idempotency_key": NUL}), 422, "idempotency_key")
    invalid(api("POST", "/api/v1/notifications", {**base, "category": NUL}), 422, "category")
    invalid(
        api("POST", "/api/v1/notifications", base, headers={"Idempotency-Key": NUL}), 422, "Idempotency-Key"
    )
    # the payload as a JSON string, holding a NUL escape
    as_text = json.dumps({**EMAIL, "subject": NUL})
    invalid(api("POST", "/api/v1/notifications", {**base, "payload": as_text}), 422, "payload.subject")


def test_an_8_kb_idempotency_key_header_is_422_and_a_blank_one_is_no_key(api: Api) -> None:
    base = {"channel": "email", "payload": EMAIL}
    huge = api("POST", "/api/v1/notifications", base, headers={"Idempotency-Key": "k" * 8192})
    invalid(huge, 422, "Idempotency-Key")
    batch = api(
        "POST",
        "/api/v1/notifications/batch",
        {"notifications": [base]},
        headers={"Idempotency-Key": "k" * 8192},
    )
    invalid(batch, 422, "Idempotency-Key")
    blank = api("POST", "/api/v1/notifications", base, headers={"Idempotency-Key": "  "})
    assert blank.status == 202 and blank.json["idempotency_key"] is None


# ---------------------------------------------------------------- bodies the JSON parser must not choke on


def raw_call(
    tenant: Tenant, body: str, *, base64_encoded: bool = False, content_type: str = "application/json"
) -> Reply:
    """A request event with exactly this body (as API Gateway delivers binary bodies: base64)."""
    handler = load_handler("functions/api/", "app.handler")
    event = rest_event(
        "POST",
        "/api/v1/users",
        headers={"Content-Type": content_type, "X-Api-Key": tenant.key},
        source_ip="127.9.9.9",
    )
    event["body"], event["isBase64Encoded"] = body, base64_encoded
    result = handler(event, LambdaContext("ApiFunction", 512, 25))
    headers = {k: v[-1] for k, v in (result.get("multiValueHeaders") or {}).items()}
    return Reply(result["statusCode"], headers, result.get("body") or "")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("body", "base64_encoded"),
    [
        (b64(b'{"username": "\xff\xfe"}'), True),  # not UTF-8
        (b64('{"username": "ada"}'.encode("utf-16")), True),  # UTF-16 with its byte order mark
        (b64('{"username": "ada"}'.encode("utf-16-le")), True),  # UTF-16 without one
        (b64(b"\xef\xbb\xbf{}"), True),  # a UTF-8 byte order mark
        ("not base64!", True),
        ('{"username": "\ud800"}', False),  # an event string holding a lone surrogate
        ("[" * 10_000 + "]" * 10_000, False),
        ('{"a":' * 40 + "1" + "}" * 40, False),  # deeper than the limit, far from the recursion limit
        ('{"username": ' + "9" * 5000 + "}", False),  # over Python's 4,300-digit int limit
        ('{"username": ' + "9" * 100 + "}", False),
        ('{"username": 1e999}', False),
        ('{"username": NaN}', False),
        ('{"username": "ada"', False),
    ],
    ids=[
        "invalid-utf8",
        "utf16-bom",
        "utf16le",
        "utf8-bom",
        "bad-base64",
        "lone-surrogate",
        "10000-deep",
        "40-deep",
        "5000-digits",
        "100-digits",
        "huge-float",
        "nan",
        "truncated",
    ],
)
def test_bodies_that_are_not_json_the_api_reads_are_400(
    tenant: Tenant, body: str, base64_encoded: bool
) -> None:
    reply = raw_call(tenant, body, base64_encoded=base64_encoded)
    assert reply.status == 400, reply.raw
    assert reply.error["code"] == "validation_error" and fields_of(reply) == ["body"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/jsonx",
        "application/json-seq",
        "text/json",
        "application/x-json",
        "application/json x",
        "application/json; charset=utf-16",
        "jsonapplication/json",
        "application/vnd.api+json",
    ],
)
def test_media_types_that_merely_contain_json_are_415(tenant: Tenant, content_type: str) -> None:
    reply = raw_call(tenant, '{"username": "ada"}', content_type=content_type)
    assert reply.status == 415 and reply.error["code"] == "unsupported_media_type", reply.raw


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=UTF-8", 'application/json;charset="utf-8"'],
)
def test_json_media_type_is_parsed_not_matched(tenant: Tenant, content_type: str) -> None:
    assert raw_call(tenant, '{"username": "ada"}', content_type=content_type).status == 201


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/v1/users"), ("POST", "/api/v1/notifications")])
def test_an_array_where_one_object_belongs_is_422_never_its_first_element(
    api: Api, method: str, path: str, test_env: Any
) -> None:
    import psycopg

    items = [{"username": "first", "channel": "email", "payload": EMAIL}] * 2
    with psycopg.connect(test_env.database_url) as conn:
        before = conn.execute(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM notifications)"
        ).fetchone()
    reply = api(method, path, items)
    invalid(reply, 422, "body")
    assert reply.error["details"] == [{"field": "body", "message": "must be a JSON object"}]
    with psycopg.connect(test_env.database_url) as conn:
        after = conn.execute(
            "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM notifications)"
        ).fetchone()
    assert after == before  # nothing was created from the first element


# ---------------------------------------------------------------- values in range, strictly typed


@pytest.mark.parametrize(
    "send_at",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
    ],
)
def test_send_at_outside_the_sane_range_is_422(api: Api, send_at: str) -> None:
    reply = api("POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL, "send_at": send_at})
    invalid(reply, 422, "send_at")


@pytest.mark.parametrize(
    ("value", "field"), [(True, "max_attempts"), ("5", "max_attempts"), (5.0, "max_attempts")]
)
def test_numbers_are_strict(api: Api, value: Any, field: str) -> None:
    reply = api(
        "POST", "/api/v1/notifications", {"channel": "email", "payload": EMAIL, "max_attempts": value}
    )
    invalid(reply, 422, field)


@pytest.mark.parametrize(
    "phone",
    [
        "+\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10",
        "+\u0661\u0664\u0661\u0665\u0665\u0665\u0665\u0660\u0661\u0660\u0660",
        "+14155550100\n",
    ],
)
def test_phone_numbers_take_ascii_digits_only(api: Api, phone: str) -> None:
    if phone.endswith("\n"):  # surrounding whitespace is trimmed, as before
        assert api("POST", "/api/v1/users", {"phone": phone}).json["phone"] == "+14155550100"
        return
    invalid(api("POST", "/api/v1/users", {"phone": phone}), 422, "phone")
    invalid(
        api("POST", "/api/v1/notifications", {"channel": "sms", "payload": {"to": phone, "body": "x"}}),
        422,
        "payload.to",
    )


def forged(parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        forged(["2026-11-24T08:00:00+00:00", 12345]),
        forged([12345, "9b2f5c1e-6a0e-4a8e-9a57-3f9f1c2f3e4d"]),
        forged(["0001-01-01T00:00:00+14:00", "9b2f5c1e-6a0e-4a8e-9a57-3f9f1c2f3e4d"]),
        forged({"created": "x"}),
        forged(["a", "b", "c"]),
        forged([[[[[]]]], None]),
        "A" * 513,
        "not a cursor!",
    ],
)
def test_forged_cursors_are_422(api: Api, cursor: str) -> None:
    for path in ("/api/v1/notifications", "/api/v1/dlq"):
        invalid(api("GET", path, query={"cursor": cursor}), 422, "cursor")


@pytest.mark.parametrize("limit", ["\u0661\u0660", "1_0", "10.0", "99999999999999999999"])
def test_query_integers_take_ascii_digits(api: Api, limit: str) -> None:
    invalid(api("GET", "/api/v1/notifications", query={"limit": limit}), 422, "limit")


# ---------------------------------------------------------------- provider rules at the API (issue 7.5)


@pytest.mark.parametrize(
    ("channel", "payload", "field"),
    [
        ("push", {"token": "t", "topic": "news", "title": "t", "body": "b"}, "payload"),
        ("push", {"topic": "/topics/news", "title": "t", "body": "b"}, "payload.topic"),
        ("push", {**PUSH, "data": {"google.c.a": "x"}}, "payload"),
        ("push", {**PUSH, "data": {"from": "x"}}, "payload"),
        ("push", {**PUSH, "data": {"k": 1}}, "payload.data.k"),
        ("push", {**PUSH, "data": {"k": "x" * 4000}, "body": "y" * 200}, "payload"),
        ("email", {**EMAIL, "subject": "Hi\r\nBcc: x@example.com"}, "payload.subject"),
        ("email", {**EMAIL, "from": "not an address"}, "payload.from"),
        ("sms", {**SMS, "body": "x" * 1601}, "payload.body"),
    ],
    ids=[
        "token-and-topic",
        "topic-format",
        "google-key",
        "from-key",
        "non-string-data",
        "over-4kb",
        "subject-newline",
        "bad-from",
        "sms-too-long",
    ],
)
def test_what_a_provider_would_reject_is_422_at_the_api(
    api: Api, channel: str, payload: dict[str, Any], field: str
) -> None:
    invalid(api("POST", "/api/v1/notifications", {"channel": channel, "payload": payload}), 422, field)


# ---------------------------------------------------------------- order of checks, and the one error body


@pytest.mark.parametrize(
    "raw",
    ['{"channel": 1}', "[1, 2]", "{broken", '{"payload": "' + "\\u0000" + '"}'],
    ids=["schema", "array", "malformed", "nul"],
)
def test_a_key_lacking_the_scope_gets_403_whatever_the_body(
    make_tenant: Callable[..., Tenant], make_api: Callable[..., Api], raw: str
) -> None:
    reader = make_api(make_tenant(scopes=("notifications:read",)).key)
    reply = reader("POST", "/api/v1/notifications", raw=raw)
    assert reply.status == 403 and reply.error["code"] == "forbidden", reply.raw
    # and nothing about the schema leaks to a caller without any key
    anonymous = make_api(None)("POST", "/api/v1/notifications", raw=raw)
    assert anonymous.status == 401


def test_unknown_routes_and_methods_get_the_envelope(api: Api) -> None:
    for method, path in (("GET", "/nope"), ("PUT", "/api/v1/users"), ("DELETE", "/api/v1/notifications")):
        reply = api(method, path)
        assert reply.status == 404 and reply.error["code"] == "not_found", (method, path, reply.raw)


def test_an_all_rejected_batch_is_the_envelope_with_item_fields(api: Api) -> None:
    items = [
        {"channel": "x", "payload": EMAIL},
        {"channel": "sms", "payload": {"to": "bad", "body": "b"}},
        "text",
    ]
    reply = api("POST", "/api/v1/notifications/batch", {"notifications": items})
    assert reply.status == 422 and reply.error["code"] == "validation_error"
    assert fields_of(reply) == [
        "notifications[0].channel",
        "notifications[1].payload.to",
        "notifications[2].body",
    ]
    # the per-item results stay alongside, each item's details in the same {field, message} shape
    results = reply.json["results"]
    assert [r["index"] for r in results] == [0, 1, 2] and reply.json["rejected"] == 3
    assert results[1]["error"]["details"] == [
        {"field": "payload.to", "message": "must be an E.164 phone number such as +14155550100"}
    ]


def test_json_replies_carry_nosniff_and_no_store(api: Api, make_api: Callable[..., Api]) -> None:
    for reply in (
        api("GET", "/api/v1/notifications"),
        api("POST", "/api/v1/users", {"bogus": 1}),
        make_api(None)("GET", "/api/v1/notifications"),
        make_api(None)("GET", "/health"),
        api("GET", "/nope"),
    ):
        assert reply.headers["X-Content-Type-Options"] == "nosniff", reply.raw
        assert reply.headers["Cache-Control"] == "no-store", reply.raw
