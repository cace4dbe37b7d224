"""notify_core.aws against the local AWS endpoint (LocalStack, or moto's server) and a server that
drops kept-alive connections, as one does while a Lambda container is frozen."""

from __future__ import annotations

import json
import socketserver
import threading
import uuid
from collections.abc import Iterator

import boto3
import pytest

from notify_core import aws

from .conftest import ServiceEnv


def test_secrets_and_sqs_calls_against_the_local_endpoint(test_env: ServiceEnv) -> None:
    # Given a secret made with boto3
    secrets = boto3.client("secretsmanager", endpoint_url=test_env.sqs_endpoint, region_name="us-east-1")
    arn = secrets.create_secret(Name=f"aws-client-{uuid.uuid4().hex[:8]}", SecretString='{"k": "v"}')["ARN"]
    try:
        client = aws.client("secretsmanager", test_env.sqs_endpoint)
        # When it is read with notify_core.aws
        reply = client.get_secret_value(SecretId=arn)
        # Then the reply is boto3's, and a missing secret is a service error with AWS's code
        assert json.loads(reply["SecretString"]) == {"k": "v"} and reply["ARN"] == arn
        with pytest.raises(aws.AwsServiceError) as caught:
            client.get_secret_value(SecretId=arn + "-missing")
        assert caught.value.code == "ResourceNotFoundException"
    finally:
        secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)

    # And SQS calls work on the same endpoint
    sqs = aws.client("sqs", test_env.sqs_endpoint)
    sent = sqs.send_message_batch(
        QueueUrl=test_env.dlq_url, Entries=[{"Id": "a", "MessageBody": "{}", "DelaySeconds": 0}]
    )
    assert [s["Id"] for s in sent["Successful"]] == ["a"]
    attributes = sqs.get_queue_attributes(QueueUrl=test_env.dlq_url, AttributeNames=["QueueArn"])
    assert attributes["Attributes"]["QueueArn"].endswith("-notifications-dlq")
    got = test_env.sqs.receive_message(QueueUrl=test_env.dlq_url, WaitTimeSeconds=1)["Messages"]
    test_env.sqs.delete_message(QueueUrl=test_env.dlq_url, ReceiptHandle=got[0]["ReceiptHandle"])


class _OneReplyPerConnection(socketserver.StreamRequestHandler):
    """Answers one request per connection and closes it without saying so (no Connection: close)."""

    def handle(self) -> None:
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        self.rfile.read(length)
        body = b'{"Attributes": {}}'
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        self.server.connections += 1  # type: ignore[attr-defined]


@pytest.fixture
def dropping_server() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _OneReplyPerConnection)
    server.connections = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_dropped_kept_alive_connection_is_reopened(dropping_server: str) -> None:
    # Given a client whose kept-alive connection the server has closed
    client = aws.client("sqs", dropping_server, max_attempts=1)
    assert client.get_queue_attributes(QueueUrl="q") == {"Attributes": {}}
    # When it calls again (no retries allowed)
    # Then the call succeeds on a new connection
    assert client.get_queue_attributes(QueueUrl="q") == {"Attributes": {}}
