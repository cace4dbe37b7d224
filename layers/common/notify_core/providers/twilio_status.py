"""Twilio's message status callbacks: what they mean, on the provider side.

Every SMS send sets `status_callback` to `status_callback_url(PUBLIC_BASE_URL, notification, tenant)`:
the public path `/callbacks/twilio` with our ids in the query. Twilio signs the exact URL it calls
plus the form parameters (`X-Twilio-Signature`, HMAC-SHA1 with the account's auth token), so the ids
come back authenticated, and a callback finds its notification even when it overtakes the sender's
own commit. `verify` rebuilds that URL from PUBLIC_BASE_URL (what Twilio called, not what the
gateway saw) and checks it with the SDK's `RequestValidator`.

| MessageStatus            | stored as   | notification | suppression          |
|--------------------------|-------------|--------------|----------------------|
| delivered                | delivered   | → delivered  |                      |
| undelivered / failed     | undelivered | → failed     | sms_stop if 21610    |
| queued, sending, sent, … | not stored (acknowledged)                         |
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode
from uuid import UUID

from .events import Malformed, NotConfigured, Parsed, ProviderEvent, Unverified, text, uuid_or_none

NAME = "twilio"
PATH = "/callbacks/twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
STOP_CODE = "21610"  # the recipient replied STOP: Twilio refuses every later message to it
MAX_FIELD = 2000


def status_callback_url(base_url: str, notification_id: UUID, tenant_id: UUID) -> str:
    """The URL Twilio calls back for one message (also what its signature covers)."""
    query = urlencode({"notification_id": str(notification_id), "tenant_id": str(tenant_id)})
    return f"{base_url.rstrip('/')}{PATH}?{query}"


class _Form(dict[str, list[str]]):
    """Form parameters as the validator reads them (every value of a repeated name)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def read_form(raw: bytes) -> dict[str, list[str]]:
    try:
        body = raw.decode("utf-8")
        return parse_qs(body, keep_blank_values=True, strict_parsing=bool(body), errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Malformed("the body is not a UTF-8 form (application/x-www-form-urlencoded)") from None


def ids(query: Mapping[str, str]) -> tuple[UUID, UUID]:
    """The notification and tenant a callback URL names (not yet authenticated: `verify` does that)."""
    notification_id = uuid_or_none(query.get("notification_id"))
    tenant_id = uuid_or_none(query.get("tenant_id"))
    if notification_id is None or tenant_id is None:
        raise Unverified("the callback URL is not one this platform gave Twilio")
    return notification_id, tenant_id


def verify(
    base_url: str,
    notification_id: UUID,
    tenant_id: UUID,
    form: dict[str, list[str]],
    headers: Mapping[str, str],
    auth_token: str,
) -> None:
    """Unverified unless Twilio signed this URL and these parameters with `auth_token`."""
    if not auth_token:
        raise NotConfigured("TWILIO_AUTH_TOKEN is not set")
    lower = SIGNATURE_HEADER.lower()
    signature = next((v for k, v in headers.items() if k.lower() == lower), None)
    if not signature:
        raise Unverified("the X-Twilio-Signature header is missing")
    from twilio.request_validator import RequestValidator

    url = status_callback_url(base_url, notification_id, tenant_id)
    if not RequestValidator(auth_token).validate(url, _Form(form), signature):
        raise Unverified("the X-Twilio-Signature does not match")


def _one(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def parse(form: dict[str, list[str]], notification_id: UUID, tenant_id: UUID, now: datetime) -> Parsed:
    """A verified callback: at most one event (its MessageSid and MessageStatus are required)."""
    sid, status = _one(form, "MessageSid") or _one(form, "SmsSid"), _one(form, "MessageStatus")
    status = status or _one(form, "SmsStatus")
    if not sid or not status or len(sid) > 64 or len(status) > 32:
        raise Malformed("MessageSid and MessageStatus are required")
    code = text(_one(form, "ErrorCode"), 10)
    detail: dict[str, Any] = {
        k: v
        for k, v in {
            "status": text(status, 32),
            "message_sid": text(sid, 64),
            "error_code": code,
            "error_message": text(_one(form, "ErrorMessage"), MAX_FIELD),
        }.items()
        if v
    }
    common: dict[str, Any] = {
        "provider": NAME,
        "event_id": f"{sid}:{status}",
        "notification_id": notification_id,
        "tenant_id": tenant_id,
        "occurred_at": now,
        "detail": detail,
    }
    if status == "delivered":
        return Parsed([ProviderEvent(type="delivered", effect="delivered", **common)])
    if status in ("undelivered", "failed"):
        error = f"{status}" + (f": Twilio error {code}" if code else "")
        event = ProviderEvent(
            type="undelivered",
            effect="failed",
            suppression="sms_stop" if code == STOP_CODE else None,
            error=error,
            **common,
        )
        return Parsed([event])
    return Parsed(ignored=1)
