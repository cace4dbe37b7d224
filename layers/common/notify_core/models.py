"""Request and response models. Validation rules of the HTTP contract live here, nowhere else."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from .errors import ValidationFailed

Channel = Literal["email", "sms", "push"]
ProviderName = Literal["sendgrid", "twilio", "fcm", "console"]
Status = Literal[
    "pending",
    "scheduled",
    "queued",
    "sending",
    "retrying",
    "sent",
    "delivered",
    "failed",
    "cancelled",
    "suppressed",
]

DEFAULT_PROVIDER: dict[str, ProviderName] = {"email": "sendgrid", "sms": "twilio", "push": "fcm"}
PROVIDER_CHANNELS: dict[str, frozenset[str]] = {
    "sendgrid": frozenset({"email"}),
    "twilio": frozenset({"sms"}),
    "fcm": frozenset({"push"}),
    "console": frozenset({"email", "sms", "push"}),
}

E164_RE = re.compile(r"^\+[1-9]\d{6,14}$")
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


def _e164(value: str) -> str:
    if not E164_RE.fullmatch(value):
        raise ValueError("must be an E.164 phone number such as +14155550100")
    return value


# WHATWG's definition of a valid e-mail address (what browsers accept), plus a dotted domain with an
# alphabetic TLD. Plain addresses matching it skip email-validator, which costs ~80 µs per address;
# anything else (IDN, quoted local parts, errors) goes through email-validator for its precise message.
_PLAIN_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def _email(value: str) -> str:
    value = value.strip()
    if (
        _PLAIN_EMAIL_RE.fullmatch(value)
        and ".." not in value
        and not value.startswith(".")
        and ".@" not in value
    ):
        return value
    from email_validator import EmailNotValidError, validate_email  # ~25 ms import: only when needed

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"value is not a valid email address: {exc}") from exc


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone such as Europe/Paris") from exc
    return value


def _locale(value: str) -> str:
    if not LOCALE_RE.fullmatch(value):
        raise ValueError("must be a locale tag such as en or pt-BR")
    return value


Email = Annotated[str, AfterValidator(_email)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True), AfterValidator(_e164)]
Timezone = Annotated[str, AfterValidator(_timezone)]
Locale = Annotated[str, AfterValidator(_locale)]
PushToken = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4096)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---------------------------------------------------------------- users


class UserCreate(Strict):
    email: Email | None = None
    phone: Phone | None = None
    push_tokens: list[PushToken] = Field(default_factory=list, max_length=20)
    username: Short | None = None
    external_id: Short | None = None
    locale: Locale | None = None
    timezone: Timezone | None = None


class UserPatch(Strict):
    """Only the fields present are changed; an explicit null clears a field."""

    email: Email | None = None
    phone: Phone | None = None
    push_tokens: list[PushToken] | None = Field(default=None, max_length=20)
    username: Short | None = None
    external_id: Short | None = None
    locale: Locale | None = None
    timezone: Timezone | None = None


class User(BaseModel):
    id: UUID
    email: str | None
    phone: str | None
    push_tokens: list[str]
    username: str | None
    external_id: str | None
    locale: str | None
    timezone: str | None
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- notifications


def _json_object(value: Any) -> Any:
    """The original design sent the payload as a string holding a JSON object: accept both."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError("must be an object or a string holding a JSON object") from exc
        if not isinstance(value, dict):
            raise ValueError("must be an object or a string holding a JSON object")
    return value


class NotificationCreate(Strict):
    user_id: UUID | None = None
    channel: Channel = Field(validation_alias=AliasChoices("channel", "message_type"))
    provider: ProviderName | None = None
    payload: Annotated[dict[str, Any], BeforeValidator(_json_object)]
    idempotency_key: Short | None = None
    send_at: AwareDatetime | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=50)
    category: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")] | None = None


MAX_BATCH = 100


class BatchCreate(BaseModel):
    notifications: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH, description="Each item as in POST /api/v1/notifications"
    )


class EmailPayload(Strict):
    to: Email | None = None
    from_: Email | None = Field(default=None, alias="from")
    subject: Annotated[str, StringConstraints(min_length=1, max_length=998)]
    body: Annotated[str, StringConstraints(min_length=1, max_length=1_000_000)]
    html: str | None = None
    reply_to: Email | None = None


class SmsPayload(Strict):
    to: Phone | None = None
    from_: Phone | None = Field(default=None, alias="from")
    body: Annotated[str, StringConstraints(min_length=1, max_length=1600)]


class PushPayload(Strict):
    token: PushToken | None = None
    topic: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9\-_.~%]{1,900}$")] | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    body: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    data: dict[str, str] | None = None


PAYLOAD_MODELS: dict[str, type[Strict]] = {"email": EmailPayload, "sms": SmsPayload, "push": PushPayload}
RECIPIENT_FIELD = {"email": "to", "sms": "to", "push": "token"}


class Notification(BaseModel):
    id: UUID
    user_id: UUID | None
    channel: Channel
    provider: ProviderName
    payload: dict[str, Any]
    category: str | None
    status: Status
    idempotency_key: str | None
    max_attempts: int
    attempt_count: int
    last_error: str | None
    provider_message_id: str | None
    send_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    queued_at: datetime | None
    sent_at: datetime | None
    failed_at: datetime | None
    cancelled_at: datetime | None


class Attempt(BaseModel):
    attempt_number: int
    provider: str
    outcome: Literal["sent", "transient_error", "permanent_error"]
    error: str | None
    provider_message_id: str | None
    duration_ms: int
    created_at: datetime


class Page[T](BaseModel):
    data: list[T]
    next_cursor: str | None


# ---------------------------------------------------------------- validation errors


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def details_from(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    details = []
    for err in exc.errors(include_url=False):
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        details.append(
            {"field": field_path(tuple(err["loc"]), prefix) or prefix or "body", "message": message}
        )
    return details


def parse[M: BaseModel](model: type[M], data: Any, prefix: str = "") -> M:
    """Validate `data` against `model`; a failure becomes a 422 with one detail per field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = details_from(exc, prefix)
        raise ValidationFailed("request body failed validation", details) from exc
