"""Channels, declared once: each names its payload model, the payload field that holds the
recipient, where a user's contact for it lives, and its default provider. Ingest, delivery and
the providers derive everything channel-specific from `CHANNELS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel

from .models import Channel as ChannelName
from .models import EmailPayload, PushPayload, SmsPayload


def _first(values: Any) -> str | None:
    return str(values[0]) if values else None


@dataclass(frozen=True, slots=True)
class Channel:
    name: str
    payload_model: type[BaseModel]
    recipient_field: str  # the payload field holding the address
    contact: Callable[[Mapping[str, Any]], str | None]  # the user's address for this channel
    contact_field: str  # the users column it comes from
    default_provider: str
    describes: str  # what the address is, for error messages
    alternatives: tuple[str, ...] = ()  # payload fields that address the message instead (push topic)

    def recipient(self, payload: Mapping[str, Any] | BaseModel) -> str | None:
        """The address a payload is sent to (its recipient field, else an alternative)."""
        data = payload if isinstance(payload, Mapping) else payload.model_dump(by_alias=True)
        for name in (self.recipient_field, *self.alternatives):
            value = data.get(name)
            if value:
                return str(value)
        return None


EMAIL = Channel(
    "email",
    EmailPayload,
    "to",
    lambda user: user.get("email"),
    "email",
    "sendgrid",
    "an email address",
)
SMS = Channel("sms", SmsPayload, "to", lambda user: user.get("phone"), "phone", "twilio", "a phone number")
PUSH = Channel(
    "push",
    PushPayload,
    "token",
    lambda user: _first(user.get("push_tokens")),
    "push_tokens",
    "fcm",
    "a push token or topic",
    alternatives=("topic",),
)

CHANNELS: dict[str, Channel] = {c.name: c for c in (EMAIL, SMS, PUSH)}

if set(CHANNELS) != set(get_args(ChannelName)):  # the request model's enum is derived from the same list
    raise RuntimeError("models.ChannelName and channels.CHANNELS disagree")


def channel(name: str) -> Channel:
    return CHANNELS[name]
