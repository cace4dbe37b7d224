"""Messages: reach up to 100 users through their channels with one template.

`POST /api/v1/messages` resolves the users (ids or external ids, one query with their
preferences), the template, the category and the suppressions of every candidate address (one
query), renders each variant used once, and fans out: per user, per channel in order, a channel is
taken when the template has a variant for it, the user has a contact, the preferences allow it and
the address is not suppressed; `routing: first` stops at the first channel taken, `all` takes every
one. What is not taken is listed in `skipped` with its reason (`no_variant`, `no_contact`,
`preference`, `suppressed`; an external id that matches no user: `unknown_user`). The
notifications are stored with ONE INSERT through the ingest path (`notifications.store`), their
queue messages sent while it runs. A user id that is not the tenant's is the caller's error (422).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import notifications
from ..channels import CHANNELS
from ..db import transaction
from ..errors import NotFound, ValidationFailed
from ..fields import IdempotencyKey, Instant, Locale, Short, Slug
from ..idempotency import Created, create_once
from ..models import Channel, NotificationCreate, Status, parse
from . import ingest, templates

MAX_RECIPIENTS = 100
Reason = Literal["preference", "no_contact", "suppressed", "no_variant", "unknown_user"]


class ExternalRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: Short = Field(description="Your system's id of the user (set on the user)")


class MessageCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "to": ["5f0c6a1e-8a3b-4c1d-9e2f-0a1b2c3d4e5f", {"external_id": "crm-42"}],
                    "template": "order-shipped",
                    "data": {"name": "Ada", "order": {"id": "A-1042"}},
                    "category": "orders",
                    "channels": ["push", "email", "sms"],
                    "routing": "first",
                    "idempotency_key": "order-A-1042-shipped",
                }
            ]
        },
    )

    to: list[UUID | ExternalRef] = Field(
        min_length=1, max_length=MAX_RECIPIENTS, description="User ids or {external_id}, at most 100"
    )
    template: Slug
    data: dict[str, Any] = Field(default_factory=dict, description="The template's variables")
    category: Slug | None = Field(default=None, description="Else the template's category")
    channels: list[Channel] | None = Field(
        default=None, max_length=3, description="In order; else the category's default_channels"
    )
    routing: Literal["all", "first"] = Field(
        default="all", description="all: every channel taken; first: per user, the first one taken"
    )
    locale: Locale | None = Field(default=None, description="Overrides the users' locales")
    send_at: Instant | None = None
    idempotency_key: IdempotencyKey | None = None

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str | None) -> str | None:
        return None if value is None else templates.canonical_locale(value)

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("a channel is listed twice")
        return value


class MessageNotification(BaseModel):
    id: UUID
    user_id: UUID | None
    channel: Channel
    status: Status


class Skipped(BaseModel):
    user_id: UUID | None
    external_id: str | None = None
    channel: Channel | None = Field(description="null for unknown_user")
    reason: Reason


class MessageCreated(BaseModel):
    id: UUID
    notifications: list[MessageNotification]
    skipped: list[Skipped]


class Message(MessageCreated):
    template: str
    template_version: int
    category: str | None
    channels: list[Channel]
    routing: Literal["all", "first"]
    send_at: datetime | None
    created_at: datetime


ROUTE = "POST /api/v1/messages"


def create(tenant_id: UUID, request: MessageCreate, header_key: str | None) -> Created:
    if request.idempotency_key and header_key and request.idempotency_key != header_key:
        raise ValidationFailed.field("idempotency_key", "differs from the Idempotency-Key header")
    key = request.idempotency_key or header_key
    body = request.model_dump(mode="json", exclude={"idempotency_key"})
    return create_once(
        tenant_id=tenant_id,
        route=ROUTE,
        key=key,
        body=body,
        create=lambda: Created(202, fan_out(tenant_id, request).model_dump(mode="json")),
    )


@dataclass
class _Plan:
    items: list[notifications._Prepared]
    skipped: list[dict[str, Any]]


def _resolve_users(
    request: MessageCreate, found: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any] | None, str | None]], list[dict[str, str]]]:
    by_id = {r["id"]: r for r in found}
    by_external = {r["external_id"]: r for r in found if r["external_id"]}
    out: list[tuple[dict[str, Any] | None, str | None]] = []
    errors: list[dict[str, str]] = []
    seen: set[UUID] = set()
    for i, entry in enumerate(request.to):
        if isinstance(entry, UUID):
            user, external = by_id.get(entry), None
            if user is None:
                errors.append({"field": f"to[{i}]", "message": "no user with this id"})
                continue
        else:
            external = entry.external_id
            user = by_external.get(external)
        if user is not None:
            if user["id"] in seen:
                errors.append({"field": f"to[{i}]", "message": "the same user is listed twice"})
                continue
            seen.add(user["id"])
        elif any(isinstance(e, ExternalRef) and e.external_id == external for e in request.to[:i]):
            errors.append({"field": f"to[{i}]", "message": "the same user is listed twice"})
            continue
        out.append((user, external))
    return out, errors


def fan_out(tenant_id: UUID, request: MessageCreate) -> MessageCreated:
    now = datetime.now(UTC)
    message_id = uuid.uuid4()
    ids = [e for e in request.to if isinstance(e, UUID)]
    externals = [e.external_id for e in request.to if isinstance(e, ExternalRef)]
    with transaction() as conn:
        with conn.pipeline():
            users_cursor = ingest.load_users(conn, tenant_id, ids, externals)
            template_cursor = conn.execute(
                "SELECT key, version, category, variants FROM template_latest"
                " WHERE tenant_id = %s AND key = %s AND archived_at IS NULL",
                (tenant_id, request.template),
            )
            cats_cursor = conn.execute(
                "SELECT key, critical, default_channels FROM categories WHERE tenant_id = %s"
                " AND (key = %s OR key IN (SELECT category FROM template_latest"
                " WHERE tenant_id = %s AND key = %s))",
                (tenant_id, request.category, tenant_id, request.template),
            )
            default_locale = templates.tenant_locale(conn, tenant_id)
            found_users = users_cursor.fetchall()
            template = template_cursor.fetchone()
            view = ingest.View(
                categories={r["key"]: r for r in cats_cursor.fetchall()}, default_locale=default_locale
            )
        if template is None:
            raise ValidationFailed.field("template", f"no template {request.template!r} (or it is archived)")
        recipients, errors = _resolve_users(request, found_users)
        if errors:
            raise ValidationFailed("some recipients are not valid", errors)
        category = request.category or template["category"]
        if request.category and request.category not in view.categories:
            raise ValidationFailed.field("category", f"no category {request.category!r}; create it first")
        channels = request.channels or list(
            view.categories.get(category or "", {}).get("default_channels") or []
        )
        if not channels:
            raise ValidationFailed.field(
                "channels", "give the channels, or a category whose default_channels name them"
            )
        plan = _plan(
            conn, tenant_id, request, recipients, template, view, category, channels, message_id, now
        )
        conn.execute(
            "INSERT INTO messages (id, tenant_id, template_key, template_version, category, channels, routing,"
            " send_at, skipped) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)",
            (
                message_id,
                tenant_id,
                request.template,
                template["version"],
                category,
                channels,
                request.routing,
                request.send_at,
                json.dumps(plan.skipped, default=str),
            ),
        )
        stored = notifications.store(
            conn, tenant_id, plan.items, None, now=now, returning="id, user_id, channel, status"
        )
    rows = notifications.finish(tenant_id, plan.items, stored)
    return MessageCreated(
        id=message_id,
        notifications=[
            MessageNotification.model_validate(rows[p.row_id]) for p in plan.items if p.row_id in rows
        ],
        skipped=[Skipped.model_validate(s) for s in plan.skipped],
    )


def _plan(
    conn: Any,
    tenant_id: UUID,
    request: MessageCreate,
    recipients: list[tuple[dict[str, Any] | None, str | None]],
    template: dict[str, Any],
    view: ingest.View,
    category: str | None,
    channels: Sequence[str],
    message_id: UUID,
    now: datetime,
) -> _Plan:
    critical = view.critical(category)
    contacts = {
        (ch, contact)
        for user, _ in recipients
        if user is not None
        for ch in channels
        if (contact := CHANNELS[ch].contact(user))
    }
    suppressed = ingest.lookup_suppressions(conn, tenant_id, contacts) if contacts else {}
    rendered: dict[tuple[str, str | None], dict[str, Any]] = {}  # (channel, variant locale) → payload
    due = request.send_at if request.send_at and request.send_at > now else now
    plan = _Plan([], [])
    for user, external in recipients:
        if user is None:
            plan.skipped.append(
                {"user_id": None, "external_id": external, "channel": None, "reason": "unknown_user"}
            )
            continue
        for ch in channels:
            channel = CHANNELS[ch]
            wanted = request.locale or user.get("locale") or view.default_locale
            variant = templates.choose_variant(template["variants"], ch, wanted, view.default_locale)
            contact = channel.contact(user)
            decided = None
            if contact is not None and variant is not None:
                reasons = suppressed.get((ch, ingest.suppressions.normalize(ch, contact)), ())
                decided = ingest.verdict(user, category, ch, critical, reasons, due)
            reason = (
                "no_variant"
                if variant is None
                else "no_contact"
                if contact is None
                else decided.reason
                if decided is not None
                else None
            )
            if reason is not None:
                plan.skipped.append(
                    {"user_id": user["id"], "external_id": external, "channel": ch, "reason": reason}
                )
                continue
            assert variant is not None
            assert contact is not None
            assert decided is not None
            cache_key = (ch, variant.get("locale"))
            if cache_key not in rendered:
                rendered[cache_key] = templates.render(variant, request.data).payload
            payload = {**rendered[cache_key], channel.recipient_field: contact}
            payload = parse(channel.payload_model, payload, prefix="payload").model_dump(
                by_alias=True, exclude_none=True
            )
            item = notifications._Prepared(
                index=len(plan.items),
                request=NotificationCreate.model_construct(
                    user_id=user["id"],
                    channel=cast(Channel, ch),
                    provider=None,
                    payload=payload,
                    send_at=request.send_at,
                    max_attempts=None,
                    category=category,
                    template=request.template,
                    data=None,
                    locale=None,
                    idempotency_key=None,
                ),
                provider=channel.default_provider,
                payload=payload,
                idempotency_key=None,
                request_hash=b"",
                row_id=uuid.uuid4(),
                category=category,
                template_key=request.template,
                template_version=template["version"],
                message_id=message_id,
                hold_until=decided.hold_until,
            )
            plan.items.append(item)
            if request.routing == "first":
                break
    return plan


def get(tenant_id: UUID, message_id: UUID) -> Message:
    with transaction() as conn:
        row = conn.execute(
            "SELECT id, template_key, template_version, category, channels, routing, send_at, skipped, created_at"
            " FROM messages WHERE tenant_id = %s AND id = %s",
            (tenant_id, message_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"message {message_id} not found")
        rows = conn.execute(
            "SELECT id, user_id, channel, status FROM notifications WHERE tenant_id = %s AND message_id = %s"
            " ORDER BY created_at, id",
            (tenant_id, message_id),
        ).fetchall()
    return Message(
        id=row["id"],
        template=row["template_key"],
        template_version=row["template_version"],
        category=row["category"],
        channels=row["channels"],
        routing=row["routing"],
        send_at=row["send_at"],
        created_at=row["created_at"],
        notifications=[MessageNotification.model_validate(r) for r in rows],
        skipped=[Skipped.model_validate(s) for s in row["skipped"]],
    )
