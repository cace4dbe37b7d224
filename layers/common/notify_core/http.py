"""What every HTTP entry point shares: the gate before routing (size, media type, auth, rate limit)
and the error body of the contract. Works on plain header dicts, not on event shapes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import auth, ratelimit
from .config import get_settings
from .errors import PayloadTooLarge, RateLimited, ServiceUnavailable, UnsupportedMediaType
from .observability import logger, metrics

JSON = "application/json"


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"error": {"code": code, "message": message, "details": details or []}})


@dataclass(frozen=True, slots=True)
class Admission:
    principal: auth.Principal
    headers: dict[str, str]


def check_body(body: str | None, is_base64: bool, content_type: str | None) -> None:
    if not body:
        return
    size = len(body) * 3 // 4 if is_base64 else len(body.encode())
    limit = get_settings().max_body_bytes
    if size > limit:
        raise PayloadTooLarge(
            f"the request body is {size} bytes; the limit is {limit}",
            [{"field": "body", "message": f"at most {limit} bytes"}],
        )
    if content_type and "json" not in content_type.lower():
        raise UnsupportedMediaType(
            f"send JSON with 'Content-Type: {JSON}', not {content_type!r}",
            [{"field": "Content-Type", "message": f"must be {JSON}"}],
        )


def admit(headers: dict[str, str]) -> Admission:
    """Authenticate the API key and take one token from its rate limit (one Redis round trip)."""
    principal = auth.authenticate(auth.key_from_headers(headers))
    settings = get_settings()
    limit = principal.rate_limit or settings.rate_limit_requests
    try:
        decision = ratelimit.check(f"key:{principal.key_id}", limit, settings.rate_limit_window_seconds)
    except ratelimit.RedisUnavailable as exc:
        metrics.add_metric(name="RateLimiterUnavailable", unit="Count", value=1)
        if settings.rate_limit_fail_mode == "closed":
            logger.error("rate limiter unreachable; failing closed", extra={"error": str(exc)})
            raise ServiceUnavailable("the rate limiter is unavailable; retry shortly") from exc
        logger.warning("rate limiter unreachable; failing open", extra={"error": str(exc)})
        return Admission(principal, {})
    if not decision.allowed:
        raise RateLimitExceeded(decision)
    return Admission(principal, decision.headers())


class RateLimitExceeded(RateLimited):
    def __init__(self, decision: ratelimit.Decision) -> None:
        super().__init__(
            f"rate limit of {decision.limit} requests exceeded; retry in {decision.retry_after_s} s",
            [{"field": "api_key", "message": f"retry after {decision.retry_after_s} seconds"}],
        )
        self.headers = decision.headers()
