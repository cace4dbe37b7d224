"""Amazon SES (email) and SNS (SMS) through boto3 against the local AWS emulator: LocalStack (SES v1
SendEmail/SendRawEmail after VerifyEmailIdentity, SNS Publish to a phone number), or moto's server
where the LocalStack found runs without them. What was sent is read back from the emulator."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from notify_core.providers import OutgoingMessage, PermanentProviderError, TransientProviderError
from notify_core.providers.base import ProviderSettings
from notify_core.providers.ses import SesProvider
from notify_core.providers.sns import SnsProvider

from .conftest import AwsEmulator

pytestmark = pytest.mark.integration


def outgoing(
    channel: str, provider: str, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    built = OutgoingMessage.build(uuid.uuid4(), uuid.uuid4(), channel, provider, payload)
    return dataclasses.replace(built, headers=headers or {})


def sender(aws: AwsEmulator) -> str:
    address = f"ops-{uuid.uuid4().hex[:10]}@example.com"
    aws.verify(address)
    return address


def test_ses_sends_an_email_the_emulator_records(aws: AwsEmulator) -> None:
    provider = SesProvider(ProviderSettings(ses_base_url=aws.endpoint, ses_default_from=sender(aws)))
    to = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    receipt = provider.send(
        outgoing("email", "ses", {"to": to, "subject": "Your code", "body": "It is 123456."})
    )
    sent = {m["id"]: m for m in aws.emails()}
    assert receipt.provider_message_id in sent
    got = sent[receipt.provider_message_id]
    assert (got["to"], got["subject"], got["body"]) == ([to], "Your code", "It is 123456.")


def test_ses_carries_extra_headers_in_a_raw_message(aws: AwsEmulator) -> None:
    provider = SesProvider(ProviderSettings(ses_base_url=aws.endpoint))
    payload = {"to": "ada@example.com", "from": sender(aws), "subject": "News", "body": "Hello"}
    receipt = provider.send(outgoing("email", "ses", payload, {"List-Unsubscribe": "<https://u.example/x>"}))
    raw = {m["id"]: m["raw"] for m in aws.emails()}[receipt.provider_message_id]
    assert "List-Unsubscribe: <https://u.example/x>" in raw
    assert "Subject: News" in raw


def test_ses_refuses_an_unverified_sender_as_our_configurations_fault(aws: AwsEmulator) -> None:
    provider = SesProvider(ProviderSettings(ses_base_url=aws.endpoint))
    payload = {
        "to": "ada@example.com",
        "from": f"nobody-{uuid.uuid4().hex[:8]}@example.com",
        "subject": "s",
        "body": "b",
    }
    with pytest.raises(PermanentProviderError) as raised:
        provider.send(outgoing("email", "ses", payload))
    assert (raised.value.code, raised.value.fault, raised.value.provider_code) == (
        "not_configured",
        "provider",
        "MessageRejected",
    )


def test_sns_publishes_an_sms_the_emulator_records(aws: AwsEmulator) -> None:
    provider = SnsProvider(ProviderSettings(sns_base_url=aws.endpoint))
    phone = f"+1415555{uuid.uuid4().int % 10000:04d}"
    receipt = provider.send(outgoing("sms", "sns", {"to": phone, "body": "Your code is 987654"}))
    sent = {m["id"]: m for m in aws.sms()}
    assert receipt.provider_message_id in sent
    assert (sent[receipt.provider_message_id]["phone"], sent[receipt.provider_message_id]["message"]) == (
        phone,
        "Your code is 987654",
    )
    if aws.kind == "localstack":  # moto does not keep message attributes
        assert sent[receipt.provider_message_id]["attributes"]["AWS.SNS.SMS.SMSType"] == "Transactional"


def test_an_unreachable_endpoint_is_a_transient_provider_fault() -> None:
    provider = SnsProvider(
        ProviderSettings(sns_base_url="http://127.0.0.1:9", provider_connect_timeout_seconds=1)
    )
    with pytest.raises(TransientProviderError) as raised:
        provider.send(outgoing("sms", "sns", {"to": "+14155550100", "body": "hi"}))
    assert (raised.value.code, raised.value.fault, raised.value.ambiguous) == (
        "connection",
        "provider",
        False,
    )
