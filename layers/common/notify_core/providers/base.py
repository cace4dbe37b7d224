"""The provider interface: one message in, one receipt out, or a typed error that decides retry vs fail.

Everything here is SDK-free, so it can be imported (and unit tested) without any provider SDK.

Classification rules, shared by every provider (each provider module maps its SDK's exceptions onto
these helpers and nothing else decides retry vs fail):

* a timeout                                  -> transient, code ``timeout``
* connection refused / reset / DNS / TLS     -> transient, code ``connection``
* HTTP 429                                   -> transient, code ``http_429``, ``retry_after`` from
                                                the ``Retry-After`` header when given
* HTTP 408, 425 and every 5xx                -> transient, code ``http_<status>``
* HTTP 401 / 403                             -> permanent, code ``auth`` (bad or revoked credentials)
* any other 4xx                              -> permanent, code ``http_<status>`` unless the provider
                                                gives a more specific reason (``invalid_number``,
                                                ``unregistered``, ``invalid_argument`` ...)
* an exception type nobody expected          -> transient, code ``unexpected``. Retries are bounded
                                                (max_attempts), so guessing "transient" costs at most
                                                a few extra sends, while guessing "permanent" could
                                                drop a message that would have gone out.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import ssl
import threading
import urllib.error
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

# ---------------------------------------------------------------- the interface


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    notification_id: UUID
    tenant_id: UUID
    channel: str  # email | sms | push
    provider: str  # sendgrid | twilio | fcm | console
    # Already validated (notify_core.models): email {to, from?, subject, body, html?, reply_to?};
    # sms {to, from?, body}; push {token | topic, title, body, data?: dict[str, str]}
    payload: dict[str, Any]
    attempt: int  # 1-based attempt number


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_message_id: str | None
    response: dict[str, Any]  # small JSON-serialisable summary stored on the notification


class ProviderError(Exception):
    """A send failed. ``code`` is a short machine string (``http_503``, ``timeout``, ``auth`` ...)."""

    transient = False

    def __init__(
        self,
        message: str,
        code: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        provider_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider = provider
        self.status = status  # HTTP status of the provider's reply, when there was one
        self.provider_code = provider_code  # the provider's own error code (Twilio 21211, FCM UNREGISTERED)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message, "transient": self.transient}
        if self.provider:
            out["provider"] = self.provider
        if self.status is not None:
            out["status"] = self.status
        if self.provider_code is not None:
            out["provider_code"] = self.provider_code
        return out


class TransientProviderError(ProviderError):
    """Worth retrying later; ``retry_after`` (seconds) is the provider's own hint, when it gave one."""

    transient = True

    def __init__(
        self,
        message: str,
        code: str,
        *,
        retry_after: float | None = None,
        provider: str | None = None,
        status: int | None = None,
        provider_code: str | None = None,
    ) -> None:
        super().__init__(message, code, provider=provider, status=status, provider_code=provider_code)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        return out


class PermanentProviderError(ProviderError):
    """Sending this message again cannot succeed (bad recipient, bad request, bad credentials)."""


@runtime_checkable
class Provider(Protocol):
    name: str

    def send(self, message: OutgoingMessage) -> Receipt: ...


# ---------------------------------------------------------------- classification helpers (pure)

TRANSIENT_4XX = frozenset({408, 425, 429})


def parse_retry_after(value: str | float | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(seconds, 0.0)


def header(headers: Mapping[str, Any] | Any, name: str) -> str | None:
    """A header from any mapping-ish headers object (dict, HTTPMessage, CaseInsensitiveDict)."""
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None and isinstance(headers, Mapping):
        lower = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == lower), None)
    return None if value is None else str(value)


def classify_http_status(
    status: int,
    message: str,
    *,
    provider: str,
    retry_after: float | None = None,
    provider_code: str | None = None,
) -> ProviderError:
    """The generic mapping of an HTTP error status; providers refine it with their own codes first."""
    if status == 429:
        return TransientProviderError(
            message,
            "http_429",
            retry_after=retry_after,
            provider=provider,
            status=status,
            provider_code=provider_code,
        )
    if status >= 500 or status in TRANSIENT_4XX:
        return TransientProviderError(
            message,
            f"http_{status}",
            retry_after=retry_after,
            provider=provider,
            status=status,
            provider_code=provider_code,
        )
    if status in (401, 403):
        return PermanentProviderError(
            message, "auth", provider=provider, status=status, provider_code=provider_code
        )
    if 400 <= status < 500:
        return PermanentProviderError(
            message, f"http_{status}", provider=provider, status=status, provider_code=provider_code
        )
    # 1xx/3xx where a 2xx was expected: the provider answered something we cannot read as success.
    return TransientProviderError(
        message, f"http_{status}", provider=provider, status=status, provider_code=provider_code
    )


def classify_transport_error(exc: BaseException, *, provider: str) -> TransientProviderError | None:
    """Timeouts and connection failures of the standard library's HTTP stack (urllib, http.client,
    sockets, TLS) -> transient ``timeout`` / ``connection``; None when ``exc`` is neither."""
    if isinstance(exc, urllib.error.HTTPError):  # an answer, not a transport failure
        return None
    reason: BaseException = exc
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        reason = inner if isinstance(inner, BaseException) else exc
        if isinstance(inner, str) and "timed out" in inner:
            return TransientProviderError(
                f"request to {provider} timed out ({inner})", "timeout", provider=provider
            )
    if isinstance(reason, TimeoutError):  # socket.timeout is TimeoutError
        return TransientProviderError(
            f"request to {provider} timed out ({reason})", "timeout", provider=provider
        )
    if isinstance(reason, urllib.error.URLError | ConnectionError | ssl.SSLError | socket.gaierror):
        return TransientProviderError(
            f"connection to {provider} failed: {reason}", "connection", provider=provider
        )
    if isinstance(reason, http.client.HTTPException):  # RemoteDisconnected, IncompleteRead, BadStatusLine
        return TransientProviderError(
            f"connection to {provider} failed: {type(reason).__name__}: {reason}",
            "connection",
            provider=provider,
        )
    if isinstance(reason, OSError) and not isinstance(reason, FileNotFoundError | PermissionError):
        return TransientProviderError(
            f"connection to {provider} failed: {reason}", "connection", provider=provider
        )
    return None


def unexpected_error(exc: BaseException, *, provider: str) -> TransientProviderError:
    """An exception type the mapping does not know: transient, because retries are bounded."""
    return TransientProviderError(
        f"unexpected {type(exc).__module__}.{type(exc).__qualname__} from the {provider} SDK: {exc}",
        "unexpected",
        provider=provider,
    )


def not_configured(provider: str, what: str) -> PermanentProviderError:
    return PermanentProviderError(
        f"{provider} is not configured: {what}", "not_configured", provider=provider
    )


def invalid_payload(provider: str, exc: BaseException) -> PermanentProviderError:
    """The SDK refused to build the request from the payload: the same payload will fail again."""
    return PermanentProviderError(
        f"{provider} SDK rejected the payload: {exc}", "invalid_payload", provider=provider
    )


def error_text(body: bytes | str | None, limit: int = 500) -> str:
    if body is None:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return text if len(text) <= limit else text[:limit] + "..."


def json_or_none(body: bytes | str | None) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- settings


class ProviderSettingsError(ValueError):
    """A provider setting is malformed (not merely missing)."""


class ProviderSettings(BaseModel):
    """Provider credentials and endpoints, from the environment and, in AWS, one Secrets Manager secret.

    A setting present (non-empty) in the environment wins over the same key in the secret, so a
    local override never needs the secret changed. Empty means "not configured".
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    sendgrid_api_key: SecretStr = SecretStr("")
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_default_from: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: SecretStr = SecretStr("")
    twilio_from_number: str = ""
    twilio_messaging_service_sid: str = ""
    twilio_base_url: str = ""  # empty: the SDK's own https://api.twilio.com
    fcm_service_account_json: SecretStr = SecretStr("")
    fcm_project_id: str = ""  # empty: project_id of the service account
    fcm_base_url: str = ""  # empty: https://fcm.googleapis.com
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    provider_secrets_arn: str = ""

    @field_validator("sendgrid_base_url", "twilio_base_url", "fcm_base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        secret_loader: Callable[[str], Mapping[str, Any]] | None = None,
    ) -> ProviderSettings:
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        arn = env.get("PROVIDER_SECRETS_ARN", "").strip()
        if arn:
            secret = (secret_loader or load_secret)(arn)
            for key in SECRET_KEYS:
                value = secret.get(key, secret.get(key.lower()))
                if value is None or value == "":
                    continue
                if key == "FCM_SERVICE_ACCOUNT_JSON" and isinstance(value, dict):
                    value = json.dumps(value)
                raw[key.lower()] = str(value)
        for name in cls.model_fields:
            value = env.get(name.upper(), "")
            if value != "":
                raw[name] = value
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise ProviderSettingsError(f"invalid provider settings: {problems}") from exc


# Every provider setting's environment variable; all but these two may also come from the secret.
ENV_NAMES = tuple(name.upper() for name in ProviderSettings.model_fields)
SECRET_KEYS = tuple(n for n in ENV_NAMES if n not in ("PROVIDER_TIMEOUT_SECONDS", "PROVIDER_SECRETS_ARN"))

_secret_cache: dict[str, dict[str, Any]] = {}
_secret_lock = threading.Lock()


def load_secret(arn: str) -> dict[str, Any]:
    """The provider secret (a JSON object), fetched once per process (notify_core.aws)."""
    cached = _secret_cache.get(arn)
    if cached is not None:
        return cached
    with _secret_lock:
        cached = _secret_cache.get(arn)
        if cached is not None:
            return cached
        from .. import aws

        try:
            client = aws.client("secretsmanager", connect_timeout=2, read_timeout=5, max_attempts=3)
            value = client.get_secret_value(SecretId=arn)["SecretString"]
        except aws.AwsServiceError as exc:
            error = exc.code
            if error in ("ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure"):
                raise PermanentProviderError(
                    f"provider secret {arn} cannot be read: {error}", "not_configured"
                ) from exc
            raise TransientProviderError(
                f"provider secret {arn} unavailable: {error or exc}", "secrets_unavailable"
            ) from exc
        except aws.AwsTransportError as exc:
            raise TransientProviderError(
                f"provider secret {arn} unavailable: {exc}", "secrets_unavailable"
            ) from exc
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise PermanentProviderError(
                f"provider secret {arn} is not a JSON object", "not_configured"
            ) from exc
        if not isinstance(data, dict):
            raise PermanentProviderError(f"provider secret {arn} is not a JSON object", "not_configured")
        _secret_cache[arn] = data
        return data


def forget_secrets() -> None:
    with _secret_lock:
        _secret_cache.clear()
