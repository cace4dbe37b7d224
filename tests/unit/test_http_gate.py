"""The HTTP gate (notify_core.http) check by check, with no services: the key table and the Redis
limiter are in-memory fakes, so each decision (size, media type, key, failure throttle, rate limit,
scope, body) and each refusal's exact reply is pinned down."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import Response

from notify_core import auth, http, ratelimit
from notify_core.config import Settings
from notify_core.errors import (
    Forbidden,
    MalformedRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from notify_core.ratelimit import Decision

FORM = "application/x-www-form-urlencoded"
KEY = "nk_0123abcd_" + "k" * 32
TENANT, KEY_ID = uuid.uuid4(), uuid.uuid4()


# ---------------------------------------------------------------- fakes


@dataclass
class FakeRedisLimits:
    """ratelimit.check over a dict: `limit` takes per name, no clock (nothing refills)."""

    used: dict[str, int] = field(default_factory=dict)
    calls: list[tuple[str, int, int, bool]] = field(default_factory=list)
    down: bool = False

    def check(
        self, name: str, limit: int, period_s: int, cost: int = 1, *, dry_run: bool = False
    ) -> Decision:
        self.calls.append((name, limit, period_s, dry_run))
        if self.down:
            raise ratelimit.RedisUnavailable("connection refused")
        used = self.used.get(name, 0)
        allowed = used + cost <= limit
        if allowed and not dry_run:
            used = self.used[name] = used + cost
        return Decision(allowed, limit, max(limit - used, 0), 0 if allowed else 7, period_s)


@dataclass
class Recorder:
    """Stands in for Powertools' metrics and logger: what was emitted, in order."""

    metrics: list[tuple[str, str, float]] = field(default_factory=list)
    logs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.metrics.append((name, unit, value))

    def error(self, message: str, extra: dict[str, Any]) -> None:
        self.logs.append(("error", message, extra))

    def warning(self, message: str, extra: dict[str, Any]) -> None:
        self.logs.append(("warning", message, extra))


@dataclass
class Env:
    limits: FakeRedisLimits
    seen: Recorder
    keys: dict[bytes, auth.Principal]
    lookups: list[bytes]
    settings: Settings

    def configure(self, **values: Any) -> None:
        self.settings = self.settings.model_copy(update=values)


def principal(
    scopes: tuple[str, ...] = ("notifications:read",), rate_limit: int | None = None
) -> auth.Principal:
    return auth.Principal(TENANT, KEY_ID, "nk_0123abcd", frozenset(scopes), rate_limit)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Env:
    settings = Settings(
        api_key_cache_seconds=0,
        auth_failure_limit=3,
        auth_failure_window_seconds=60,
        rate_limit_requests=5,
        rate_limit_window_seconds=60,
        max_body_bytes=1024,
    )
    state = Env(FakeRedisLimits(), Recorder(), {}, [], settings)

    def load(digest: bytes) -> auth.Principal | None:
        state.lookups.append(digest)
        return state.keys.get(digest)

    monkeypatch.setattr(auth, "_load_principal", load)
    monkeypatch.setattr(auth, "get_settings", lambda: state.settings)
    monkeypatch.setattr(http, "get_settings", lambda: state.settings)
    monkeypatch.setattr(http.ratelimit, "check", state.limits.check)
    monkeypatch.setattr(http, "metrics", state.seen)
    monkeypatch.setattr(http, "logger", state.seen)
    auth.clear_cache()
    return state


def known(env: Env, who: auth.Principal | None = None) -> auth.Principal:
    who = who or principal()
    env.keys[auth.hash_key(KEY)] = who
    return who


def event(
    body: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    base64_encoded: bool = False,
    source_ip: str | None = "203.0.113.9",
) -> dict[str, Any]:
    hdrs = (
        {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"} if headers is None else headers
    )
    ev: dict[str, Any] = {
        "headers": dict(hdrs),
        "multiValueHeaders": {k: [v] for k, v in hdrs.items()},
        "body": body,
        "isBase64Encoded": base64_encoded,
    }
    if source_ip is not None:
        ev["requestContext"] = {"identity": {"sourceIp": source_ip}}
    return ev


READ = http.Gate("notifications:read", takes_body=False)
WRITE = http.Gate("notifications:read", takes_body=True)


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


# ---------------------------------------------------------------- the one error reply


def test_error_body_is_the_contracts_envelope() -> None:
    assert json.loads(http.error_body("not_found", "no such thing")) == {
        "error": {"code": "not_found", "message": "no such thing", "details": []}
    }
    assert json.loads(http.error_body("c", "m", [{"field": "f", "message": "x"}])) == {
        "error": {"code": "c", "message": "m", "details": [{"field": "f", "message": "x"}]}
    }


def test_error_response_carries_status_envelope_headers_and_extra_members() -> None:
    some_id = uuid.uuid4()
    exc = RateLimited("slow down", [{"field": "id", "message": some_id}], headers={"Retry-After": "3"})
    reply = http.error_response(exc, results=[1, 2])
    assert reply.status_code == 429
    assert reply.headers == {"Retry-After": "3", "Content-Type": "application/json"}
    assert json.loads(reply.body or "") == {
        "error": {
            "code": "rate_limited",
            "message": "slow down",
            "details": [{"field": "id", "message": str(some_id)}],
        },
        "results": [1, 2],
    }
    plain = http.error_response(Forbidden("no"))
    assert plain.headers == {"Content-Type": "application/json"}


def test_proxy_result_is_a_rest_proxy_reply() -> None:
    reply = Response(201, "application/json", '{"a": 1}', headers={"X-One": "1", "Set": ["a", "b"], "N": 5})  # type: ignore[dict-item]
    assert http.proxy_result(reply) == {
        "statusCode": 201,
        "multiValueHeaders": {
            "X-One": ["1"],
            "Set": ["a", "b"],
            "N": ["5"],
            "Content-Type": ["application/json"],
        },
        "body": '{"a": 1}',
        "isBase64Encoded": False,
    }
    assert http.proxy_result(Response(204))["body"] == ""


# ---------------------------------------------------------------- 1-2: size and media type


def test_parameters_after_an_empty_one_are_still_read() -> None:
    assert http.parse_media_type("application/json;; charset=utf-8") == (
        "application/json",
        {"charset": "utf-8"},
    )
    assert http.parse_media_type("text/plain; ;q=1") == ("text/plain", {"q": "1"})


def test_a_body_at_the_limit_passes_and_one_byte_more_is_413(env: Env) -> None:
    http.check_size("x" * 1024, False)
    http.check_size("é" * 512, False)  # 1024 bytes in UTF-8
    http.check_size("", False)
    http.check_size(None, True)
    with pytest.raises(PayloadTooLarge) as refused:
        http.check_size("é" * 512 + "x", False)
    assert refused.value.message == "the request body is 1025 bytes; the limit is 1024"
    assert refused.value.details == [{"field": "body", "message": "at most 1024 bytes"}]


def test_a_base64_body_counts_its_decoded_size(env: Env) -> None:
    # 1368 characters of base64 decode to 1026 bytes; as text they would be 1368
    body = b64(b"x" * 1026)
    assert len(body) == 1368
    with pytest.raises(PayloadTooLarge) as refused:
        http.check_size(body, True)
    assert refused.value.message == "the request body is 1026 bytes; the limit is 1024"
    http.check_size(b64(b"x" * 1023), True)  # 1364 characters: 1023 bytes, under the limit
    # 1367 characters (not a multiple of 4): 1367 * 3 // 4 = 1025 whole bytes, not 1025.25
    with pytest.raises(PayloadTooLarge, match=r"^the request body is 1025 bytes; the limit is 1024$"):
        http.check_size("A" * 1367, True)


def test_a_route_may_lower_the_limit_but_not_raise_it(env: Env) -> None:
    with pytest.raises(PayloadTooLarge, match=r"the limit is 10$"):
        http.check_size("x" * 11, False, route_limit=10)
    http.check_size("x" * 10, False, route_limit=10)
    with pytest.raises(PayloadTooLarge, match=r"the limit is 1024$"):
        http.check_size("x" * 1025, False, route_limit=4096)


@pytest.mark.parametrize(
    "value",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json; charset=utf8",
        "Application/JSON; Charset=UTF8",
    ],
)
def test_json_in_utf8_is_accepted_as_json(value: str) -> None:
    assert http.check_media_type(value) == "application/json"


def test_no_content_type_is_the_routes_first_media_type() -> None:
    assert http.check_media_type(None) == "application/json"
    assert http.check_media_type(None, (FORM, "application/json")) == FORM
    assert http.check_media_type("application/json", (FORM, "application/json")) == "application/json"
    assert http.check_media_type(f"{FORM}; charset=utf-8", (FORM,)) == FORM


def test_a_refused_media_type_says_what_to_send() -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        http.check_media_type("text/plain")
    assert refused.value.message == "send JSON with 'Content-Type: application/json'"
    assert refused.value.details == [
        {"field": "Content-Type", "message": "must be application/json (charset utf-8 if given)"}
    ]
    with pytest.raises(UnsupportedMediaType) as form:
        http.check_media_type("application/json; charset=latin-1", (FORM, "application/json"))
    assert form.value.message == f"send the body with 'Content-Type: {FORM} or application/json'"
    assert form.value.details == [
        {"field": "Content-Type", "message": f"must be {FORM} or application/json (charset utf-8 if given)"}
    ]
    with pytest.raises(UnsupportedMediaType, match=r"^send JSON with"):
        http.check_media_type("not a media type")


def test_raw_body_is_the_clients_bytes() -> None:
    assert http.raw_body({"body": "a=1&b=é"}) == "a=1&b=é".encode()
    assert http.raw_body({"body": "\udcff", "isBase64Encoded": False}) == b"\xff"  # surrogateescape
    assert http.raw_body({"body": b64(b"\x00\xffsig"), "isBase64Encoded": True}) == b"\x00\xffsig"
    assert http.raw_body({}) == b""
    assert http.raw_body({"body": None, "isBase64Encoded": True}) == b""
    with pytest.raises(MalformedRequest) as refused:
        http.raw_body(
            {"body": "eyJhIjogMX0=!", "isBase64Encoded": True}
        )  # lenient decoding would drop the "!"
    assert refused.value.message == "the request body is not valid base64"
    assert refused.value.details == [{"field": "body", "message": "not valid base64"}]


# ---------------------------------------------------------------- 6: the body


@pytest.mark.parametrize(
    ("body", "is_base64", "why"),
    [
        ("eyJhIjogMX0=!", True, "not valid base64"),
        ("eyJhIjogMX0", True, "not valid base64"),  # missing padding: strict decoding refuses it
        (b64(b"\xff{}"), True, "not valid UTF-8"),
        (b64('{"a": 1}'.encode("utf-16")), True, "not valid UTF-8"),
        ('{"a": "\ud800"}', False, "not valid UTF-8"),
        ("\ufeff{}", False, "not valid JSON: it starts with a byte order mark"),
        (b64(b"\xef\xbb\xbf{}"), True, "not valid JSON: it starts with a byte order mark"),
    ],
)
def test_unreadable_bodies_are_400_with_the_reason(body: str, is_base64: bool, why: str) -> None:
    with pytest.raises(MalformedRequest) as refused:
        http.read_json(body, is_base64)
    assert refused.value.status == 400
    assert refused.value.message == f"the request body is {why}"
    assert refused.value.details == [{"field": "body", "message": why}]


def test_json_syntax_errors_carry_the_parsers_reason() -> None:
    with pytest.raises(MalformedRequest) as refused:
        http.read_json('{"a": }', False)
    why = refused.value.details[0]["message"]
    assert why.startswith("not valid JSON") and why != "None"
    assert refused.value.message == f"the request body is {why}"


def test_readable_bodies() -> None:
    assert http.read_json(b64('{"a": "é"}'), True) == {"a": "é"}
    assert http.read_json('{"a": "é"}', False) == {"a": "é"}
    assert http.read_json("", False) is None


def test_a_body_that_is_not_an_object_is_422() -> None:
    with pytest.raises(ValidationFailed) as refused:
        http.require_object([1])
    assert refused.value.status == 422
    assert refused.value.message == "invalid body: must be a JSON object"
    assert refused.value.details == [{"field": "body", "message": "must be a JSON object"}]
    assert http.require_object({"a": 1}) == {"a": 1}


# ---------------------------------------------------------------- 3-4: key, failures, rate limit


def test_admit_takes_one_token_of_the_keys_limit(env: Env) -> None:
    who = known(env)
    admission = http.admit({"Authorization": f"Bearer {KEY}"}, "203.0.113.9")
    assert admission.principal == who
    assert admission.headers == {"RateLimit-Limit": "5", "RateLimit-Remaining": "4", "RateLimit-Reset": "60"}
    # the source's failure budget is looked at (not taken) before the lookup, then one token taken
    assert env.limits.calls == [("authfail:203.0.113.9", 3, 60, True), (f"key:{KEY_ID}", 5, 60, False)]
    assert env.seen.metrics == []


def test_a_keys_own_rate_limit_wins_over_the_default(env: Env) -> None:
    known(env, principal(rate_limit=2))
    assert http.admit({"X-Api-Key": KEY}).headers["RateLimit-Limit"] == "2"
    http.admit({"X-Api-Key": KEY})
    with pytest.raises(RateLimited) as refused:
        http.admit({"X-Api-Key": KEY})
    assert isinstance(refused.value, http.RateLimitExceeded)
    assert refused.value.message == "rate limit of 2 requests exceeded; retry in 7 s"
    assert refused.value.details == [{"field": "api_key", "message": "retry after 7 seconds"}]
    assert refused.value.headers == {
        "RateLimit-Limit": "2",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "60",
        "Retry-After": "7",
    }


def test_an_unknown_key_is_counted_against_its_source(env: Env) -> None:
    with pytest.raises(Unauthorized, match=r"^the API key is unknown or revoked$"):
        http.admit({"X-Api-Key": KEY}, "198.51.100.7")
    assert env.seen.metrics == [("AuthFailures", "Count", 1)]
    # checked (dry run) before the lookup, then one failure taken
    assert env.limits.calls == [
        ("authfail:198.51.100.7", 3, 60, True),
        ("authfail:198.51.100.7", 3, 60, False),
    ]
    assert env.limits.used == {"authfail:198.51.100.7": 1}
    assert env.lookups == [auth.hash_key(KEY)]


def test_a_missing_key_is_counted_but_needs_no_lookup(env: Env) -> None:
    with pytest.raises(Unauthorized, match=r"^an API key is required"):
        http.admit({}, "198.51.100.7")
    assert env.limits.calls == [("authfail:198.51.100.7", 3, 60, False)]
    assert env.lookups == []


def test_without_a_source_address_failures_are_only_counted_in_metrics(env: Env) -> None:
    for source in (None, ""):
        with pytest.raises(Unauthorized):
            http.admit({"X-Api-Key": KEY}, source)
    assert env.limits.calls == []
    assert env.seen.metrics == [("AuthFailures", "Count", 1)] * 2


def test_a_source_that_keeps_failing_is_refused_before_any_lookup(env: Env) -> None:
    for _ in range(3):
        with pytest.raises(Unauthorized):
            http.admit({"X-Api-Key": KEY}, "198.51.100.7")
    assert len(env.lookups) == 3
    known(env)  # even a good key: the address spent its budget
    with pytest.raises(RateLimited) as refused:
        http.admit({"X-Api-Key": KEY}, "198.51.100.7")
    assert type(refused.value) is RateLimited
    assert refused.value.message == "too many failed authentications from this address; retry in 7 s"
    assert refused.value.details == [{"field": "api_key", "message": "retry after 7 seconds"}]
    assert refused.value.headers == {"Retry-After": "7"}
    assert len(env.lookups) == 3
    assert env.seen.metrics[-1] == ("AuthFailuresThrottled", "Count", 1)
    assert env.seen.metrics.count(("AuthFailures", "Count", 1)) == 3
    # another address is not affected
    assert http.admit({"X-Api-Key": KEY}, "198.51.100.8").principal.key_id == KEY_ID


def test_the_failure_throttle_fails_open_without_redis(env: Env) -> None:
    env.limits.down = True
    with pytest.raises(Unauthorized):
        http.admit({"X-Api-Key": KEY}, "198.51.100.7")
    assert env.lookups == [auth.hash_key(KEY)]
    assert env.seen.metrics == [("AuthFailures", "Count", 1)]


def test_without_redis_the_rate_limit_fails_open_by_default(env: Env) -> None:
    who = known(env)
    env.limits.down = True
    admission = http.admit({"X-Api-Key": KEY}, "203.0.113.9")
    assert admission == http.Admission(who, {})
    assert env.seen.metrics == [("RateLimiterUnavailable", "Count", 1)]
    assert env.seen.logs == [
        ("warning", "rate limiter unreachable; failing open", {"error": "RedisUnavailable"})
    ]


def test_without_redis_the_rate_limit_may_fail_closed(env: Env) -> None:
    known(env)
    env.limits.down = True
    env.configure(rate_limit_fail_mode="closed")
    with pytest.raises(ServiceUnavailable) as refused:
        http.admit({"X-Api-Key": KEY})
    assert refused.value.message == "the rate limiter is unavailable; retry shortly"
    assert env.seen.metrics == [("RateLimiterUnavailable", "Count", 1)]
    assert env.seen.logs == [
        ("error", "rate limiter unreachable; failing closed", {"error": "RedisUnavailable"})
    ]


# ---------------------------------------------------------------- the gate


def test_no_route_is_left_to_the_resolver_after_size_and_media_type(env: Env) -> None:
    assert http.gate(event('{"a": 1}'), None) == http.Admitted(None, {}, None)
    with pytest.raises(UnsupportedMediaType):
        http.gate(event("a=1", {"Content-Type": FORM}), None)
    assert env.limits.calls == []


def test_a_keyed_route_is_admitted_with_its_rate_limit_headers(env: Env) -> None:
    who = known(env)
    seen: list[auth.Principal] = []
    admitted = http.gate(event(), READ, seen.append)
    assert admitted.principal == who
    assert admitted.headers == {"RateLimit-Limit": "5", "RateLimit-Remaining": "4", "RateLimit-Reset": "60"}
    assert admitted.body is None
    assert seen == [who]
    assert http.gate(event(), READ).principal == who  # no callback: fine too


def test_the_gate_counts_failures_per_source_address(env: Env) -> None:
    with pytest.raises(Unauthorized):
        http.gate(event(source_ip="192.0.2.44"), READ)
    assert env.limits.used == {"authfail:192.0.2.44": 1}
    with pytest.raises(Unauthorized):
        http.gate(event(source_ip=None), READ)
    assert env.limits.used == {"authfail:192.0.2.44": 1}
    with pytest.raises(Unauthorized):
        http.gate({**event(), "requestContext": {"identity": None}}, READ)
    assert env.limits.used == {"authfail:192.0.2.44": 1}


def test_a_key_without_the_routes_scope_is_403_with_rate_limit_headers(env: Env) -> None:
    known(env, principal(scopes=("users:read",)))
    with pytest.raises(Forbidden) as refused:
        http.gate(event(), READ)
    assert refused.value.message == "this API key lacks the scope 'notifications:read'"
    assert refused.value.headers == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "60",
    }


def test_a_public_route_needs_no_key(env: Env) -> None:
    public = http.Gate(None, takes_body=True)
    admitted = http.gate(event('{"a": 1}', {"Content-Type": "application/json"}), public)
    assert admitted == http.Admitted(None, {}, {"a": 1})
    assert env.limits.calls == []


def test_the_body_is_read_only_for_routes_that_take_one(env: Env) -> None:
    known(env)
    assert http.gate(event('{"a": 1}'), WRITE).body == {"a": 1}
    assert http.gate(event('{"a": 1}'), READ).body is None
    assert http.gate(event(None), WRITE).body is None
    assert http.gate(event(b64('{"b": 2}'), base64_encoded=True), WRITE).body == {"b": 2}


def test_a_body_without_content_type_is_taken_as_json(env: Env) -> None:
    known(env)
    ev = event('{"a": 1}', {"Authorization": f"Bearer {KEY}"})
    assert http.gate(ev, WRITE).body == {"a": 1}
    assert ev["headers"]["Content-Type"] == "application/json"
    assert ev["multiValueHeaders"]["Content-Type"] == ["application/json"]


def test_a_bad_body_is_refused_with_the_rate_limit_headers(env: Env) -> None:
    known(env)
    with pytest.raises(ValidationFailed) as refused:
        http.gate(event("[1]"), WRITE)
    assert refused.value.headers == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "60",
    }
    with pytest.raises(MalformedRequest) as malformed:
        http.gate(event("{"), WRITE)
    assert malformed.value.headers["RateLimit-Remaining"] == "3"


def test_the_size_check_comes_first_and_uses_the_routes_limit(env: Env) -> None:
    small = http.Gate(None, takes_body=True, max_body_bytes=8)
    with pytest.raises(PayloadTooLarge, match=r"the limit is 8$"):
        http.gate(event('{"a": 12345}', {"Content-Type": "text/plain"}), small)
    with pytest.raises(PayloadTooLarge, match=r"the limit is 1024$"):
        http.gate(event("x" * 1025, {"Content-Type": "text/plain"}), None)
    # a base64 body is measured decoded: 1368 characters, 1026 bytes
    with pytest.raises(PayloadTooLarge, match="is 1026 bytes"):
        http.gate(event(b64(b"x" * 1026), base64_encoded=True), None)


def test_a_form_route_takes_its_media_type_and_the_event_says_so(env: Env) -> None:
    form = http.Gate(None, takes_body=False, media_types=(FORM,))
    ev = event("a=1", {"content-type": f"{FORM}; charset=UTF-8"})
    assert http.gate(ev, form) == http.Admitted(None, {}, None)
    assert ev["headers"] == {"Content-Type": FORM}
    assert ev["multiValueHeaders"] == {"Content-Type": [FORM]}
    with pytest.raises(UnsupportedMediaType, match=r"^send the body with"):
        http.gate(event('{"a": 1}'), form)


def test_the_content_type_is_made_canonical_in_both_header_maps() -> None:
    ev: dict[str, Any] = {
        "headers": {"CONTENT-TYPE": "application/json; charset=utf-8", "X-Other": "1"},
        "multiValueHeaders": {"content-type": ["application/json; charset=utf-8"], "X-Other": ["1"]},
    }
    http._canonical_content_type(ev)
    assert ev == {
        "headers": {"X-Other": "1", "Content-Type": "application/json"},
        "multiValueHeaders": {"X-Other": ["1"], "Content-Type": ["application/json"]},
    }
    bare: dict[str, Any] = {"headers": None}
    http._canonical_content_type(bare, FORM)
    assert bare == {"headers": None}
    only: dict[str, Any] = {"multiValueHeaders": {}}
    http._canonical_content_type(only, FORM)
    assert only == {"multiValueHeaders": {"Content-Type": [FORM]}}


def test_headers_with_no_value_are_ignored(env: Env) -> None:
    known(env)
    ev = event('{"a": 1}', {"Authorization": f"Bearer {KEY}"})
    ev["headers"]["Content-Type"] = None  # API Gateway sends null for some
    assert http.gate(ev, WRITE).body == {"a": 1}
    assert http._header({"content-type": None, "Content-Type": "text/plain"}, "CONTENT-TYPE") == "text/plain"
    assert http._header({}, "content-type") is None
