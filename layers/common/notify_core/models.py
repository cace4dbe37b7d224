"""Request and response models. Validation rules of the HTTP contract live here, nowhere else.

Field types come from `fields` (bounded, storable strings; strict numbers; ASCII phone numbers;
instants in range). What a provider would refuse as malformed is refused here, at the API, as a 422:
a push with both `token` and `topic`, FCM data keys FCM reserves or a push over FCM's 4 KB, an email
subject with a line break, an SMS body over Twilio's 1,600 characters.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from . import jsontext
from .errors import ValidationFailed
from .fields import (
    Email,
    IdempotencyKey,
    Instant,
    Locale,
    Phone,
    PushToken,
    Short,
    Slug,
    Storable,
    StrictInt,
    Timezone,
    Topic,
)

Channel = Literal["email", "sms", "push"]
ProviderName = Literal["sendgrid", "twilio", "fcm", "console", "ses", "sns"]
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


# ---------------------------------------------------------------- users


class UserCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "email": "ada@example.com",
                    "phone": "+14155550100",
                    "push_tokens": ["fcm-registration-token"],
                    "username": "ada",
                    "external_id": "crm-1",
                    "locale": "en-GB",
                    "timezone": "Europe/London",
                }
            ]
        }
    )

    email: Email | None = None
    phone: Phone | None = None
    push_tokens: list[PushToken] = Field(default_factory=list, max_length=20)
    username: Short | None = None
    external_id: Short | None = None
    locale: Locale | None = None
    timezone: Timezone | None = None


class UserPatch(Strict):
    """Only the fields present are changed; an explicit null clears a field."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"phone": None, "locale": "fr"}]})

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


# ---------------------------------------------------------------- channel payloads


def _json_object(value: Any) -> Any:
    """The original design sent the payload as a string holding a JSON object: accept both."""
    if isinstance(value, str):
        try:
            value = jsontext.loads(value)
        except ValueError as exc:
            raise ValueError("must be an object or a string holding a JSON object") from exc
        if not isinstance(value, dict):
            raise ValueError("must be an object or a string holding a JSON object")
    return value


# A header line may not break (SendGrid and every MTA treat CR/LF in a subject as header injection).
Subject = Annotated[str, StringConstraints(min_length=1, max_length=998, pattern=r"^[^\r\n]*$"), Storable]


class EmailPayload(Strict):
    to: Email | None = None
    from_: Email | None = Field(default=None, alias="from")
    subject: Subject
    body: Annotated[str, StringConstraints(min_length=1, max_length=1_000_000), Storable]
    html: Annotated[str, StringConstraints(max_length=1_000_000), Storable] | None = None
    reply_to: Email | None = None


SMS_MAX_CHARS = 1600  # Twilio refuses longer bodies (error 21617)


class SmsPayload(Strict):
    to: Phone | None = None
    from_: Phone | None = Field(default=None, alias="from")
    body: Annotated[str, StringConstraints(min_length=1, max_length=SMS_MAX_CHARS), Storable]


FCM_MAX_BYTES = 4096  # FCM refuses a message whose notification and data exceed 4 KB
FCM_RESERVED_KEYS = frozenset({"from", "notification", "message_type"})
FCM_RESERVED_PREFIXES = ("google", "gcm")

DataKey = Annotated[str, StringConstraints(min_length=1, max_length=256), Storable]
DataValue = Annotated[str, StringConstraints(max_length=FCM_MAX_BYTES), Storable]


class PushPayload(Strict):
    token: PushToken | None = None
    topic: Topic | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=1000), Storable]
    body: Annotated[str, StringConstraints(min_length=1, max_length=4000), Storable]
    data: dict[DataKey, DataValue] | None = Field(
        default=None, max_length=100, description="string → string, as FCM requires"
    )

    @model_validator(mode="after")
    def _fcm_rules(self) -> Self:
        if self.token and self.topic:
            raise ValueError("give either token or topic, not both")
        reserved = sorted(
            key
            for key in self.data or {}
            if key in FCM_RESERVED_KEYS or key.lower().startswith(FCM_RESERVED_PREFIXES)
        )
        if reserved:
            raise ValueError(
                f"data keys {reserved} are reserved by FCM (from, notification, message_type, google*, gcm*)"
            )
        size = len(self.title.encode()) + len(self.body.encode())
        size += sum(len(k.encode()) + len(v.encode()) for k, v in (self.data or {}).items())
        if size > FCM_MAX_BYTES:
            raise ValueError(f"title, body and data take {size} bytes; FCM allows {FCM_MAX_BYTES}")
        return self


# Which channel takes which payload model, its recipient field, its default provider: channels.py.

# ---------------------------------------------------------------- notifications

PAYLOAD_SCHEMA: dict[str, Any] = {
    "description": (
        "What the channel sends. email: to, subject, body (from, html, reply_to optional); sms: to (E.164),"
        " body (at most 1600 characters); push: token or topic (not both), title, body, data (string to"
        " string). A missing to/token is taken from the user. The original design's form, a string holding"
        " the JSON object, is accepted too."
    ),
    "anyOf": [{"type": "object"}, {"type": "string", "contentMediaType": "application/json"}],
    "examples": [{"to": "a@example.com", "subject": "Hi", "body": "Hello"}],
}


class NotificationCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "channel": "email",
                    "provider": "sendgrid",
                    "payload": {
                        "to": "a@example.com",
                        "from": "b@example.com",
                        "subject": "Hi",
                        "body": "Hello",
                    },
                    "idempotency_key": "order-1234-shipped",
                    "send_at": "2026-12-01T09:00:00Z",
                    "max_attempts": 5,
                    "category": "transactional",
                },
                {
                    "user_id": "5f0c6a1e-8a3b-4c1d-9e2f-0a1b2c3d4e5f",
                    "channel": "email",
                    "template": "order-shipped",
                    "data": {"name": "Ada", "order": {"id": "A-1042"}},
                    "locale": "pt-BR",
                    "category": "orders",
                },
            ]
        }
    )

    user_id: UUID | None = None
    channel: Channel = Field(validation_alias=AliasChoices("channel", "message_type"))
    provider: ProviderName | None = None
    # audience (issue 10): `template` + `data` + `locale` in place of `payload` (which may then give
    # only the address: to, from, reply_to, token, topic)
    payload: (
        Annotated[dict[str, Any], BeforeValidator(_json_object), WithJsonSchema(PAYLOAD_SCHEMA)] | None
    ) = None
    idempotency_key: IdempotencyKey | None = None
    send_at: Instant | None = None
    max_attempts: Annotated[StrictInt, Field(ge=1, le=50)] | None = None
    category: Slug | None = None
    template: Slug | None = Field(
        default=None, description="A template's key: rendered at ingest with `data` (instead of a payload)"
    )
    data: dict[str, Any] | None = Field(default=None, description="The template's variables")
    locale: Locale | None = Field(
        default=None, description="The variant's locale; else the user's, else the tenant default"
    )

    @model_validator(mode="after")
    def _payload_or_template(self) -> Self:
        if self.template is None:
            if self.payload is None:
                raise ValueError("give a payload, or a template with its data")
            if self.data is not None or self.locale is not None:
                raise ValueError("data and locale go with a template")
        return self


MAX_BATCH = 100


class BatchCreate(Strict):
    notifications: list[Any] = Field(
        min_length=1, max_length=MAX_BATCH, description="Each item as in POST /api/v1/notifications"
    )


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
    # audience (issue 10)
    template_key: str | None = None
    template_version: int | None = None
    message_id: UUID | None = None


class Attempt(BaseModel):
    attempt_number: int
    provider: str
    outcome: Literal["sent", "transient_error", "permanent_error", "ambiguous"]
    error: str | None
    provider_message_id: str | None
    duration_ms: int
    created_at: datetime
    # provider routes (issue 12)
    provider_config_id: UUID | None = Field(
        default=None,
        description="The tenant's provider config it went through; null: the deployment's provider",
    )
    fault: Literal["provider", "recipient"] | None = Field(
        default=None,
        description="Whose fault a failure was; a provider's fault fails over to the next config",
    )


class Page[T](BaseModel):
    data: list[T]
    next_cursor: str | None


# ---------------------------------------------------------------- errors (the contract's one body)

ErrorCode = Literal[
    "validation_error",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "idempotency_mismatch",
    "payload_too_large",
    "rate_limited",
    "unsupported_media_type",
    "method_not_allowed",
    "service_unavailable",
    "internal_error",
]


class ErrorDetail(BaseModel):
    field: str = Field(
        description="Where: a body path (payload.to, notifications[2].channel), a query or header name"
    )
    message: str


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str
    details: list[ErrorDetail]


class ErrorEnvelope(BaseModel):
    """Every 4xx and 5xx reply of the API, and of API Gateway in front of it."""

    error: ErrorBody


# ---------------------------------------------------------------- batch replies


class BatchItem(BaseModel):
    index: int
    id: UUID | None = None
    status: Status | None = None
    idempotent_replay: bool | None = None
    error: ErrorBody | None = None


class BatchResult(BaseModel):
    results: list[BatchItem]
    accepted: int
    rejected: int


class BatchRejected(ErrorEnvelope):
    """422 from a batch: the envelope. When the batch was read and every item rejected, one detail per
    field of every item (its path prefixed with notifications[i]), and the per-item results alongside."""

    results: list[BatchItem] | None = None
    accepted: int | None = None
    rejected: int | None = None


# ---------------------------------------------------------------- other replies


class AttemptList(BaseModel):
    data: list[Attempt]


class DeadLetterStats(BaseModel):
    total: int
    by_reason: dict[str, int]
    by_channel: dict[str, int]
    by_provider: dict[str, int]
    oldest_age_seconds: int | None


class Replayed(BaseModel):
    id: UUID
    notification_id: UUID
    status: Status


class Health(BaseModel):
    status: Literal["ok"]
    stage: str
    checks: dict[str, str] | None = None


class HealthUnavailable(ErrorEnvelope):
    """503 from /health?deep=1: the envelope, one detail per failing dependency, and every check."""

    checks: dict[str, str]


# ---------------------------------------------------------------- validation errors


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def detail(err: Any, prefix: str = "", loc: tuple[int | str, ...] | None = None) -> dict[str, str]:
    """One pydantic error as the contract's `{"field", "message"}`. `loc` overrides the error's own
    (the API strips its "body"/"query" part). A bad dict key is reported on the dict, not by the key."""
    where = tuple(err["loc"]) if loc is None else loc
    if err["type"] == "extra_forbidden":
        message = "unknown field"
    else:
        message = str(err.get("msg") or "invalid").removeprefix("Value error, ")
    if where and where[-1] == "[key]":
        where, message = where[:-2], f"a key {message}"
    return {"field": field_path(where, prefix) or prefix or "body", "message": message}


def details_from(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    return [detail(err, prefix) for err in exc.errors(include_url=False, include_input=False)]


def parse[M: BaseModel](model: type[M], data: Any, prefix: str = "") -> M:
    """Validate `data` against `model`; a failure becomes a 422 with one detail per field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = details_from(exc, prefix)
        raise ValidationFailed("request body failed validation", details) from exc
