"""notify_core.aws: SigV4 as botocore signs, boto3-shaped calls, errors, retries, endpoints."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from notify_core import aws

NOW = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)


def _botocore_authorization(
    url: str, headers: dict[str, str], body: bytes, token: str | None, service: str, region: str
) -> str:
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    signer = botocore.auth.SigV4Auth(Credentials("AKIDEXAMPLE", "secret/key+", token), service, region)
    module: Any = botocore.auth  # its clock, frozen for the comparison
    original = module.get_current_datetime
    module.get_current_datetime = lambda: NOW.replace(tzinfo=None)
    try:
        signer.add_auth(request)
    finally:
        module.get_current_datetime = original
    return str(request.headers["Authorization"])


@pytest.mark.parametrize("token", [None, "session-token"])
@pytest.mark.parametrize(
    ("url", "service", "region"),
    [
        ("https://sqs.eu-west-1.amazonaws.com/", "sqs", "eu-west-1"),
        ("http://127.0.0.1:4566/", "secretsmanager", "us-east-1"),
    ],
)
def test_signature_is_the_one_botocore_computes(
    url: str, service: str, region: str, token: str | None
) -> None:
    # Given a JSON-protocol request
    headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AmazonSQS.SendMessageBatch"}
    body = json.dumps({"QueueUrl": "https://q", "Entries": [{"Id": "0", "MessageBody": "{}"}]}).encode()
    # When both sign it at the same instant
    ours = aws.sign(
        "POST", url, headers, body, aws.Credentials("AKIDEXAMPLE", "secret/key+", token), region, service, NOW
    )
    # Then the signatures are the same
    assert ours["Authorization"] == _botocore_authorization(url, headers, body, token, service, region)
    assert ours["X-Amz-Date"] == "20261125T100000Z"
    assert ("X-Amz-Security-Token" in ours) == (token is not None)


class FakeWire:
    """Stands in for the HTTP exchange: a list of (status, headers, body) replies, in order."""

    def __init__(self, *replies: tuple[int, dict[str, str], Any] | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    def __call__(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((headers, json.loads(body)))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        status, reply_headers, payload = reply
        return (
            status,
            reply_headers,
            json.dumps(payload).encode() if not isinstance(payload, bytes) else payload,
        )


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> aws.AwsClient:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SQS", raising=False)
    monkeypatch.setattr(aws.AwsClient, "_pause", staticmethod(lambda attempt: None))
    return aws.client("sqs", max_attempts=3)


def test_calls_are_boto3_shaped(sqs: aws.AwsClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given SQS answering a SendMessageBatch
    wire = FakeWire((200, {}, {"Successful": [{"Id": "0"}], "Failed": []}))
    monkeypatch.setattr(sqs, "_send", wire)
    # When the snake_case method is called with boto3's arguments
    reply = sqs.send_message_batch(QueueUrl="https://q", Entries=[{"Id": "0", "MessageBody": "{}"}])
    # Then the action, protocol and body are SQS's JSON protocol, and the reply is the JSON as is
    headers, body = wire.requests[0]
    assert headers["X-Amz-Target"] == "AmazonSQS.SendMessageBatch"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert body == {"QueueUrl": "https://q", "Entries": [{"Id": "0", "MessageBody": "{}"}]}
    assert reply == {"Successful": [{"Id": "0"}], "Failed": []}
    assert sqs.endpoint == "https://sqs.eu-west-1.amazonaws.com"


def test_throttling_and_5xx_are_retried_then_succeed(
    sqs: aws.AwsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = FakeWire(
        (400, {}, {"__type": "com.amazonaws.sqs#ThrottlingException", "message": "slow down"}),
        (503, {}, b""),
        (200, {}, {"Attributes": {}}),
    )
    monkeypatch.setattr(sqs, "_send", wire)
    assert sqs.get_queue_attributes(QueueUrl="https://q") == {"Attributes": {}}
    assert len(wire.requests) == 3


def test_client_errors_carry_the_code_and_are_not_retried(
    sqs: aws.AwsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SQS saying the queue does not exist (query-compatible code in the header)
    wire = FakeWire(
        (
            400,
            {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"},
            {"__type": "com.amazonaws.sqs#QueueDoesNotExist", "message": "no such queue"},
        )
    )
    monkeypatch.setattr(sqs, "_send", wire)
    with pytest.raises(aws.AwsServiceError) as caught:
        sqs.send_message_batch(QueueUrl="https://q", Entries=[])
    assert caught.value.code == "AWS.SimpleQueueService.NonExistentQueue"
    assert caught.value.status == 400
    assert caught.value.response["Error"]["Code"] == caught.value.code
    assert len(wire.requests) == 1


def test_transport_errors_are_retried_up_to_max_attempts(
    sqs: aws.AwsClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    wire = FakeWire(*(aws.AwsTransportError("refused") for _ in range(3)))
    monkeypatch.setattr(sqs, "_send", wire)
    with pytest.raises(aws.AwsTransportError):
        sqs.send_message_batch(QueueUrl="https://q", Entries=[])
    assert len(wire.requests) == 3


def test_secrets_manager_error_code_from_the_json_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = aws.client("secretsmanager")
    wire = FakeWire((400, {}, {"__type": "ResourceNotFoundException", "Message": "not found"}))
    monkeypatch.setattr(client, "_send", wire)
    with pytest.raises(aws.AwsServiceError) as caught:
        client.get_secret_value(SecretId="arn")
    assert caught.value.code == "ResourceNotFoundException"
    headers, _ = wire.requests[0]
    assert headers["X-Amz-Target"] == "secretsmanager.GetSecretValue"
    assert headers["Content-Type"] == "application/x-amz-json-1.1"


def test_endpoints_follow_boto3s_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "cn-north-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", raising=False)
    assert aws.client("secretsmanager").endpoint == "https://secretsmanager.cn-north-1.amazonaws.com.cn"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/")
    assert aws.client("secretsmanager").endpoint == "http://127.0.0.1:4566"
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:9999")
    assert aws.client("secretsmanager").endpoint == "http://127.0.0.1:9999"
    assert aws.client("secretsmanager", "http://127.0.0.1:1").endpoint == "http://127.0.0.1:1"


def test_no_region_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(aws.AwsTransportError, match="region"):
        aws.client("sqs")
