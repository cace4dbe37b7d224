"""SMS through Amazon SNS (``Publish`` to a phone number), with boto3.

Credentials: the function's own role unless the settings (or a tenant's config) give an access key.
``SNS_SMS_TYPE`` (Transactional by default: routed for reliability) and ``SNS_SENDER_ID`` go as the
message's ``AWS.SNS.SMS.*`` attributes; a payload's ``from`` as the origination number.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, StringConstraints

from ..models import SmsPayload, Strict
from .aws import AwsCredentials, Region, boto_client, classify_boto_error
from .base import OutgoingMessage, PermanentProviderError, ProviderSettings, Receipt

NAME = "sns"


class SnsOptions(Strict):
    region: Region | None = None
    sender_id: (
        Annotated[
            str, StringConstraints(pattern=r"^[A-Za-z0-9]{0,10}[A-Za-z][A-Za-z0-9]{0,10}$", max_length=11)
        ]
        | None
    ) = None
    sms_type: Literal["Transactional", "Promotional"] | None = None


# SNS answers InvalidParameter for a phone number it cannot use: the recipient's.
RECIPIENT_CODES = {"InvalidParameter": "invalid_number", "InvalidParameterValue": "invalid_number"}


def _attribute(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


class SnsProvider:
    name: ClassVar[str] = NAME
    channels: ClassVar[frozenset[str]] = frozenset({"sms"})
    credentials_model: ClassVar[type[BaseModel]] = AwsCredentials
    options_model: ClassVar[type[BaseModel]] = SnsOptions

    def __init__(self, settings: ProviderSettings) -> None:
        connect, read = settings.provider_connect_timeout_seconds, settings.read_timeout(NAME)
        self.max_send_seconds = connect + read
        self._attributes = {"AWS.SNS.SMS.SMSType": _attribute(settings.sns_sms_type)}
        if settings.sns_sender_id:
            self._attributes["AWS.SNS.SMS.SenderID"] = _attribute(settings.sns_sender_id)
        self._client = boto_client(
            "sns",
            region=settings.sns_region,
            base_url=settings.sns_base_url,
            access_key_id=settings.sns_access_key_id,
            secret_access_key=settings.sns_secret_access_key.get_secret_value(),
            connect_timeout=connect,
            read_timeout=read,
        )

    def send(self, message: OutgoingMessage) -> Receipt:
        payload = message.payload
        assert isinstance(payload, SmsPayload), "the sns provider serves the sms channel only"
        if not payload.to:
            raise PermanentProviderError("sms payload has no 'to'", "invalid_payload", provider=NAME)
        attributes: dict[str, Any] = dict(self._attributes)
        if payload.from_:
            attributes["AWS.MM.SMS.OriginationNumber"] = _attribute(payload.from_)
        try:
            reply = self._client.publish(
                PhoneNumber=payload.to, Message=payload.body, MessageAttributes=attributes
            )
        except Exception as exc:  # every exception is mapped explicitly by classify_boto_error
            raise classify_boto_error(exc, NAME, recipient_codes=RECIPIENT_CODES) from exc
        message_id = str(reply.get("MessageId") or "") or None
        status = int(reply.get("ResponseMetadata", {}).get("HTTPStatusCode") or 200)
        return Receipt(
            provider_message_id=message_id,
            response={"provider": NAME, "status_code": status, "message_id": message_id},
        )
