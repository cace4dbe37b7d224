"""The local runtime against a real SQS API (LocalStack or moto's server), pinned to what Lambda,
API Gateway and EventBridge do.

A tiny stack (tests/fixtures/runtime/template.yaml: toy handlers, 2 s visibility timeouts,
maxReceiveCount 2) runs in one Runtime for the module; every SQS scenario's messages are sent at
the start so that their waits overlap. Then the real ApiFunction is served over HTTP from the
worker's sandbox (template.yaml, a migrated database).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from notify_local.invoker import Invocation
from notify_local.runtime import Runtime
from notify_local.sandbox import Sandbox
from notify_local.stack import ROOT, Stack

from .conftest import Tenant

FIXTURE = ROOT / "tests" / "fixtures" / "runtime" / "template.yaml"
VISIBILITY_TIMEOUT = 2.0  # the fixture's queues
MAX_RECEIVE_COUNT = 2


@dataclass
class Toy:
    runtime: Runtime
    stack: Stack
    sqs: Any
    calls: list[Invocation]
    sent: dict[str, dict[str, str]]  # queue logical id -> body -> message id

    def calls_of(self, function: str) -> list[Invocation]:
        return [c for c in list(self.calls) if c.function == function]

    def deliveries(self, function: str) -> dict[str, list[tuple[int, float, bool]]]:
        """body -> [(ApproximateReceiveCount, when, deleted)] in the order they were handled."""
        out: dict[str, list[tuple[int, float, bool]]] = {}
        for call in self.calls_of(function):
            for record in call.event["Records"]:
                out.setdefault(record["body"], []).append(
                    (
                        int(record["attributes"]["ApproximateReceiveCount"]),
                        call.outcome.started_at,
                        record["messageId"] in call.deleted,
                    )
                )
        return out

    def url(self, logical_id: str) -> str:
        return self.stack.queues[logical_id].url


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def queue_is_empty(toy: Toy, logical_id: str) -> bool:
    attributes = toy.sqs.get_queue_attributes(QueueUrl=toy.url(logical_id), AttributeNames=["All"])[
        "Attributes"
    ]
    counts = (
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    )
    return all(attributes[name] == "0" for name in counts)


def drain_bodies(sqs: Any, queue_url: str, expected: int, timeout: float) -> list[str]:
    bodies: list[str] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < expected and time.monotonic() < deadline:
        reply = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in reply.get("Messages", []):
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return sorted(bodies)


def send(sqs: Any, url: str, bodies: list[str], **attributes: Any) -> dict[str, str]:
    reply = sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": str(i), "MessageBody": body, **attributes} for i, body in enumerate(bodies)],
    )
    ids = {entry["Id"]: entry["MessageId"] for entry in reply["Successful"]}
    return {body: ids[str(i)] for i, body in enumerate(bodies)}


@pytest.fixture(scope="module")
def toy() -> Iterator[Toy]:
    endpoint = os.environ.get("NOTIFY_TEST_SQS")
    if not endpoint:
        pytest.fail("integration services were not started (see tests/conftest.py)")
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
    name = f"rt-{os.environ['NOTIFY_TEST_RUN']}-{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}"
    stack = Stack.load(name, {"MaxReceiveCount": str(MAX_RECEIVE_COUNT)}, FIXTURE)
    stack.create_queues(sqs)
    calls: list[Invocation] = []
    runtime = Runtime(
        stack,
        sqs,
        port=0,
        template_dir=FIXTURE.parent,
        schedule_speedup=60,
        poll_wait=1,
        observers=[calls.append],
    )
    runtime.start()
    sent = {
        "WorkQueue": send(
            sqs,
            stack.queues["WorkQueue"].url,
            ["ok-1", "fail-1", "ok-2", "fail-2", "ok-3"],
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "toy"}},
        ),
        "BoomQueue": send(sqs, stack.queues["BoomQueue"].url, ["boom", "fine"]),
        "PlainQueue": send(sqs, stack.queues["PlainQueue"].url, ["fail-but-ignored", "ok-plain"]),
        "BatchQueue": send(sqs, stack.queues["BatchQueue"].url, [f"b{i}" for i in range(7)]),
    }
    try:
        yield Toy(runtime, stack, sqs, calls, sent)
    finally:
        runtime.stop()
        stack.delete_queues(sqs)


# --------------------------------------------------------------------------- SQS event sources


def test_partial_batch_failures_redelivery_and_redrive(toy: Toy) -> None:
    # Given five messages on a queue whose consumer reports bodies "fail-*" as batch item failures
    # When SQS has redriven both failures to the dead-letter queue
    dead = drain_bodies(toy.sqs, toy.url("WorkDLQ"), expected=2, timeout=20)

    # Then exactly the failed messages were redriven
    assert dead == ["fail-1", "fail-2"]
    deliveries = toy.deliveries("PartialFunction")
    # the successful ones were handled once and deleted
    for body in ("ok-1", "ok-2", "ok-3"):
        assert [(count, deleted) for count, _, deleted in deliveries[body]] == [(1, True)], deliveries[body]
    # the failed ones were never deleted, came back after the visibility timeout with the receive
    # count incremented, maxReceiveCount times, before SQS moved them
    for body in ("fail-1", "fail-2"):
        seen = deliveries[body]
        assert [(count, deleted) for count, _, deleted in seen] == [(1, False), (2, False)], seen
        assert seen[1][1] - seen[0][1] >= VISIBILITY_TIMEOUT - 0.5, seen
    # and the queue is empty
    attributes = toy.sqs.get_queue_attributes(QueueUrl=toy.url("WorkQueue"), AttributeNames=["All"])[
        "Attributes"
    ]
    assert (
        attributes["ApproximateNumberOfMessages"] == "0"
        and attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    )


def test_sqs_records_have_lambdas_shape(toy: Toy) -> None:
    wait_for(lambda: toy.calls_of("PartialFunction"), 10, "a PartialFunction batch")
    record = toy.calls_of("PartialFunction")[0].event["Records"][0]
    queue = toy.stack.queues["WorkQueue"]
    assert set(record) == {
        "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
        "eventSource", "eventSourceARN", "awsRegion",
    }  # fmt: skip
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == queue.arn
    assert record["awsRegion"] == "us-east-1"
    assert record["messageId"] == toy.sent["WorkQueue"][record["body"]]
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    for name in ("ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"):
        assert record["attributes"][name], name
    assert record["messageAttributes"]["kind"]["stringValue"] == "toy"
    assert record["messageAttributes"]["kind"]["dataType"] == "String"


def test_a_handler_that_raises_deletes_nothing(toy: Toy) -> None:
    # Given "boom" (the handler raises on it) and "fine", sent together
    # When SQS has redriven "boom" after maxReceiveCount failed invocations
    dead = drain_bodies(toy.sqs, toy.url("BoomDLQ"), expected=1, timeout=20)
    assert "boom" in dead
    # Then no invocation that raised deleted anything, and every message of such a batch came
    # back (or was redriven)
    deliveries = toy.deliveries("BoomFunction")
    raised = [c for c in toy.calls_of("BoomFunction") if not c.outcome.ok]
    assert len(raised) == MAX_RECEIVE_COUNT
    for call in raised:
        assert call.deleted == [] and len(call.failed) == len(call.event["Records"])
    assert [(count, deleted) for count, _, deleted in deliveries["boom"]] == [(1, False), (2, False)]
    # "fine" is deleted when handled without "boom" in its batch; sharing boom's batches every time,
    # it is redriven too: exactly one of the two happened
    deleted = deliveries["fine"][-1][2]
    redriven = "fine" in dead or (
        not deleted and drain_bodies(toy.sqs, toy.url("BoomDLQ"), expected=1, timeout=10) == ["fine"]
    )
    assert deleted != redriven, deliveries["fine"]


def test_without_report_batch_item_failures_a_returned_list_is_ignored(toy: Toy) -> None:
    # Given a consumer without ReportBatchItemFailures that lists every record as failed
    wait_for(lambda: len(toy.deliveries("PlainFunction")) == 2, 10, "both plain messages")
    # Then both were deleted on their first delivery: the queue holds nothing, visible or in flight,
    # so neither can come back
    wait_for(lambda: queue_is_empty(toy, "PlainQueue"), 10, "PlainQueue to be empty")
    deliveries = toy.deliveries("PlainFunction")
    assert {body: [(c, d) for c, _, d in seen] for body, seen in deliveries.items()} == {
        "fail-but-ignored": [(1, True)],
        "ok-plain": [(1, True)],
    }


def test_batch_size_is_respected(toy: Toy) -> None:
    # Given 7 messages on a queue read with BatchSize 3 (and a 1 s batching window)
    wait_for(
        lambda: sum(len(c.event["Records"]) for c in toy.calls_of("BatchFunction")) >= 7, 15, "7 records"
    )
    sizes = [len(c.event["Records"]) for c in toy.calls_of("BatchFunction")]
    # Then no batch is larger than 3, every message came exactly once, and the window gathered
    assert max(sizes) <= 3 and sum(sizes) == 7, sizes
    assert max(sizes) > 1, sizes
    assert all(c.failed == [] for c in toy.calls_of("BatchFunction"))


# --------------------------------------------------------------------------- schedules


def test_rate_schedule_fires_with_the_scheduled_event(toy: Toy) -> None:
    # Given rate(1 minute) run 60 times faster: every second
    def ticks() -> list[Invocation]:
        return [c for c in list(toy.calls) if c.source == "TickFunction/EveryMinute"]

    fired = wait_for(lambda: ticks() if len(ticks()) >= 2 else None, 10, "two firings")
    event = fired[0].event
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.events"
    assert event["version"] == "0" and event["account"] == "000000000000" and event["region"] == "us-east-1"
    assert event["resources"] == [
        f"arn:aws:events:us-east-1:000000000000:rule/{toy.stack.name}-TickFunctionEveryMinute"
    ]
    assert event["detail"] == {} and event["time"].endswith("Z")
    assert fired[1].outcome.started_at - fired[0].outcome.started_at >= 0.5
    assert fired[0].outcome.result["function"] == "TickFunction"
    # the disabled one never fires by itself
    assert not [c for c in toy.calls if c.source == "TickFunction/Nightly"]


def test_a_schedule_can_be_fired_now_over_http(toy: Toy) -> None:
    request = urllib.request.Request(
        f"{toy.runtime.url}/_local/schedules/TickFunction/WithInput", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.loads(reply.read())
    (invocation,) = body["invocations"]
    assert invocation["event"] == {"job": "nightly-report"}  # the Input, and nothing else
    assert invocation["result"]["received"] == {"job": "nightly-report"} and invocation["error"] is None


# --------------------------------------------------------------------------- the real API over HTTP


@dataclass
class Http:
    status: int
    headers: dict[str, str]
    body: Any


def http(base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Http:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            raw, status, reply_headers = reply.read(), reply.status, dict(reply.headers)
    except urllib.error.HTTPError as error:
        raw, status, reply_headers = error.read(), error.code, dict(error.headers)
    return Http(status, reply_headers, json.loads(raw) if raw else None)


@pytest.fixture(scope="module")
def api_runtime(test_env: Sandbox) -> Iterator[Runtime]:
    # Only the API: the worker's queues belong to the other integration tests
    runtime = Runtime(test_env.stack, test_env.sqs, port=0, kinds=("api",), functions={"ApiFunction"})
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop()


def test_real_api_function_over_http(api_runtime: Runtime, tenant: Tenant) -> None:
    base = api_runtime.url
    # Given the real ApiFunction behind the runtime's HTTP server
    health = http(base, "GET", "/health")
    assert health.status == 200 and health.body["status"] == "ok"

    # When a user is created and read back by id, then the path parameter reached the handler
    key = {"X-Api-Key": tenant.key}
    created = http(base, "POST", "/api/v1/users", {"email": "runtime@example.com"}, key)
    assert created.status == 201, created.body
    read = http(base, "GET", f"/api/v1/users/{created.body['id']}", headers=key)
    assert read.status == 200 and read.body["id"] == created.body["id"]

    # And what API Gateway answers itself (template.yaml's GatewayResponses): unknown path, known
    # path with a wrong method: the contract's 404 envelope, not {"message": "Missing Authentication Token"}
    for method, path in (("GET", "/no/such/route"), ("DELETE", "/health"), ("PUT", "/api/v1/users")):
        missing = http(base, method, path)
        assert missing.status == 404, (method, path, missing.body)
        assert missing.body == {
            "error": {"code": "not_found", "message": "no route for this method and path", "details": []}
        }
        assert missing.headers.get("x-amzn-ErrorType") == "MissingAuthenticationTokenException"
        assert missing.headers.get("X-Content-Type-Options") == "nosniff"
    # without a key, the function's own 401
    assert http(base, "GET", "/api/v1/notifications").status == 401
    # a body over API Gateway's 10 MB limit never reaches the function
    too_large = http(base, "POST", "/api/v1/users", {"username": "x" * (10 * 1024 * 1024)}, key)
    assert too_large.status == 413 and too_large.body["error"]["code"] == "payload_too_large"


def test_a_burst_of_200_connections_is_queued_not_reset(test_env: Sandbox) -> None:
    # Given the runtime's server, listening but not yet accepting, and 200 clients connecting at once
    runtime = Runtime(test_env.stack, test_env.sqs, port=0, kinds=("api",), functions={"ApiFunction"})
    clients: list[socket.socket] = []
    try:
        for _ in range(200):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.settimeout(10)
            clients.append(client)
            # completes in the kernel's accept queue, whose length is the listen backlog
            client.connect(("127.0.0.1", runtime.gateway.port))
        runtime.start()
        # When each sends a request
        for client in clients:
            client.sendall(b"GET /no/such/route HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
        # Then every one of them gets API Gateway's reply; none is reset or left unanswered
        statuses = []
        for client in clients:
            reply = b""
            while chunk := client.recv(65536):
                reply += chunk
            statuses.append(reply.split(b"\r\n", 1)[0])
        assert statuses == [b"HTTP/1.1 404 Not Found"] * 200
    finally:
        for client in clients:
            client.close()
        runtime.stop()


# --------------------------------------------------------------------------- the command


def start_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str, list[str]]:
    """Start notify-local; return (process, url, api key, stderr lines so far) once it is ready."""
    process = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "notify-local"), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    url = key = ""
    for line in process.stderr:
        lines.append(line)
        if "ready in" in line:
            url = line.rsplit(" ", 1)[-1].strip()
        if line.strip().startswith("API key"):
            key = line.split()[2]
        if line.strip().startswith("Ctrl-C stops everything"):
            break
        assert time.monotonic() < deadline, "".join(lines)
    assert url and key, "".join(lines)
    # keep reading, so that a full pipe never blocks its logging
    threading.Thread(target=lambda: lines.extend(process.stderr or []), daemon=True).start()
    return process, url, key, lines


def test_notify_local_starts_keeps_its_key_and_stops_on_ctrl_c(test_env: Sandbox, tmp_path: Any) -> None:
    name = f"cli-{os.environ['NOTIFY_TEST_RUN']}-{os.environ.get('PYTEST_XDIST_WORKER', 'gw')}"
    args = [
        "--port", "0", "--stack-name", name, "--state-dir", str(tmp_path / "state"),
        "--env-file", str(tmp_path / "none.env"), "--env-json", str(tmp_path / "env.json"),
        "--disable", "schedule", "--poll-wait", "1",
        "-p", f"DatabaseUrl={test_env.database_url}", "-p", f"RedisUrl={test_env.redis_url}",
    ]  # fmt: skip
    env = {**os.environ, "AWS_ENDPOINT_URL": test_env.sqs_endpoint}
    try:
        # Given a first start: it answers, with a new development key
        process, url, key, lines = start_cli(args, env)
        try:
            assert http(url, "GET", "/health").status == 200
            assert http(url, "GET", "/api/v1/notifications", headers={"X-Api-Key": key}).status == 200
            assert any("new, kept in" in line for line in lines)
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 0
        # and env.json, in `sam local --env-vars` shape
        written = json.loads((tmp_path / "env.json").read_text())
        assert written["ApiFunction"]["AWS_ENDPOINT_URL"] == test_env.sqs_endpoint
        assert written["SenderFunction"]["NOTIFICATIONS_QUEUE_URL"].endswith(f"{name}-notifications")

        # When it starts again, then the same key still works
        process, url, again, lines = start_cli(args, env)
        try:
            assert again == key and not any("new, kept in" in line for line in lines)
            assert http(url, "GET", "/api/v1/notifications", headers={"X-Api-Key": key}).status == 200
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(15) == 0
    finally:
        sqs = test_env.sqs
        for suffix in ("notifications", "notifications-dlq"):
            url = sqs.get_queue_url(QueueName=f"{name}-{suffix}")["QueueUrl"]
            sqs.delete_queue(QueueUrl=url)
