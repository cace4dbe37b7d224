"""Domain errors. Each maps to one HTTP reply in one place (the API's exception handler)."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "validation_error"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}  # HTTP headers the reply must carry (Retry-After, ...)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def reply_headers(self) -> dict[str, str]:
        """Headers the reply must carry (Retry-After, RateLimit-*): those given, and a subclass's own."""
        return dict(self.headers)


class MalformedRequest(DomainError):
    status, code = 400, "validation_error"


class ValidationFailed(DomainError):
    status, code = 422, "validation_error"

    @classmethod
    def field(cls, field: str, message: str) -> ValidationFailed:
        return cls(f"invalid {field}: {message}", [{"field": field, "message": message}])


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class NotFound(DomainError):
    status, code = 404, "not_found"


class Conflict(DomainError):
    status, code = 409, "conflict"


class IdempotencyMismatch(DomainError):
    status, code = 409, "idempotency_mismatch"


class PayloadTooLarge(DomainError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(DomainError):
    status, code = 415, "unsupported_media_type"


class RateLimited(DomainError):
    status, code = 429, "rate_limited"


class ServiceUnavailable(DomainError):
    status, code = 503, "service_unavailable"

    def __init__(
        self, message: str, details: list[dict[str, Any]] | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after = retry_after

    def reply_headers(self) -> dict[str, str]:
        own = {"Retry-After": str(self.retry_after)} if self.retry_after else {}
        return {**self.headers, **own}


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL could not be reached (or answered too slowly) within the configured bounds."""


class InternalError(DomainError):
    """The reply to an unexpected exception (never its message: that stays out of replies and logs)."""

    status, code = 500, "internal_error"
