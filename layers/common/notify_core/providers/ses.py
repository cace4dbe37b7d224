"""Email through Amazon SES (API v1: ``SendEmail``, ``SendRawEmail`` when the message carries extra
headers such as List-Unsubscribe), with boto3. The v1 API is the one every SES region and the local
emulators serve.

Credentials: the function's own role unless the settings (or a tenant's config) give an access key.
The sender (``Source``) is the payload's ``from``, else ``SES_DEFAULT_FROM`` / the config's
``default_from``; SES refuses a sender whose identity is not verified (``MessageRejected``), which is
our configuration's fault, not the recipient's: the next config takes over.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, StringConstraints

from ..fields import Email
from ..models import EmailPayload, Strict
from .aws import AwsCredentials, Region, boto_client, classify_boto_error
from .base import OutgoingMessage, PermanentProviderError, ProviderSettings, Receipt, not_configured

NAME = "ses"


class SesOptions(Strict):
    region: Region | None = None
    default_from: Email | None = None  # for payloads without 'from'
    configuration_set: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None


# SES's own codes for what the recipient or the message caused.
RECIPIENT_CODES = {"InvalidParameterValue": "invalid_argument"}
# 'MessageRejected' is mostly an unverified sender (or, in the sandbox, an unverified recipient): the
# account's state, which another provider does not share.
PROVIDER_CODES = {"MessageRejected": "not_configured"}


class SesProvider:
    name: ClassVar[str] = NAME
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    credentials_model: ClassVar[type[BaseModel]] = AwsCredentials
    options_model: ClassVar[type[BaseModel]] = SesOptions

    def __init__(self, settings: ProviderSettings) -> None:
        connect, read = settings.provider_connect_timeout_seconds, settings.read_timeout(NAME)
        self.max_send_seconds = connect + read
        self._default_from = settings.ses_default_from
        self._configuration_set = settings.ses_configuration_set
        self._client = boto_client(
            "ses",
            region=settings.ses_region,
            base_url=settings.ses_base_url,
            access_key_id=settings.ses_access_key_id,
            secret_access_key=settings.ses_secret_access_key.get_secret_value(),
            connect_timeout=connect,
            read_timeout=read,
        )

    def _request(
        self, message: OutgoingMessage, payload: EmailPayload, sender: str
    ) -> tuple[str, dict[str, Any]]:
        common: dict[str, Any] = {
            "Tags": [
                {"Name": "notification_id", "Value": str(message.notification_id)},
                {"Name": "tenant_id", "Value": str(message.tenant_id)},
            ]
        }
        if self._configuration_set:
            common["ConfigurationSetName"] = self._configuration_set
        if message.headers:  # SendEmail cannot carry headers of our own: send the whole MIME message
            mime = EmailMessage()
            mime["From"], mime["To"], mime["Subject"] = sender, payload.to, payload.subject
            mime["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
            if payload.reply_to:
                mime["Reply-To"] = payload.reply_to
            for name, value in message.headers.items():
                mime[name] = value
            mime.set_content(payload.body)
            if payload.html:
                mime.add_alternative(payload.html, subtype="html")
            return "send_raw_email", {
                "Source": sender,
                "Destinations": [payload.to],
                "RawMessage": {"Data": mime.as_bytes()},
                **common,
            }
        body: dict[str, Any] = {"Text": {"Data": payload.body, "Charset": "UTF-8"}}
        if payload.html:
            body["Html"] = {"Data": payload.html, "Charset": "UTF-8"}
        request: dict[str, Any] = {
            "Source": sender,
            "Destination": {"ToAddresses": [payload.to]},
            "Message": {"Subject": {"Data": payload.subject, "Charset": "UTF-8"}, "Body": body},
            **common,
        }
        if payload.reply_to:
            request["ReplyToAddresses"] = [payload.reply_to]
        return "send_email", request

    def send(self, message: OutgoingMessage) -> Receipt:
        payload = message.payload
        assert isinstance(payload, EmailPayload), "the ses provider serves the email channel only"
        sender = payload.from_ or self._default_from
        if not sender:
            raise not_configured(NAME, "the payload has no 'from' and SES_DEFAULT_FROM is not set")
        if not payload.to:
            raise PermanentProviderError("email payload has no 'to'", "invalid_payload", provider=NAME)
        operation, request = self._request(message, payload, sender)
        try:
            reply = getattr(self._client, operation)(**request)
        except Exception as exc:  # every exception is mapped explicitly by classify_boto_error
            raise classify_boto_error(
                exc, NAME, recipient_codes=RECIPIENT_CODES, provider_codes=PROVIDER_CODES
            ) from exc
        message_id = str(reply.get("MessageId") or "") or None
        status = int(reply.get("ResponseMetadata", {}).get("HTTPStatusCode") or 200)
        return Receipt(
            provider_message_id=message_id,
            response={"provider": NAME, "status_code": status, "message_id": message_id},
        )
