"""Webhook endpoints: create, read, list, change, delete, rotate the secret, send a test event,
list deliveries and redeliver one. Always within the caller's tenant; every change audited in its
own transaction (secrets never passed to the audit log).

A secret (`whsec_` + base64 of 24 random bytes, Standard Webhooks' format) is shown once, at
creation or rotation. After a rotation the previous secret keeps signing, beside the new one, for
ROTATION_OVERLAP (24 h), so receivers can switch without dropping a delivery.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .. import audit, pagination
from ..db import transaction
from ..errors import NotFound, ValidationFailed
from ..fields import Storable, StrictBool
from ..models import Page, Strict
from . import guarded_http, outbox

ROTATION_OVERLAP = timedelta(hours=24)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret

SubscribableEvent = outbox.SubscribableEvent
Url = Annotated[
    str,
    StringConstraints(min_length=1, max_length=guarded_http.MAX_URL_LENGTH),
    Storable,
    Field(
        description="Where events are POSTed: https (http and private addresses only in local mode), at"
        " most 2,048 characters",
        examples=["https://example.com/hooks/notifications"],
    ),
]
Description = Annotated[str, StringConstraints(max_length=500), Storable]
Events = Annotated[
    list[SubscribableEvent],
    Field(
        min_length=1,
        max_length=6,
        description="Event types to receive",
        examples=[["notification.delivered"]],
    ),
]


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


# ---------------------------------------------------------------- models


def _unique(events: list[str] | None) -> list[str] | None:
    return None if events is None else list(dict.fromkeys(events))


class WebhookCreate(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://example.com/hooks/notifications",
                    "events": ["notification.delivered", "notification.failed"],
                    "description": "CRM sync",
                    "active": True,
                }
            ]
        }
    )

    url: Url
    events: Events
    description: Description | None = None
    active: StrictBool = True

    _dedupe = field_validator("events")(_unique)


class WebhookPatch(Strict):
    """Only the fields present change; `active: true` also re-enables an endpoint the system disabled."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"active": False}]})

    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    active: StrictBool | None = None

    _dedupe = field_validator("events")(_unique)


class Webhook(BaseModel):
    id: UUID = Field(description="The endpoint's id")
    url: str = Field(
        description="Where events are POSTed", examples=["https://example.com/hooks/notifications"]
    )
    events: list[str] = Field(description="Event types it receives", examples=[["notification.delivered"]])
    description: str | None = Field(description="Free text", examples=["CRM sync"])
    active: bool = Field(description="Whether events are written for it")
    disabled_at: datetime | None = Field(description="When the system disabled it for failing throughout")
    disabled_reason: str | None
    failing_since: datetime | None = Field(description="First failed delivery since the last success")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries are signed with the previous secret too"
    )
    created_at: datetime = Field(description="When it was created")
    updated_at: datetime = Field(description="When it last changed")


class WebhookCreated(Webhook):
    secret: str = Field(
        description="Shown once: verify signatures with it",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )


class SecretRotated(BaseModel):
    id: UUID = Field(description="The endpoint's id")
    secret: str = Field(
        description="The new secret, shown once", examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
    )
    previous_secret_expires_at: datetime = Field(description="The old secret signs too until then")


class WebhookAttempt(BaseModel):
    attempt: int = Field(description="1-based attempt number", examples=[1])
    status_code: int | None = Field(
        description="The endpoint's HTTP status; null when none came", examples=[503]
    )
    duration_ms: int = Field(description="From connecting to the end of the reply", examples=[52])
    error: str | None = Field(description="Why it failed; null on a 2xx", examples=["HTTP 503"])
    next_retry_at: datetime | None = Field(description="When it is tried again; null when it is not")
    at: datetime = Field(description="When the attempt finished")


class WebhookDelivery(BaseModel):
    id: UUID = Field(description="The delivery's id (redeliver takes it)")
    endpoint_id: UUID = Field(description="The endpoint it goes to")
    event_id: UUID = Field(description="The webhook-id header: the same for every redelivery")
    event_type: str = Field(examples=["notification.delivered"])
    status: Literal["pending", "delivered", "failed"] = Field(
        description="pending: not yet delivered, retries left"
    )
    attempt_count: int = Field(description="Attempts made so far")
    status_code: int | None = Field(description="Of the last attempt")
    duration_ms: int | None = Field(description="Of the last attempt")
    error: str | None = Field(description="Of the last attempt")
    next_retry_at: datetime | None = Field(description="When the next attempt is due (pending only)")
    created_at: datetime = Field(description="When the event was written to the outbox")
    delivered_at: datetime | None = Field(description="When the endpoint answered 2xx")
    redelivery_of: UUID | None = Field(description="The delivery this one sends again, if any")
    attempts: list[WebhookAttempt] = Field(description="Every attempt, oldest first")


COLUMNS = (
    "id, url, events, description, active, disabled_at, disabled_reason, failing_since,"
    " previous_secret_expires_at, created_at, updated_at"
)
DELIVERY_COLUMNS = (
    "id, endpoint_id, event_id, event_type, status, attempt_count, last_status_code AS status_code,"
    " last_duration_ms AS duration_ms, last_error AS error,"
    " CASE WHEN status = 'pending' THEN next_attempt_at END AS next_retry_at, created_at, delivered_at,"
    " redelivery_of,"
    " (SELECT coalesce(json_agg(json_build_object('attempt', a.attempt_number, 'status_code', a.status_code,"
    " 'duration_ms', a.duration_ms, 'error', a.error, 'next_retry_at', a.next_retry_at, 'at', a.created_at)"
    " ORDER BY a.attempt_number, a.id), '[]'::json) FROM webhook_attempts a"
    " WHERE a.delivery_id = webhook_deliveries.id) AS attempts"
)


def _checked_url(url: str) -> str:
    try:
        return guarded_http.check_url(url)
    except guarded_http.TargetRefused as exc:
        raise ValidationFailed.field("url", exc.reason) from None


def _missing(webhook_id: UUID) -> NotFound:
    return NotFound(f"webhook {webhook_id} not found")


# ---------------------------------------------------------------- endpoints


def create(tenant_id: UUID, data: WebhookCreate, actor: audit.Actor) -> WebhookCreated:
    url = _checked_url(data.url)
    secret = new_secret()
    webhook_id = uuid.uuid4()
    with transaction() as conn:
        row = conn.execute(
            f"INSERT INTO webhook_endpoints (id, tenant_id, url, description, events, active, secret)"
            f" VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {COLUMNS}",
            (webhook_id, tenant_id, url, data.description, data.events, data.active, secret),
        ).fetchone()
        audit.record(
            conn,
            tenant_id,
            actor,
            "webhook.create",
            "webhook",
            webhook_id,
            {"url": url, "events": data.events, "description": data.description, "active": data.active},
        )
    assert row is not None
    return WebhookCreated(**row, secret=secret)


def get(tenant_id: UUID, webhook_id: UUID) -> Webhook:
    with transaction() as conn:
        row = conn.execute(
            f"SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
            (tenant_id, webhook_id),
        ).fetchone()
    if row is None:
        raise _missing(webhook_id)
    return Webhook.model_validate(row)


def list_page(tenant_id: UUID, *, limit: int = 20, cursor: str | None = None) -> Page[Webhook]:
    rows, next_cursor = pagination.fetch_page(
        "webhook_endpoints", COLUMNS, ["tenant_id = %s"], [tenant_id], limit, cursor
    )
    return Page[Webhook](data=[Webhook.model_validate(r) for r in rows], next_cursor=next_cursor)


def update(tenant_id: UUID, webhook_id: UUID, patch: WebhookPatch, actor: audit.Actor) -> Webhook:
    given = patch.model_dump(exclude_unset=True)
    for name in ("url", "events", "active"):
        if name in given and given[name] is None:
            raise ValidationFailed.field(name, "may not be null")
    if "url" in given:
        given["url"] = _checked_url(given["url"])
    with transaction() as conn:
        old = conn.execute(
            f"SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s AND id = %s FOR UPDATE",
            (tenant_id, webhook_id),
        ).fetchone()
        if old is None:
            raise _missing(webhook_id)
        changes = {k: v for k, v in given.items() if old[k] != v}
        if not changes:
            return Webhook.model_validate(old)
        sets = dict(changes)
        if changes.get("active") is True:  # re-enabled: its failure history starts again
            sets |= {"disabled_at": None, "disabled_reason": None, "failing_since": None}
        assignments = ", ".join(f"{name} = %s" for name in sets)
        row = conn.execute(
            f"UPDATE webhook_endpoints SET {assignments}, updated_at = now()"
            f" WHERE tenant_id = %s AND id = %s RETURNING {COLUMNS}",
            [*sets.values(), tenant_id, webhook_id],
        ).fetchone()
        audit.record(conn, tenant_id, actor, "webhook.update", "webhook", webhook_id, changes)
    return Webhook.model_validate(row)


def delete(tenant_id: UUID, webhook_id: UUID, actor: audit.Actor) -> None:
    with transaction() as conn:
        row = conn.execute(
            "DELETE FROM webhook_endpoints WHERE tenant_id = %s AND id = %s RETURNING url",
            (tenant_id, webhook_id),
        ).fetchone()
        if row is None:
            raise _missing(webhook_id)
        audit.record(conn, tenant_id, actor, "webhook.delete", "webhook", webhook_id, {"url": row["url"]})


def rotate_secret(tenant_id: UUID, webhook_id: UUID, actor: audit.Actor) -> SecretRotated:
    secret = new_secret()
    until = datetime.now(UTC) + ROTATION_OVERLAP
    with transaction() as conn:
        row = conn.execute(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = %s,"
            " secret = %s, updated_at = now() WHERE tenant_id = %s AND id = %s RETURNING id",
            (until, secret, tenant_id, webhook_id),
        ).fetchone()
        if row is None:
            raise _missing(webhook_id)
        audit.record(
            conn,
            tenant_id,
            actor,
            "webhook.rotate_secret",
            "webhook",
            webhook_id,
            {"previous_secret_expires_at": until.isoformat()},
        )
    return SecretRotated(id=webhook_id, secret=secret, previous_secret_expires_at=until)


# ---------------------------------------------------------------- deliveries


def _delivery(conn: Any, tenant_id: UUID, delivery_id: UUID) -> WebhookDelivery:
    row = conn.execute(
        f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant_id = %s AND id = %s",
        (tenant_id, delivery_id),
    ).fetchone()
    return WebhookDelivery.model_validate(row)


def send_test(tenant_id: UUID, webhook_id: UUID, actor: audit.Actor) -> WebhookDelivery:
    """A `webhook.test` event to this endpoint only (also while it is inactive: it was asked for)."""
    event = outbox.Event(
        tenant_id,
        "webhook.test",
        {"webhook_id": str(webhook_id), "message": "a test event from the notification platform"},
    )
    with transaction() as conn:
        created = outbox.emit_to(conn, tenant_id, webhook_id, event)
        if created is None:
            raise _missing(webhook_id)
        audit.record(
            conn, tenant_id, actor, "webhook.test", "webhook", webhook_id, {"event_id": str(event.id)}
        )
        delivery = _delivery(conn, tenant_id, created.id)
    outbox.enqueue([created])
    return delivery


def list_deliveries(
    tenant_id: UUID,
    webhook_id: UUID,
    *,
    limit: int = 20,
    cursor: str | None = None,
    status: str | None = None,
) -> Page[WebhookDelivery]:
    where = ["tenant_id = %s", "endpoint_id = %s"]
    params: list[Any] = [tenant_id, webhook_id]
    if status is not None:
        where.append("status = %s")
        params.append(status)
    rows, next_cursor = pagination.fetch_page(
        "webhook_deliveries", DELIVERY_COLUMNS, where, params, limit, cursor
    )
    if not rows and cursor is None:
        get(tenant_id, webhook_id)  # 404 for an unknown endpoint
    return Page[WebhookDelivery](
        data=[WebhookDelivery.model_validate(r) for r in rows], next_cursor=next_cursor
    )


def redeliver(tenant_id: UUID, webhook_id: UUID, delivery_id: UUID, actor: audit.Actor) -> WebhookDelivery:
    """Send a delivery's event again, as a new delivery with the same webhook-id (receivers that
    deduplicate on it see the same event)."""
    new_id = uuid.uuid4()
    with transaction() as conn:
        row = conn.execute(
            "INSERT INTO webhook_deliveries (id, tenant_id, endpoint_id, event_id, event_type, payload,"
            " redelivery_of) SELECT %s, tenant_id, endpoint_id, event_id, event_type, payload, id"
            " FROM webhook_deliveries WHERE tenant_id = %s AND endpoint_id = %s AND id = %s"
            " RETURNING id, tenant_id",
            (new_id, tenant_id, webhook_id, delivery_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"delivery {delivery_id} of webhook {webhook_id} not found")
        audit.record(
            conn,
            tenant_id,
            actor,
            "webhook.redeliver",
            "webhook",
            webhook_id,
            {"delivery_id": str(delivery_id)},
        )
        delivery = _delivery(conn, tenant_id, new_id)
    outbox.enqueue([outbox.Pending(new_id, tenant_id)])
    return delivery
