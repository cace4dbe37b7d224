"""Amazon SES and SNS providers: how botocore's errors map onto the typed errors (and whose fault
they are), with botocore's own Stubber in front of a real client. No network."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from botocore.exceptions import (
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber

from notify_core.providers import (
    PROVIDERS,
    OutgoingMessage,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from notify_core.providers.aws import classify_boto_error, classify_client_error
from notify_core.providers.base import ProviderSettings
from notify_core.providers.ses import SesProvider
from notify_core.providers.sns import SnsProvider

SETTINGS = ProviderSettings(
    ses_base_url="http://127.0.0.1:9",
    sns_base_url="http://127.0.0.1:9",
    ses_region="us-east-1",
    sns_region="us-east-1",
    ses_access_key_id="AKIAEXAMPLE0000000",
    ses_secret_access_key="x",
    sns_access_key_id="AKIAEXAMPLE0000000",
    sns_secret_access_key="x",
    ses_default_from="ops@example.com",
)
EMAIL = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}
SMS = {"to": "+14155550100", "body": "Your code is 1"}


def message(
    channel: str, provider: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    built = OutgoingMessage.build(uuid.uuid4(), uuid.uuid4(), channel, provider, payload)
    return dataclasses.replace(built, headers=headers or {})


def test_both_are_registered_for_their_channels() -> None:
    assert PROVIDERS["ses"].channels == frozenset({"email"})
    assert PROVIDERS["sns"].channels == frozenset({"sms"})


def test_ses_sends_send_email_with_tags_and_the_default_sender() -> None:
    provider = SesProvider(SETTINGS)
    out = message("email", "ses", EMAIL)
    with Stubber(provider._client) as stub:
        stub.add_response(
            "send_email",
            {"MessageId": "m-1"},
            {
                "Source": "ops@example.com",
                "Destination": {"ToAddresses": ["ada@example.com"]},
                "Message": {
                    "Subject": {"Data": "Hi", "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": "Hello", "Charset": "UTF-8"}},
                },
                "Tags": [
                    {"Name": "notification_id", "Value": str(out.notification_id)},
                    {"Name": "tenant_id", "Value": str(out.tenant_id)},
                ],
            },
        )
        receipt = provider.send(out)
    assert receipt.provider_message_id == "m-1"


def test_ses_sends_raw_mime_when_the_message_carries_headers() -> None:
    provider = SesProvider(SETTINGS)
    with Stubber(provider._client) as stub:
        stub.add_response("send_raw_email", {"MessageId": "m-2"})
        receipt = provider.send(message("email", "ses", EMAIL, {"List-Unsubscribe": "<https://u.example/x>"}))
    assert receipt.provider_message_id == "m-2"


@pytest.mark.parametrize(
    ("code", "status", "kind", "our_code", "fault"),
    [
        ("Throttling", 400, TransientProviderError, "throttled", "provider"),
        ("ServiceUnavailable", 503, TransientProviderError, "http_503", "provider"),
        ("InternalFailure", 500, TransientProviderError, "http_500", "provider"),
        ("AccessDenied", 403, PermanentProviderError, "auth", "provider"),
        ("InvalidClientTokenId", 403, PermanentProviderError, "auth", "provider"),
        ("MessageRejected", 400, PermanentProviderError, "not_configured", "provider"),
        ("ConfigurationSetDoesNotExist", 400, PermanentProviderError, "not_configured", "provider"),
        ("AccountSendingPausedException", 400, PermanentProviderError, "not_configured", "provider"),
        ("InvalidParameterValue", 400, PermanentProviderError, "invalid_argument", "recipient"),
        ("SomethingNew", 400, PermanentProviderError, "http_400", "recipient"),
        ("SomethingNew", 502, TransientProviderError, "http_502", "provider"),
    ],
)
def test_ses_errors_are_classified(
    code: str, status: int, kind: type[ProviderError], our_code: str, fault: str
) -> None:
    provider = SesProvider(SETTINGS)
    with Stubber(provider._client) as stub:
        stub.add_client_error(
            "send_email", service_error_code=code, service_message="no", http_status_code=status
        )
        with pytest.raises(kind) as raised:
            provider.send(message("email", "ses", EMAIL))
    assert (raised.value.code, raised.value.fault, raised.value.provider) == (our_code, fault, "ses")


def test_ses_without_any_sender_is_a_configuration_fault() -> None:
    provider = SesProvider(SETTINGS.model_copy(update={"ses_default_from": ""}))
    with pytest.raises(PermanentProviderError) as raised:
        provider.send(message("email", "ses", EMAIL))
    assert (raised.value.code, raised.value.fault) == ("not_configured", "provider")


def test_sns_publishes_with_the_sms_attributes() -> None:
    provider = SnsProvider(SETTINGS.model_copy(update={"sns_sender_id": "Acme"}))
    with Stubber(provider._client) as stub:
        stub.add_response(
            "publish",
            {"MessageId": "s-1"},
            {
                "PhoneNumber": "+14155550100",
                "Message": "Your code is 1",
                "MessageAttributes": {
                    "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
                    "AWS.SNS.SMS.SenderID": {"DataType": "String", "StringValue": "Acme"},
                },
            },
        )
        assert provider.send(message("sms", "sns", SMS)).provider_message_id == "s-1"


@pytest.mark.parametrize(
    ("code", "status", "kind", "our_code", "fault"),
    [
        ("InvalidParameter", 400, PermanentProviderError, "invalid_number", "recipient"),
        ("AuthorizationError", 403, PermanentProviderError, "auth", "provider"),
        ("Throttled", 429, TransientProviderError, "throttled", "provider"),
        ("KMSAccessDenied", 400, PermanentProviderError, "not_configured", "provider"),
        ("InternalError", 500, TransientProviderError, "http_500", "provider"),
    ],
)
def test_sns_errors_are_classified(
    code: str, status: int, kind: type[ProviderError], our_code: str, fault: str
) -> None:
    provider = SnsProvider(SETTINGS)
    with Stubber(provider._client) as stub:
        stub.add_client_error(
            "publish", service_error_code=code, service_message="no", http_status_code=status
        )
        with pytest.raises(kind) as raised:
            provider.send(message("sms", "sns", SMS))
    assert (raised.value.code, raised.value.fault) == (our_code, fault)


def test_transport_errors() -> None:
    connect = classify_boto_error(EndpointConnectionError(endpoint_url="http://x"), "ses")
    assert (type(connect), connect.code, getattr(connect, "ambiguous", None)) == (
        TransientProviderError,
        "connection",
        False,
    )
    timeout = classify_boto_error(ConnectTimeoutError(endpoint_url="http://x"), "ses")
    assert (timeout.code, getattr(timeout, "ambiguous", None)) == ("connect_timeout", False)
    lost = classify_boto_error(ReadTimeoutError(endpoint_url="http://x"), "sns")
    assert (lost.code, getattr(lost, "ambiguous", None), lost.fault) == ("timeout", True, "provider")
    creds = classify_boto_error(NoCredentialsError(), "sns")
    assert (type(creds), creds.code, creds.fault) == (PermanentProviderError, "not_configured", "provider")
    bad = classify_boto_error(ParamValidationError(report="bad"), "ses")
    assert (bad.code, bad.fault) == ("invalid_payload", "recipient")
    other = classify_boto_error(RuntimeError("?"), "ses")
    assert (type(other), other.code) == (TransientProviderError, "unexpected")


def test_a_service_code_mapping_wins_over_the_generic_rules() -> None:
    error = classify_client_error(
        "ses", "Throttling", "m", 400, provider_codes={"Throttling": "not_configured"}
    )
    assert (type(error), error.code) == (PermanentProviderError, "not_configured")
