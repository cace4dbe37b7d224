"""The console provider: logs the message instead of sending it. The default for local work.

It logs the payload (bodies cut to 1000 characters), which holds recipients' addresses: use it for
local and test stages only.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel

from ..observability import logger
from .base import NoFields, OutgoingMessage, Payload, ProviderSettings, Receipt

NAME = "console"
BODY_LIMIT = 1000


def _shorten(payload: Payload) -> dict[str, Any]:
    out = payload.model_dump(by_alias=True, exclude_none=True)
    for key in ("body", "html"):
        value = out.get(key)
        if isinstance(value, str) and len(value) > BODY_LIMIT:
            out[key] = value[:BODY_LIMIT] + f"... ({len(value)} characters)"
    return out


class ConsoleProvider:
    name: ClassVar[str] = NAME
    channels: ClassVar[frozenset[str]] = frozenset({"email", "sms", "push"})
    credentials_model: ClassVar[type[BaseModel]] = NoFields
    options_model: ClassVar[type[BaseModel]] = NoFields
    max_send_seconds = 1.0

    def __init__(self, settings: ProviderSettings | None = None, log: Any = None) -> None:
        self._settings = settings
        self._log = log if log is not None else logger  # a seam for tests: anything with .info(msg, extra=)

    def send(self, message: OutgoingMessage) -> Receipt:
        message_id = f"console-{uuid.uuid4().hex}"
        self._log.info(
            "console provider: message not sent, logged",
            extra={
                "provider_message_id": message_id,
                "notification_id": str(message.notification_id),
                "tenant_id": str(message.tenant_id),
                "channel": message.channel,
                "attempt": message.attempt,
                "payload": _shorten(message.payload),
            },
        )
        return Receipt(
            provider_message_id=message_id,
            response={"provider": NAME, "channel": message.channel, "message_id": message_id},
        )
