"""Provider routes end to end: a tenant's configs over HTTP, the sender's real SDKs against the
provider stub (SendGrid, Twilio) and the local AWS emulator (SES, SNS), the outcome in PostgreSQL.
A provider's fault moves the next attempt to the next config; a recipient's never does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from notify_local.provider_stub import (
    STUB_SENDGRID_API_KEY,
    STUB_TWILIO_FROM,
    STUB_TWILIO_SID,
    STUB_TWILIO_TOKEN,
)

from .conftest import Api, AwsEmulator, Pipeline, create

pytestmark = pytest.mark.integration


@pytest.fixture
def routed(pipeline: Pipeline, aws: AwsEmulator, settings_env: Any) -> Pipeline:
    settings_env(**aws.env())
    return pipeline


def configure(api: Api, aws: AwsEmulator) -> dict[str, str]:
    """email: SendGrid first, then SES; sms: Twilio first, then SNS."""
    sender = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    aws.verify(sender)
    bodies = [
        {
            "channel": "email",
            "provider": "sendgrid",
            "priority": 1,
            "credentials": {"api_key": STUB_SENDGRID_API_KEY},
            "settings": {"default_from": sender},
        },
        {"channel": "email", "provider": "ses", "priority": 2, "settings": {"default_from": sender}},
        {
            "channel": "sms",
            "provider": "twilio",
            "priority": 1,
            "credentials": {"account_sid": STUB_TWILIO_SID, "auth_token": STUB_TWILIO_TOKEN},
            "settings": {"from_number": STUB_TWILIO_FROM},
        },
        {"channel": "sms", "provider": "sns", "priority": 2},
    ]
    ids: dict[str, str] = {}
    for body in bodies:
        reply = api("POST", "/api/v1/provider-configs", body)
        assert reply.status == 201, reply.raw
        ids[str(body["provider"])] = reply.json["id"]
    return ids


def email(to: str) -> dict[str, str]:
    return {"to": to, "subject": "Your code", "body": "It is 123456."}


def test_a_sendgrid_outage_sends_through_ses(api: Api, routed: Pipeline, aws: AwsEmulator) -> None:
    ids = configure(api, aws)
    routed.stub.configure("sendgrid", fail_rate=1.0, failure="5xx")
    to = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    nid = create(api, "email", email(to))
    routed.drain_sender()
    row = routed.row(nid)
    assert (row["status"], row["provider"]) == ("sent", "ses")
    assert [
        (a["provider"], a["outcome"], a["fault"], str(a["provider_config_id"])) for a in row["attempts"]
    ] == [
        ("sendgrid", "transient_error", "provider", ids["sendgrid"]),
        ("ses", "sent", None, ids["ses"]),
    ]
    assert row["provider_message_id"] in {m["id"] for m in aws.emails() if m["to"] == [to]}
    # the API shows the same
    attempts = api("GET", f"/api/v1/notifications/{nid}/attempts").json["data"]
    assert [(a["provider"], a["provider_config_id"]) for a in attempts] == [
        ("sendgrid", ids["sendgrid"]),
        ("ses", ids["ses"]),
    ]
    assert api("GET", f"/api/v1/notifications/{nid}").json["provider"] == "ses"


def test_rejected_credentials_fail_over_too(api: Api, routed: Pipeline, aws: AwsEmulator) -> None:
    configure(api, aws)
    routed.stub.configure("sendgrid", fail_rate=1.0, failure="auth")
    nid = create(api, "email", email("grace@example.com"))
    routed.drain_sender()
    row = routed.row(nid)
    assert row["status"] == "sent" and [a["outcome"] for a in row["attempts"]] == ["permanent_error", "sent"]
    assert row["attempts"][0]["error_code"] == "auth"


def test_a_recipient_error_does_not_fail_over(api: Api, routed: Pipeline, aws: AwsEmulator) -> None:
    configure(api, aws)
    routed.stub.configure("sendgrid", fail_rate=1.0, failure="permanent")
    to = f"bounce-{uuid.uuid4().hex[:8]}@example.com"
    nid = create(api, "email", email(to))
    routed.drain_sender()
    row = routed.row(nid)
    assert row["status"] == "failed" and len(row["dead_letters"]) == 1
    assert [(a["provider"], a["fault"]) for a in row["attempts"]] == [("sendgrid", "recipient")]
    assert not [m for m in aws.emails() if m["to"] == [to]]


def test_a_twilio_outage_sends_through_sns(api: Api, routed: Pipeline, aws: AwsEmulator) -> None:
    configure(api, aws)
    routed.stub.configure("twilio", fail_rate=1.0, failure="5xx")
    phone = f"+1415556{uuid.uuid4().int % 10000:04d}"
    nid = create(api, "sms", {"to": phone, "body": "Your code is 42"})
    routed.drain_sender()
    row = routed.row(nid)
    assert (row["status"], row["provider"]) == ("sent", "sns")
    assert row["provider_message_id"] in {m["id"] for m in aws.sms() if m["phone"] == phone}


def test_without_configs_the_deployments_provider_sends_as_before(api: Api, routed: Pipeline) -> None:
    nid = create(api, "email", email("ada@example.com"))
    routed.drain_sender()
    row = routed.row(nid)
    assert (row["status"], row["provider"]) == ("sent", "sendgrid")
    assert row["attempts"][0]["provider_config_id"] is None
    # and the deployment's key, not a tenant's, went out
    assert routed.stub.requests("sendgrid")[-1].bearer == STUB_SENDGRID_API_KEY


def test_an_inactive_config_is_not_routed_to(api: Api, routed: Pipeline, aws: AwsEmulator) -> None:
    ids = configure(api, aws)
    assert api("PATCH", f"/api/v1/provider-configs/{ids['sendgrid']}", {"active": False}).status == 200
    nid = create(api, "email", email("ada@example.com"))
    routed.drain_sender()
    assert routed.row(nid)["provider"] == "ses"
    assert routed.stub.requests("sendgrid") == []
