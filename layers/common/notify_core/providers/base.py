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

Every error also says whose fault it is (``fault``), which decides failover between a tenant's
provider configs (``delivery.routing``):

* ``provider``  — the provider or our configuration of it: every transient error (its outage, its
                  rate limit, a timeout), and the permanent codes in ``PROVIDER_FAULT_CODES``
                  (``auth``: credentials rejected; ``not_configured``: a setting missing or refused;
                  ``third_party_auth``, ``sender_id_mismatch``: the config, not the address). Another
                  config may well succeed: the next attempt moves on.
* ``recipient`` — the address or the message: every other permanent error (``invalid_number``,
                  ``unregistered``, ``invalid_argument``, ``invalid_payload``, other 4xx). Another
                  provider would refuse it too: it never fails over.

A provider may pass ``fault=`` explicitly where its own codes say more than these defaults.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol, runtime_checkable
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .. import clients
from ..models import EmailPayload, PushPayload, SmsPayload

# ---------------------------------------------------------------- the interface


Payload = EmailPayload | SmsPayload | PushPayload


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    notification_id: UUID
    tenant_id: UUID
    channel: str  # email | sms | push
    provider: str
    payload: Payload  # the channel's payload model, validated
    attempt: int  # 1-based attempt number
    headers: Mapping[str, str] = field(default_factory=dict)  # extra email headers (List-Unsubscribe)

    @classmethod
    def build(
        cls,
        notification_id: UUID,
        tenant_id: UUID,
        channel: str,
        provider: str,
        payload: Mapping[str, Any],
        attempt: int = 1,
    ) -> OutgoingMessage:
        """From a stored payload: validated against the channel's model. A payload the model
        rejects can never be sent: PermanentProviderError ``invalid_payload``."""
        from ..channels import CHANNELS

        try:
            typed = CHANNELS[channel].payload_model.model_validate(payload)
        except ValidationError as exc:
            raise PermanentProviderError(
                f"stored payload is not a valid {channel} payload: {exc.errors(include_url=False)[0]['msg']}",
                "invalid_payload",
                provider=provider,
            ) from exc
        return cls(notification_id, tenant_id, channel, provider, typed, attempt)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_message_id: str | None
    response: dict[str, Any]  # small JSON-serialisable summary stored on the notification


Fault = Literal["provider", "recipient"]

# Permanent errors that are the provider's side (its credentials or our configuration of it): another
# provider config may succeed, so they fail over. Every other permanent error is the recipient's.
PROVIDER_FAULT_CODES = frozenset(
    {"auth", "not_configured", "unknown_provider", "third_party_auth", "sender_id_mismatch"}
)


class ProviderError(Exception):
    """A send failed. ``code`` is a short machine string (``http_503``, ``timeout``, ``auth`` ...);
    ``fault`` says whose it is (see the module's docstring)."""

    transient = False

    def __init__(
        self,
        message: str,
        code: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        provider_code: str | None = None,
        fault: Fault | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.provider = provider
        self.status = status  # HTTP status of the provider's reply, when there was one
        self.provider_code = provider_code  # the provider's own error code (Twilio 21211, FCM UNREGISTERED)
        self._fault = fault

    @property
    def fault(self) -> Fault:
        if self._fault is not None:
            return self._fault
        return "provider" if self.transient or self.code in PROVIDER_FAULT_CODES else "recipient"

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "transient": self.transient,
            "fault": self.fault,
        }
        if self.provider:
            out["provider"] = self.provider
        if self.status is not None:
            out["status"] = self.status
        if self.provider_code is not None:
            out["provider_code"] = self.provider_code
        return out


class TransientProviderError(ProviderError):
    """Worth retrying later; ``retry_after`` (seconds) is the provider's own hint, when it gave one.

    ``ambiguous``: the request reached the provider and no answer came back (a read timeout, a
    connection lost after sending), so the provider may have accepted the message. A connect
    failure is not ambiguous: nothing reached the provider."""

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
        ambiguous: bool = False,
        fault: Fault | None = None,
    ) -> None:
        super().__init__(
            message, code, provider=provider, status=status, provider_code=provider_code, fault=fault
        )
        self.retry_after = retry_after
        self.ambiguous = ambiguous

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.ambiguous:
            out["ambiguous"] = True
        return out


class PermanentProviderError(ProviderError):
    """Sending this message again cannot succeed (bad recipient, bad request, bad credentials)."""


@runtime_checkable
class Provider(Protocol):
    """One provider: its id, the channels it serves, and how long one send may take at most
    (connect + read timeouts: the sender starts no send that could outlive its invocation)."""

    name: ClassVar[str]
    channels: ClassVar[frozenset[str]]
    max_send_seconds: float

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


def connect_failed(provider: str, reason: object, *, timed_out: bool = False) -> TransientProviderError:
    """Nothing reached the provider (refused, DNS, TLS handshake, connect timeout): safe to retry."""
    if timed_out:
        return TransientProviderError(
            f"connecting to {provider} timed out ({reason})", "connect_timeout", provider=provider
        )
    return TransientProviderError(
        f"connection to {provider} failed: {reason}", "connection", provider=provider
    )


def answer_lost(provider: str, reason: object, *, timed_out: bool = False) -> TransientProviderError:
    """The request was sent and no answer came back: the provider may have accepted it."""
    if timed_out:
        return TransientProviderError(
            f"{provider} did not answer in time ({reason}); it may have accepted the message",
            "timeout",
            provider=provider,
            ambiguous=True,
        )
    return TransientProviderError(
        f"connection to {provider} lost before its answer ({reason}); it may have accepted the message",
        "connection_lost",
        provider=provider,
        ambiguous=True,
    )


def classify_transport_error(exc: BaseException, *, provider: str) -> TransientProviderError | None:
    """Timeouts and connection failures of the standard library's HTTP stack (urllib, http.client,
    sockets, TLS); None when ``exc`` is neither.

    urllib wraps what goes wrong while connecting and sending the request in ``URLError``; what goes
    wrong while waiting for or reading the answer comes out unwrapped. So a ``URLError`` means the
    provider never got the request, and a bare timeout or lost connection is ambiguous."""
    if isinstance(exc, urllib.error.HTTPError):  # an answer, not a transport failure
        return None
    if isinstance(exc, urllib.error.URLError):
        inner = exc.reason
        timed_out = isinstance(inner, TimeoutError) or (isinstance(inner, str) and "timed out" in inner)
        return connect_failed(provider, inner, timed_out=timed_out)
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return answer_lost(provider, exc, timed_out=True)
    if isinstance(exc, socket.gaierror):
        return connect_failed(provider, exc)
    if isinstance(exc, ConnectionRefusedError):
        return connect_failed(provider, exc)
    if isinstance(exc, ConnectionError | ssl.SSLError | http.client.HTTPException):
        # reset, aborted, RemoteDisconnected, IncompleteRead, BadStatusLine: after the request
        return answer_lost(provider, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | PermissionError):
        return answer_lost(provider, exc)
    return None


def classify_requests_error(exc: BaseException, *, provider: str) -> TransientProviderError | None:
    """Timeouts and connection failures of ``requests`` (Twilio's and google-auth's transport);
    None when ``exc`` is neither. ``ConnectTimeout`` and a ``ConnectionError`` around urllib3's
    ``MaxRetryError`` (refused, DNS, TLS, connect timeout) mean nothing was sent; a ``ReadTimeout``
    or a connection error around a ``ProtocolError`` (aborted, reset after sending) is ambiguous."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return connect_failed(provider, exc, timed_out=True)
    if isinstance(exc, requests.exceptions.Timeout):  # ReadTimeout
        return answer_lost(provider, exc, timed_out=True)
    if isinstance(exc, requests.exceptions.SSLError):
        return connect_failed(provider, exc)
    if isinstance(exc, requests.exceptions.ConnectionError):
        from urllib3.exceptions import MaxRetryError

        inner = exc.args[0] if exc.args else None
        if isinstance(inner, MaxRetryError):
            return connect_failed(provider, inner.reason or inner)
        return answer_lost(provider, inner or exc)
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

    # built on first use: the API imports this module (channels, errors) but seldom validates it
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

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
    # Amazon SES (email) and SNS (SMS) through boto3. Empty credentials: the function's own role;
    # empty region: the function's region; empty base URL: AWS (AWS_ENDPOINT_URL when set, locally).
    ses_region: str = ""
    ses_default_from: str = ""
    ses_configuration_set: str = ""
    ses_access_key_id: str = ""
    ses_secret_access_key: SecretStr = SecretStr("")
    ses_base_url: str = ""
    sns_region: str = ""
    sns_sender_id: str = ""
    sns_sms_type: Literal["Transactional", "Promotional"] = "Transactional"
    sns_access_key_id: str = ""
    sns_secret_access_key: SecretStr = SecretStr("")
    sns_base_url: str = ""
    # Per send: connect, then read (each socket read). The per-provider read timeouts default to
    # PROVIDER_TIMEOUT_SECONDS. The sender starts no send that could outlive its invocation.
    provider_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    provider_connect_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    sendgrid_timeout_seconds: float = Field(default=0.0, ge=0, le=60)
    twilio_timeout_seconds: float = Field(default=0.0, ge=0, le=60)
    fcm_timeout_seconds: float = Field(default=0.0, ge=0, le=60)
    ses_timeout_seconds: float = Field(default=0.0, ge=0, le=60)
    sns_timeout_seconds: float = Field(default=0.0, ge=0, le=60)
    provider_secrets_arn: str = ""
    # feedback: verifying provider callbacks (SendGrid Event Webhook key: base64 DER, as SendGrid
    # shows it; Twilio's are signed with TWILIO_AUTH_TOKEN)
    sendgrid_webhook_public_key: str = ""

    @field_validator("sendgrid_base_url", "twilio_base_url", "fcm_base_url", "ses_base_url", "sns_base_url")
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

    def read_timeout(self, provider: str) -> float:
        """The read timeout of one provider: its own setting, else PROVIDER_TIMEOUT_SECONDS."""
        own = getattr(self, f"{provider}_timeout_seconds", 0.0)
        return float(own) or self.provider_timeout_seconds


# ---------------------------------------------------------------- what a tenant's config gives


# A credential as a config gives it: a non-empty string, never echoed back (SecretStr).
Secret = Annotated[SecretStr, Field(min_length=1, max_length=16_384)]


class NoFields(BaseModel):
    """A provider that needs no credentials (or takes no settings) from a tenant's config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def config_settings(
    provider: str,
    credentials_model: type[BaseModel],
    options_model: type[BaseModel],
    base: ProviderSettings,
    options: Mapping[str, Any],
    credentials: Mapping[str, Any],
) -> ProviderSettings:
    """The ProviderSettings of one tenant config: the deployment's endpoints and timeouts (``base``),
    every field the provider declares (its credentials and options models, ``<provider>_<field>``)
    cleared, so a config never borrows the deployment's credentials or sender, then the config's
    own values. Raises pydantic's ValidationError when a value does not fit."""
    fields = {f"{provider}_{name}" for name in (*credentials_model.model_fields, *options_model.model_fields)}
    raw: dict[str, Any] = base.model_dump()
    for name in fields:
        raw[name] = ProviderSettings.model_fields[name].default
    for values in (options, credentials):
        for name, value in values.items():
            if value is not None:
                raw[f"{provider}_{name}"] = (
                    value.get_secret_value() if isinstance(value, SecretStr) else value
                )
    return ProviderSettings.model_validate(raw)


# Every provider setting's environment variable; all but these two may also come from the secret.
ENV_NAMES = tuple(name.upper() for name in ProviderSettings.model_fields)
SECRET_KEYS = tuple(
    n for n in ENV_NAMES if not n.endswith("_TIMEOUT_SECONDS") and n != "PROVIDER_SECRETS_ARN"
)

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
            client = clients.aws_client("secretsmanager")
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


clients.on_reset(forget_secrets)
