"""What every HTTP entry point shares: the gate in front of routing and the one error reply.

The gate runs before any route code, cheapest check first, so that neither an anonymous caller nor
a flood of bad requests costs more than it must, and no parser ever sees unchecked bytes:

1. size              body over MAX_BODY_BYTES                                    → 413
2. media type        parsed: `application/json`, charset utf-8 if any; no header  → 415 otherwise
3. API key           unknown, revoked or missing; failures counted per source     → 401 (429 when
                     address, which after AUTH_FAILURE_LIMIT failures per window     a source keeps
                     is refused before any key lookup)                               failing)
4. rate limit        per key (Redis, one round trip)                             → 429
5. scope             the route's scope, before the body is looked at             → 403
6. body              read once: strict UTF-8, JSON within depth and number limits → 400;
                     a JSON object where the route takes a body                  → 422

Every refusal is a DomainError, and every DomainError becomes a reply through `error_response`:
the gate and the API's exception handlers share it, so each non-2xx reply has the same envelope.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.event_handler import Response

from . import auth, jsontext, ratelimit
from .config import get_settings
from .errors import (
    DomainError,
    MalformedRequest,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from .observability import logger, metrics

JSON = "application/json"

# Headers on every reply of the API: no MIME sniffing, and nothing a shared cache may keep (replies
# carry tenants' data and are per API key).
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


# ---------------------------------------------------------------- the one error reply


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"error": {"code": code, "message": message, "details": details or []}})


def error_response(exc: DomainError, **extra: Any) -> Response[str]:
    """The reply for any refusal: the contract's envelope, the error's own headers (Retry-After, ...),
    and `extra` top-level members beside `error` where a route documents them (batch results)."""
    body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}, **extra}
    return Response(exc.status, JSON, json.dumps(body, default=str), headers=exc.reply_headers() or None)


def proxy_result(response: Response[str]) -> dict[str, Any]:
    """A Response as the Lambda proxy result API Gateway expects (for replies made before routing)."""
    headers: dict[str, list[str]] = {}
    for name, value in response.headers.items():
        headers[name] = list(value) if isinstance(value, list) else [str(value)]
    return {
        "statusCode": response.status_code,
        "multiValueHeaders": headers,
        "body": response.body or "",
        "isBase64Encoded": False,
    }


# ---------------------------------------------------------------- 1-2: size and media type

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # noqa: S105 - an RFC 9110 token, not a password
_MEDIA_TYPE = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*")
_PARAMETER = re.compile(rf'\s*({_TOKEN})\s*=\s*(?:({_TOKEN})|"((?:[^"\\]|\\.)*)")\s*')


def parse_media_type(value: str) -> tuple[str, dict[str, str]] | None:
    """`type/subtype` (lower case) and its parameters (names lower case), per RFC 9110 §8.3.1;
    None when `value` is not a media type at all."""
    head, *rest = value.split(";")
    found = _MEDIA_TYPE.fullmatch(head)
    if found is None:
        return None
    params: dict[str, str] = {}
    for part in rest:
        if not part.strip():
            continue
        param = _PARAMETER.fullmatch(part)
        if param is None:
            return None
        params[param.group(1).lower()] = param.group(2) if param.group(2) is not None else param.group(3)
    return f"{found.group(1)}/{found.group(2)}".lower(), params


def check_size(body: str | None, is_base64: bool, route_limit: int | None = None) -> None:
    if not body:
        return
    size = len(body) * 3 // 4 if is_base64 else len(body.encode("utf-8", "surrogatepass"))
    limit = min(get_settings().max_body_bytes, route_limit or get_settings().max_body_bytes)
    if size > limit:
        raise PayloadTooLarge(
            f"the request body is {size} bytes; the limit is {limit}",
            [{"field": "body", "message": f"at most {limit} bytes"}],
        )


def check_media_type(content_type: str | None, accepted: tuple[str, ...] = (JSON,)) -> str:
    """A body must be sent as one of the route's media types (`application/json` but for the routes
    that take a form post: one-click unsubscribe, Twilio's callbacks), charset, if given, utf-8.
    No Content-Type is taken as the first. Returns the media type."""
    if content_type is None:
        return accepted[0]
    parsed = parse_media_type(content_type)
    charset = (parsed[1].get("charset", "utf-8") if parsed else "").lower()
    if parsed is None or parsed[0] not in accepted or charset not in ("utf-8", "utf8"):
        expected = " or ".join(accepted)
        what = "JSON" if accepted == (JSON,) else "the body"
        raise UnsupportedMediaType(
            f"send {what} with 'Content-Type: {expected}'",
            [{"field": "Content-Type", "message": f"must be {expected} (charset utf-8 if given)"}],
        )
    return parsed[0]


def raw_body(event: dict[str, Any]) -> bytes:
    """The request body's bytes as the client sent them (API Gateway may have base64-encoded them):
    for routes that verify a signature over the raw body. Invalid base64 is a 400."""
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):
        return body.encode("utf-8", "surrogateescape")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("not valid base64") from None


# ---------------------------------------------------------------- 6: the body


def _malformed(why: str) -> MalformedRequest:
    return MalformedRequest(f"the request body is {why}", [{"field": "body", "message": why}])


def read_json(body: str | None, is_base64: bool) -> Any:
    """The body as a JSON value (None when there is none). Invalid base64, bytes that are not UTF-8
    (UTF-16 included), a byte order mark, JSON syntax errors, nesting deeper than
    jsontext.MAX_DEPTH and over-long numbers are all a 400."""
    if not body:
        return None
    if is_base64:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise _malformed("not valid base64") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("not valid UTF-8") from None
    else:
        text = body
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # unpaired surrogates: no UTF-8 byte sequence makes these
            raise _malformed("not valid UTF-8") from None
    if text.startswith("\ufeff"):
        raise _malformed("not valid JSON: it starts with a byte order mark")
    try:
        return jsontext.loads(text)
    except jsontext.JsonTextError as exc:
        raise _malformed(str(exc)) from None


def require_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed.field("body", "must be a JSON object")
    return value


# ---------------------------------------------------------------- 3-4: key and rate limit


@dataclass(frozen=True, slots=True)
class Admission:
    principal: auth.Principal
    headers: dict[str, str]


def _auth_failures_key(source_ip: str) -> str:
    return f"authfail:{source_ip}"


def _refuse_failing_source(source_ip: str | None) -> None:
    """Before a key lookup (a database query): refuse a source that spent its failure budget."""
    if not source_ip:
        return
    settings = get_settings()
    try:
        decision = ratelimit.check(
            _auth_failures_key(source_ip),
            settings.auth_failure_limit,
            settings.auth_failure_window_seconds,
            dry_run=True,
        )
    except ratelimit.RedisUnavailable:
        return  # fail open, as the per-key limiter does; the failure is counted there
    if not decision.allowed:
        metrics.add_metric(name="AuthFailuresThrottled", unit="Count", value=1)
        raise RateLimited(
            f"too many failed authentications from this address; retry in {decision.retry_after_s} s",
            [{"field": "api_key", "message": f"retry after {decision.retry_after_s} seconds"}],
            headers={"Retry-After": str(decision.retry_after_s)},
        )


def _count_auth_failure(source_ip: str | None) -> None:
    metrics.add_metric(name="AuthFailures", unit="Count", value=1)
    if not source_ip:
        return
    settings = get_settings()
    try:
        ratelimit.check(
            _auth_failures_key(source_ip), settings.auth_failure_limit, settings.auth_failure_window_seconds
        )
    except ratelimit.RedisUnavailable:
        return


def admit(headers: dict[str, str], source_ip: str | None = None) -> Admission:
    """Authenticate the API key and take one token from its rate limit (one Redis round trip).
    A key not in this container's cache is looked up only if `source_ip` has not failed too often."""
    try:
        principal = auth.authenticate(
            auth.key_from_headers(headers), before_lookup=lambda: _refuse_failing_source(source_ip)
        )
    except Unauthorized:
        _count_auth_failure(source_ip)
        raise
    settings = get_settings()
    limit = principal.rate_limit or settings.rate_limit_requests
    try:
        decision = ratelimit.check(f"key:{principal.key_id}", limit, settings.rate_limit_window_seconds)
    except ratelimit.RedisUnavailable as exc:
        metrics.add_metric(name="RateLimiterUnavailable", unit="Count", value=1)
        if settings.rate_limit_fail_mode == "closed":
            logger.error("rate limiter unreachable; failing closed", extra={"error": type(exc).__name__})
            raise ServiceUnavailable("the rate limiter is unavailable; retry shortly") from exc
        logger.warning("rate limiter unreachable; failing open", extra={"error": type(exc).__name__})
        return Admission(principal, {})
    if not decision.allowed:
        raise RateLimitExceeded(decision)
    return Admission(principal, decision.headers())


class RateLimitExceeded(RateLimited):
    def __init__(self, decision: ratelimit.Decision) -> None:
        super().__init__(
            f"rate limit of {decision.limit} requests exceeded; retry in {decision.retry_after_s} s",
            [{"field": "api_key", "message": f"retry after {decision.retry_after_s} seconds"}],
            headers=decision.headers(),
        )


# ---------------------------------------------------------------- the gate


@dataclass(frozen=True, slots=True)
class Gate:
    """What a route asks of the gate: a scope (None: public) and whether it reads a body."""

    scope: str | None
    takes_body: bool
    # the media types the body may be sent as (the first when there is no Content-Type), and a limit
    # below MAX_BODY_BYTES: form posts for one-click unsubscribe and Twilio's status callbacks
    media_types: tuple[str, ...] = (JSON,)
    max_body_bytes: int | None = None


@dataclass(slots=True)
class Admitted:
    principal: auth.Principal | None
    headers: dict[str, str]  # to add to the reply (RateLimit-*)
    body: Any  # the parsed JSON object, or None


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted and v is not None), None)


def _canonical_content_type(event: dict[str, Any], media_type: str = JSON) -> None:
    """After the check, the event says plain `application/json` (or the route's media type): what
    comes later (the resolver's validation) compares the header as text."""
    for field in ("headers", "multiValueHeaders"):
        values = event.get(field)
        if isinstance(values, dict):
            for name in [k for k in values if k.lower() == "content-type"]:
                del values[name]
            values["Content-Type"] = media_type if field == "headers" else [media_type]


def gate(
    event: dict[str, Any], route: Gate | None, on_admitted: Callable[[auth.Principal], None] | None = None
) -> Admitted:
    """Run checks 1-6 on an API Gateway REST proxy event for `route` (None: no such route, which the
    resolver answers). Raises the DomainError of the first check that refuses."""
    headers = {k: v for k, v in (event.get("headers") or {}).items() if v is not None}
    body, is_base64 = event.get("body"), bool(event.get("isBase64Encoded"))
    media_types = route.media_types if route is not None else (JSON,)
    check_size(body, is_base64, route.max_body_bytes if route is not None else None)
    if body:
        media = check_media_type(_header(headers, "content-type"), media_types)
        _canonical_content_type(event, media)
    if route is None:
        return Admitted(None, {}, None)
    admitted = Admitted(None, {}, None)
    if route.scope is not None:
        source_ip = ((event.get("requestContext") or {}).get("identity") or {}).get("sourceIp")
        admission = admit(headers, source_ip)
        admitted.principal, admitted.headers = admission.principal, admission.headers
        if on_admitted is not None:
            on_admitted(admission.principal)
        try:
            admission.principal.require(route.scope)
        except DomainError as exc:
            exc.headers = {**admission.headers, **exc.headers}  # RateLimit-* on the refusal too
            raise
    if route.takes_body and body:
        try:
            admitted.body = require_object(read_json(body, is_base64))
        except DomainError as exc:
            exc.headers = {**admitted.headers, **exc.headers}
            raise
    return admitted
