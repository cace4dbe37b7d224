"""The audience's API models that belong to no single module: suppressions, path parameters and the
documented replies of one-click unsubscribe (JSON, or an HTML page for browsers)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self
from uuid import UUID

from aws_lambda_powertools.event_handler.openapi.params import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..fields import Email, Phone, PushToken, Storable
from ..models import Channel, ErrorEnvelope
from ..openapi import error_example
from ..suppressions import Reason
from .unsubscribe import Unsubscribed

SuppressionReason = Reason
TemplateKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$"),
    Storable,
    Path(description="The template's key"),
]


class SuppressionCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "channel": "email",
                    "address": "ada@example.com",
                    "reason": "manual",
                    "note": "asked by phone",
                }
            ]
        },
    )

    channel: Channel
    address: Annotated[str, StringConstraints(min_length=1, max_length=4096), Storable] = Field(
        description="An email address, an E.164 phone number or a push token, as the channel takes"
    )
    reason: Reason
    note: Annotated[str, StringConstraints(max_length=1000), Storable] | None = None

    @model_validator(mode="after")
    def _address_fits_the_channel(self) -> Self:
        from pydantic import TypeAdapter

        kind: Any = {"email": Email, "sms": Phone, "push": PushToken}[self.channel]
        self.address = TypeAdapter(kind).validate_python(self.address)
        return self


class Suppression(BaseModel):
    id: UUID
    channel: Channel
    address: str = Field(description="Normalized: lower-cased email, E.164 phone, token as given")
    reason: Reason
    notification_id: UUID | None = Field(description="The send that caused it, when one did")
    note: str | None
    created_at: datetime


_HTML = {"schema": {"type": "string"}, "example": "<!DOCTYPE html><html>…</html>"}
UNSUBSCRIBE_OK: dict[str, Any] = {
    "description": "What the link does (GET) or did (POST): JSON, or with Accept: text/html a minimal page",
    "content": {"application/json": {"model": Unsubscribed}, "text/html": _HTML},
}
UNSUBSCRIBE_ERRORS: dict[str, Any] = {
    "description": "The token is forged, damaged or expired (with Accept: text/html, a page saying so)",
    "content": {
        "application/json": {
            "schema": {"$ref": f"#/components/schemas/{ErrorEnvelope.__name__}"},
            "examples": {
                "not_found": {"value": error_example(404, message="this unsubscribe link has expired")}
            },
        },
        "text/html": _HTML,
    },
}
