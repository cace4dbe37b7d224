"""The local runtime's pure parts: schedule expressions, route matching, event and reply shapes,
the event source mapping's delete decision and batching, template discovery. No network."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notify_local.cli import merge_environments
from notify_local.http_gateway import (
    GATEWAY_ERRORS,
    LISTEN_BACKLOG,
    HttpGateway,
    Route,
    Router,
    match_path,
    parse_gateway_responses,
    parse_path_template,
    proxy_reply,
    render_gateway_response,
)
from notify_local.invoker import FunctionSpec, FunctionTimeout, Invoker, InvokeResult
from notify_local.overrides import OverridesError, classify, parse_pairs
from notify_local.pollers import SqsPoller, SqsSource, build_event, decide
from notify_local.runtime import Runtime, TemplateError, discover
from notify_local.schedules import (
    Cron,
    Rate,
    ScheduleError,
    parse_expression,
    schedule_spec,
    scheduled_event,
)
from notify_local.stack import ROOT, Queue, Stack

FIXTURE = ROOT / "tests" / "fixtures" / "runtime" / "template.yaml"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --------------------------------------------------------------------------- rate()


def test_rate_expressions_follow_aws_rules() -> None:
    assert parse_expression("rate(1 minute)") == Rate("rate(1 minute)", 60)
    assert parse_expression("rate(5 minutes)") == Rate("rate(5 minutes)", 300)
    assert parse_expression("rate(2 hours)") == Rate("rate(2 hours)", 7200)
    assert parse_expression("rate(1 day)") == Rate("rate(1 day)", 86400)
    for bad in (
        "rate(1 minutes)",
        "rate(5 minute)",
        "rate(0 minutes)",
        "rate(5 seconds)",
        "rate(-1 minute)",
        "rate()",
    ):
        with pytest.raises(ScheduleError):
            parse_expression(bad)


def test_rate_fires_one_period_after_creation_then_every_period() -> None:
    rate = Rate("rate(5 minutes)", 300)
    anchor = at("2026-11-24T10:00:00")
    assert rate.next_after(anchor, anchor) == at("2026-11-24T10:05:00")
    assert rate.next_after(at("2026-11-24T10:05:00"), anchor) == at("2026-11-24T10:10:00")
    assert rate.next_after(at("2026-11-24T10:07:30"), anchor) == at("2026-11-24T10:10:00")
    # a speed-up of 60 turns minutes into seconds
    assert rate.next_after(anchor, anchor, speedup=60) == anchor + timedelta(seconds=5)


# --------------------------------------------------------------------------- cron()


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("cron(0 3 * * ? *)", "2026-11-24T08:30:00", "2026-11-25T03:00:00"),
        ("cron(0 3 * * ? *)", "2026-11-25T03:00:00", "2026-11-26T03:00:00"),  # strictly after
        ("cron(0 3 * * ? *)", "2026-11-25T02:59:59", "2026-11-25T03:00:00"),
        ("cron(0/15 * ? * MON-FRI *)", "2026-11-24T08:31:00", "2026-11-24T08:45:00"),
        ("cron(0/15 * ? * MON-FRI *)", "2026-11-27T23:50:00", "2026-11-30T00:00:00"),  # Fri -> Mon
        ("cron(*/20 9-17 ? * 2-6 *)", "2026-11-24T17:41:00", "2026-11-25T09:00:00"),
        ("cron(15,45 22-2 * * ? *)", "2026-11-24T23:50:00", "2026-11-25T00:15:00"),  # wrapping hours
        ("cron(0 9 ? * FRI-MON *)", "2026-11-24T10:00:00", "2026-11-27T09:00:00"),  # wrapping days
        ("cron(0 0 1 JAN-MAR ? *)", "2026-11-24T00:00:00", "2027-01-01T00:00:00"),
        ("cron(0 12 L * ? *)", "2028-02-10T00:00:00", "2028-02-29T12:00:00"),  # leap year
        ("cron(0 12 L * ? *)", "2027-02-10T00:00:00", "2027-02-28T12:00:00"),
        ("cron(0 8 LW * ? *)", "2027-01-05T00:00:00", "2027-01-29T08:00:00"),  # Jan 31 is a Sunday
        ("cron(0 8 1W * ? *)", "2026-07-20T00:00:00", "2026-08-03T08:00:00"),  # Aug 1 is a Saturday
        ("cron(0 8 15W * ? *)", "2026-11-01T00:00:00", "2026-11-16T08:00:00"),  # the 15th is a Sunday
        ("cron(0 9 ? * 2#1 *)", "2026-11-24T00:00:00", "2026-12-07T09:00:00"),  # first Monday
        ("cron(0 9 ? * 6L *)", "2026-11-01T00:00:00", "2026-11-27T09:00:00"),  # last Friday
        ("cron(0 10 29 2 ? *)", "2026-03-01T00:00:00", "2028-02-29T10:00:00"),
        ("cron(30 6 1 1 ? 2030)", "2026-11-24T00:00:00", "2030-01-01T06:30:00"),
    ],
)
def test_cron_next_firing(expression: str, now: str, expected: str) -> None:
    cron = parse_expression(expression)
    assert isinstance(cron, Cron)
    assert cron.next_after(at(now)) == at(expected)


def test_cron_that_never_fires_again_gives_none() -> None:
    cron = parse_expression("cron(0 0 1 1 ? 2020)")
    assert isinstance(cron, Cron)
    assert cron.next_after(at("2026-11-24T00:00:00")) is None


def test_cron_in_a_time_zone() -> None:
    # Given a ScheduleV2 cron at 04:30 Paris time (UTC+1 in November, UTC+2 in July)
    spec = schedule_spec(
        "s",
        "Fn",
        "Ev",
        "ScheduleV2",
        {"ScheduleExpression": "cron(30 4 ? * MON-FRI *)", "ScheduleExpressionTimezone": "Europe/Paris"},
    )
    anchor = at("2026-01-01T00:00:00")
    assert spec.next_after(at("2026-11-24T00:00:00"), anchor) == at("2026-11-24T03:30:00")
    assert spec.next_after(at("2026-07-14T00:00:00"), anchor) == at("2026-07-14T02:30:00")


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("cron(0 3 * * *)", "6 fields"),
        ("cron(0 3 * * * *)", "exactly one of day-of-month and day-of-week"),
        ("cron(0 3 ? * ? *)", "exactly one of day-of-month and day-of-week"),
        ("cron(? 3 * * ? *)", "only allowed in day-of-month and day-of-week"),
        ("cron(0 L * * ? *)", "L, W and # are only allowed"),
        ("cron(60 3 * * ? *)", "outside 0-59"),
        ("cron(0 24 * * ? *)", "outside 0-23"),
        ("cron(0 3 32 * ? *)", "outside 1-31"),
        ("cron(0 3 * 13 ? *)", "outside 1-12"),
        ("cron(0 3 ? * 8 *)", "outside 1-7"),
        ("cron(0 3 * * ? 1969)", "outside 1970-2199"),
        ("cron(0/0 3 * * ? *)", "step"),
        ("cron(0 3 * FOO ? *)", "not a valid month"),
        ("cron(0 3 1,L * ? *)", "cannot be combined"),
        ("cron(0 3 ? * 2#6 *)", "occurrence 1-5"),
        ("cron(0 3 ? * 2W *)", "W is day-of-month only"),
        ("every day", "rate(...), cron(...) or at(...)"),
    ],
)
def test_cron_errors_are_clear(expression: str, complaint: str) -> None:
    with pytest.raises(ScheduleError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        parse_expression(expression)


def test_at_fires_once() -> None:
    spec = schedule_spec("s", "Fn", "Once", "ScheduleV2", {"ScheduleExpression": "at(2026-12-01T10:00:00)"})
    anchor = at("2026-11-24T00:00:00")
    assert spec.next_after(anchor, anchor) == at("2026-12-01T10:00:00")
    assert spec.next_after(at("2026-12-01T10:00:00"), anchor) is None
    with pytest.raises(ScheduleError, match="only valid for ScheduleV2"):
        schedule_spec("s", "Fn", "Once", "Schedule", {"Schedule": "at(2026-12-01T10:00:00)"})


# --------------------------------------------------------------------------- scheduled events


def test_scheduled_event_has_eventbridge_shape() -> None:
    event = scheduled_event("arn:aws:events:us-east-1:000000000000:rule/r", at("2026-11-24T10:00:00"))
    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert event["version"] == "0"
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "aws.events"
    assert event["account"] == "000000000000" and event["region"] == "us-east-1"
    assert event["time"] == "2026-11-24T10:00:00Z"
    assert event["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/r"]
    assert event["detail"] == {}


def test_schedule_spec_input_state_and_arns() -> None:
    # Given a Schedule event with an Input and Enabled false
    spec = schedule_spec(
        "stack",
        "Fn",
        "Nightly",
        "Schedule",
        {"Schedule": "cron(0 3 * * ? *)", "Input": '{"a": 1}', "Enabled": False},
    )
    # Then the function receives the Input itself, and the rule is off
    assert spec.event(at("2026-11-24T03:00:00")) == {"a": 1}
    assert spec.enabled is False
    assert spec.arn == "arn:aws:events:us-east-1:000000000000:rule/stack-FnNightly"
    # State DISABLED (the newer SAM property) also turns it off; "Enabled: 'false'" as text too
    assert not schedule_spec(
        "s", "F", "E", "Schedule", {"Schedule": "rate(1 day)", "State": "DISABLED"}
    ).enabled
    assert not schedule_spec(
        "s", "F", "E", "Schedule", {"Schedule": "rate(1 day)", "Enabled": "false"}
    ).enabled
    v2 = schedule_spec("s", "F", "E", "ScheduleV2", {"ScheduleExpression": "rate(1 day)", "Name": "n"})
    assert v2.arn == "arn:aws:scheduler:us-east-1:000000000000:schedule/default/n"
    assert v2.event(at("2026-11-24T03:00:00"))["resources"] == [v2.arn]
    with pytest.raises(ScheduleError, match="valid JSON"):
        schedule_spec("s", "F", "E", "Schedule", {"Schedule": "rate(1 day)", "Input": "{nope"})


# --------------------------------------------------------------------------- routes


def router() -> Router:
    return Router(
        [
            Route("Api", "A", "GET", "/users/{id}"),
            Route("Api", "B", "GET", "/users/me"),
            Route("Api", "C", "POST", "/users"),
            Route("Files", "D", "ANY", "/files/{proxy+}"),
            Route("Files", "E", "GET", "/files/{proxy+}"),
            Route("Root", "F", "GET", "/"),
            Route("Deep", "G", "GET", "/a/{b}/c"),
            Route("Deep", "H", "GET", "/a/{proxy+}"),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "event_name", "params"),
    [
        ("GET", "/users/42", "A", {"id": "42"}),
        ("GET", "/users/me", "B", {}),  # a literal segment beats {id}
        ("GET", "/users/a%20b", "A", {"id": "a b"}),  # path parameters arrive decoded
        ("GET", "/users/42/", "A", {"id": "42"}),
        ("POST", "/users", "C", {}),
        ("DELETE", "/files/x/y.txt", "D", {"proxy": "x/y.txt"}),  # ANY
        ("GET", "/files/x/y.txt", "E", {"proxy": "x/y.txt"}),  # the method's own beats ANY
        ("GET", "/", "F", {}),
        ("GET", "/a/1/c", "G", {"b": "1"}),  # {b} beats {proxy+}
        ("GET", "/a/1/d", "H", {"proxy": "1/d"}),
    ],
)
def test_routes_match_as_api_gateway_does(
    method: str, path: str, event_name: str, params: dict[str, str]
) -> None:
    match = router().resolve(method, path)
    assert match is not None
    assert match.route.event_name == event_name
    assert match.path_parameters == params


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/files"),  # {proxy+} needs at least one segment
        ("GET", "/users/1/2"),
        ("DELETE", "/users/42"),  # a known resource without that method: 403 too
        ("PUT", "/users"),
    ],
)
def test_unknown_routes_are_missing_authentication_token(method: str, path: str) -> None:
    assert router().resolve(method, path) is None


def test_path_templates() -> None:
    assert [s.kind for s in parse_path_template("/a/{b}/{c+}")] == ["literal", "param", "greedy"]
    assert parse_path_template("/") == ()
    assert match_path(parse_path_template("/a/{b}"), "/a/") is None
    with pytest.raises(ValueError, match="last segment"):
        parse_path_template("/{p+}/x")
    with pytest.raises(ValueError, match="declared twice"):
        Router([Route("F", "A", "GET", "/x"), Route("G", "B", "GET", "/x")])


def test_proxy_reply_merges_headers_and_decodes_base64() -> None:
    reply = proxy_reply(
        {
            "statusCode": 201,
            "headers": {"X-One": "1", "X-Both": "h"},
            "multiValueHeaders": {"X-Many": ["a", "b"], "X-Both": ["m"]},
            "body": base64.b64encode(b"\x00\xff").decode(),
            "isBase64Encoded": True,
        }
    )
    assert reply is not None
    assert reply.status == 201 and reply.body == b"\x00\xff"
    assert (
        ("X-One", "1") in reply.headers
        and ("X-Many", "a") in reply.headers
        and ("X-Many", "b") in reply.headers
    )
    assert [v for k, v in reply.headers if k == "X-Both"] == ["m"]  # multiValueHeaders win
    assert proxy_reply({"statusCode": "204"}) is not None
    for malformed in ({"body": "x"}, {"statusCode": 99}, {"statusCode": 200, "body": 5}, "text", None, [1]):
        assert proxy_reply(malformed) is None


# --------------------------------------------------------------------------- SQS: deletions


def outcome(result: Any = None, error: BaseException | None = None) -> InvokeResult:
    return InvokeResult("Fn", "req", result=result, error=error)


IDS = ["m1", "m2", "m3"]


@pytest.mark.parametrize(
    ("result", "deleted"),
    [
        (None, IDS),
        ({}, IDS),
        ({"batchItemFailures": []}, IDS),
        ({"batchItemFailures": None}, IDS),
        ({"something": "else"}, IDS),
        ({"batchItemFailures": [{"itemIdentifier": "m2"}]}, ["m1", "m3"]),
        ({"batchItemFailures": [{"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]}, ["m2"]),
        ({"batchItemFailures": [{"itemIdentifier": "m9"}]}, []),  # not in the batch: all failed
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, []),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, []),
        ({"batchItemFailures": [{"id": "m1"}]}, []),  # wrong key name
        ({"batchItemFailures": ["m1"]}, []),
        ({"batchItemFailures": "m1"}, []),
        ("ok", []),  # not a JSON object
    ],
)
def test_partial_batch_response_decides_deletions(result: Any, deleted: list[str]) -> None:
    decision = decide(IDS, outcome(result), report_failures=True)
    assert decision.delete == deleted
    assert decision.failed == [m for m in IDS if m not in deleted]


def test_errors_delete_nothing_and_without_the_feature_success_deletes_all() -> None:
    assert decide(IDS, outcome(error=RuntimeError()), report_failures=True).delete == []
    assert decide(IDS, outcome(error=RuntimeError()), report_failures=False).delete == []
    partial = {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    assert decide(IDS, outcome(partial), report_failures=False).delete == IDS  # ignored when off


def sqs_message(i: int, body: str = "b", **attributes: str) -> dict[str, Any]:
    return {
        "MessageId": f"id-{i}",
        "ReceiptHandle": f"rh-{i}",
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),
        "Body": body,
        "Attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1764000000000",
            "SenderId": "000000000000",
            "ApproximateFirstReceiveTimestamp": "1764000000100",
            **attributes,
        },
        "MessageAttributes": {
            "kind": {"StringValue": "x", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    }


def test_sqs_event_has_lambda_shape() -> None:
    arn = "arn:aws:sqs:us-east-1:000000000000:q"
    event = build_event([sqs_message(1, "hello", MessageGroupId="g", AWSTraceHeader="Root=1")], arn)
    (record,) = event["Records"]
    assert record["messageId"] == "id-1" and record["receiptHandle"] == "rh-1" and record["body"] == "hello"
    assert record["md5OfBody"] == hashlib.md5(b"hello").hexdigest()
    assert (
        record["eventSource"] == "aws:sqs"
        and record["eventSourceARN"] == arn
        and record["awsRegion"] == "us-east-1"
    )
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["attributes"]["ApproximateFirstReceiveTimestamp"] == "1764000000100"
    assert (
        record["attributes"]["MessageGroupId"] == "g" and record["attributes"]["AWSTraceHeader"] == "Root=1"
    )
    assert record["messageAttributes"]["kind"]["stringValue"] == "x"
    assert record["messageAttributes"]["blob"]["binaryValue"] == base64.b64encode(b"\x00\x01").decode()
    json.dumps(event)  # what Lambda sends is JSON


class FakeSqs:
    """ReceiveMessage hands out `per_call` messages at a time; records every call."""

    def __init__(self, messages: list[dict[str, Any]], per_call: int = 10) -> None:
        self.messages = list(messages)
        self.per_call = per_call
        self.receives: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.receives.append(kwargs)
            count = min(kwargs["MaxNumberOfMessages"], self.per_call)
            taken, self.messages = self.messages[:count], self.messages[count:]
        return {"Messages": taken}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.deleted.extend(e["ReceiptHandle"] for e in Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


def source(**changes: Any) -> SqsSource:
    base: dict[str, Any] = {
        "function": "Fn",
        "event_name": "Ev",
        "queue_name": "q",
        "queue_url": "http://sqs/q",
        "queue_arn": "arn:aws:sqs:us-east-1:000000000000:q",
        "batch_size": 10,
        "batching_window": 0.0,
        "report_failures": True,
    }
    return SqsSource(**{**base, **changes})


def poller(fake: FakeSqs, invoke: Any = None, **changes: Any) -> SqsPoller:
    return SqsPoller(source(**changes), fake, invoke or (lambda name, event: outcome()), poll_wait=0)


def test_batch_size_caps_receive_and_batch() -> None:
    fake = FakeSqs([sqs_message(i) for i in range(25)])
    batch = poller(fake, batch_size=3).gather()
    assert len(batch) == 3
    assert fake.receives[0]["MaxNumberOfMessages"] == 3
    assert fake.receives[0]["AttributeNames"] == ["All"] and fake.receives[0]["MessageAttributeNames"] == [
        "All"
    ]


def test_without_a_window_the_first_non_empty_receive_is_the_batch() -> None:
    fake = FakeSqs([sqs_message(i) for i in range(5)], per_call=2)
    assert len(poller(fake, batch_size=10).gather()) == 2


def test_the_batching_window_gathers_until_the_batch_is_full() -> None:
    fake = FakeSqs([sqs_message(i) for i in range(25)], per_call=4)
    batch = poller(fake, batch_size=15, batching_window=5.0).gather()
    assert len(batch) == 15
    assert [r["MaxNumberOfMessages"] for r in fake.receives] == [10, 10, 7, 3]


def test_the_batching_window_ends_a_partial_batch() -> None:
    fake = FakeSqs([sqs_message(i) for i in range(3)], per_call=1)
    batch = poller(fake, batch_size=10, batching_window=1.0).gather()
    assert len(batch) == 3  # all there were, once the window passed


def test_process_deletes_only_what_succeeded() -> None:
    fake = FakeSqs([])
    failures = {"batchItemFailures": [{"itemIdentifier": "id-1"}]}
    invocation = poller(fake, lambda name, event: outcome(failures)).process(
        [sqs_message(i) for i in range(3)]
    )
    assert fake.deleted == ["rh-0", "rh-2"]
    assert invocation.failed == ["id-1"] and invocation.deleted == ["id-0", "id-2"]


# --------------------------------------------------------------------------- discovery and invocation


def fixture_stack() -> Stack:
    stack = Stack.load("unit", path=FIXTURE)
    for logical_id in stack.resources("AWS::SQS::Queue"):
        name = f"unit-{logical_id}"
        stack.queues[logical_id] = Queue(
            logical_id, name, f"http://sqs/{name}", f"arn:aws:sqs:us-east-1:000000000000:{name}"
        )
        stack.physical[logical_id] = f"http://sqs/{name}"
    return stack


def test_discovery_reads_every_event_source_of_the_template() -> None:
    found = discover(fixture_stack(), FIXTURE.parent)
    assert set(found.functions) == {
        "PartialFunction",
        "BoomFunction",
        "PlainFunction",
        "BatchFunction",
        "TickFunction",
        "EchoFunction",
    }
    echo = found.functions["EchoFunction"]
    assert (echo.timeout, echo.memory, echo.handler) == (5.0, 256, "echo.handler")
    assert echo.code_uri == str(FIXTURE.parent / "functions")
    assert {(r.method, r.path, r.stage) for r in found.routes} == {
        ("GET", "/echo/{id}", "test"),
        ("GET", "/echo/special", "test"),
        ("POST", "/echo", "test"),
        ("ANY", "/files/{proxy+}", "test"),
    }
    work = next(s for s in found.sources if s.function == "PartialFunction")
    assert (work.batch_size, work.batching_window, work.report_failures, work.max_concurrency) == (
        10,
        1.0,
        True,
        2,
    )
    assert work.queue_name == "unit-WorkQueue"
    plain = next(s for s in found.sources if s.function == "PlainFunction")
    assert plain.report_failures is False and plain.batch_size == 10
    schedules = {s.event_name: s for s in found.schedules}
    assert schedules["EveryMinute"].enabled and not schedules["Nightly"].enabled
    assert schedules["WithInput"].input == {"job": "nightly-report"}


def test_discovery_rejects_what_aws_rejects() -> None:
    stack = fixture_stack()
    stack.template["Resources"]["BatchFunction"]["Properties"]["Events"]["Batch"]["Properties"].update(
        BatchSize=50, MaximumBatchingWindowInSeconds=0
    )
    with pytest.raises(TemplateError, match="BatchSize above 10 needs MaximumBatchingWindowInSeconds"):
        discover(stack, FIXTURE.parent)


def test_each_concurrent_invocation_gets_its_own_environment() -> None:
    # Given a function whose handler module keeps state
    spec = FunctionSpec("Echo", str(FIXTURE.parent / "functions"), "echo.handler", timeout=5)
    invoker = Invoker({"Echo": spec})
    pool = invoker.pools["Echo"]
    # When two invocations overlap, then two environments exist (two module copies)
    first, init1 = pool.acquire()
    second, init2 = pool.acquire()
    assert first is not second and init1 is not None and init2 is not None
    assert first.__module__ != second.__module__
    pool.release(first)
    pool.release(second)
    # and a later invocation reuses an idle one (no cold start)
    result = invoker.invoke("Echo", {"pathParameters": {"id": "x"}})
    assert result.ok and result.init_ms is None and pool.created == 2


def test_a_metric_added_during_another_invocations_flush_goes_out_with_the_next() -> None:
    # Given the runtime's environments sharing Powertools' one metric store
    Invoker({})
    from aws_lambda_powertools import Metrics

    metrics = Metrics(namespace="RuntimeUnitTest")
    metrics.clear_metrics()
    added = threading.Event()

    def other_invocation() -> None:
        metrics.add_metric(name="Other", unit="Count", value=1)
        added.set()

    class Stdout(io.StringIO):
        """Where one invocation's flush prints: meanwhile another invocation adds a metric."""

        def write(self, text: str) -> int:
            if not hasattr(self, "other"):
                self.other = threading.Thread(target=other_invocation)
                self.other.start()
                added.wait(0.3)  # without the guard it lands now, in the set about to be cleared
            return super().write(text)

    first, second = Stdout(), Stdout()
    second.other = threading.Thread()  # the second flush needs no interference
    # When one invocation flushes while the other adds
    with contextlib.redirect_stdout(first):
        metrics.add_metric(name="Mine", unit="Count", value=1)
        metrics.flush_metrics()
    first.other.join()
    with contextlib.redirect_stdout(second):
        metrics.flush_metrics()
    # Then each metric went out exactly once
    assert "Mine" in first.getvalue() and "Other" not in first.getvalue()
    assert "Other" in second.getvalue()


def test_invocation_errors_timeouts_and_unserializable_results() -> None:
    functions = FIXTURE.parent / "functions"
    invoker = Invoker(
        {
            "Echo": FunctionSpec("Echo", str(functions), "echo.handler", timeout=5),
            "Slow": FunctionSpec("Slow", str(functions), "echo.handler", timeout=0),
            "Missing": FunctionSpec("Missing", str(functions), "nothing_here.handler"),
        }
    )
    raised = invoker.invoke("Echo", {"pathParameters": {"id": "raise"}})
    assert isinstance(raised.error, ValueError)
    assert isinstance(invoker.invoke("Slow", {"pathParameters": {"id": "x"}}).error, FunctionTimeout)
    assert invoker.invoke("Missing", {}).error is not None
    assert isinstance(invoker.invoke("Echo", {"bad": {1, 2}}).error, TypeError)


def test_gateway_builds_rest_events_and_api_gateway_errors() -> None:
    runtime = Runtime(fixture_stack(), sqs=None, port=0, template_dir=FIXTURE.parent)
    try:
        gateway = runtime.gateway
        reply = gateway.handle(
            "GET",
            "/echo/a%20b?x=1&x=2&y=",
            [("X-Multi", "a"), ("X-Multi", "b"), ("User-Agent", "t")],
            b"",
            "127.0.0.1",
        )
        assert reply.status == 200
        seen = json.loads(reply.body)
        event = seen["event"]
        assert event["resource"] == "/echo/{id}" and event["path"] == "/echo/a%20b"
        assert event["pathParameters"] == {"id": "a b"}
        assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
        assert event["queryStringParameters"] == {"x": "2", "y": ""}
        assert event["multiValueHeaders"]["X-Multi"] == ["a", "b"]
        assert (
            event["requestContext"]["stage"] == "test"
            and event["requestContext"]["resourcePath"] == "/echo/{id}"
        )
        assert ("x-amzn-RequestId", event["requestContext"]["requestId"]) in reply.headers
        assert (
            seen["context"]["function_name"] == "EchoFunction"
            and seen["context"]["memory_limit_in_mb"] == 256
        )
        assert 0 < seen["context"]["remaining_ms"] <= 5000

        binary = gateway.handle(
            "POST", "/files/a/b.bin", [("Content-Type", "application/octet-stream")], b"\xff\x00", "::1"
        )
        event = json.loads(binary.body)["event"]
        assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\xff\x00"
        assert event["pathParameters"] == {"proxy": "a/b.bin"}

        for method, path in (("GET", "/nope"), ("DELETE", "/echo/x")):
            missing = gateway.handle(method, path, [], b"", "127.0.0.1")
            assert missing.status == 403 and json.loads(missing.body) == {
                "message": "Missing Authentication Token"
            }
        for broken in ("/echo/raise", "/echo/malformed"):
            failed = gateway.handle("GET", broken, [], b"", "127.0.0.1")
            assert failed.status == 502 and json.loads(failed.body) == {"message": "Internal server error"}

        fired = gateway.handle("POST", "/_local/schedules/TickFunction/WithInput", [], b"", "127.0.0.1")
        assert fired.status == 200
        (invocation,) = json.loads(fired.body)["invocations"]
        assert invocation["event"] == {"job": "nightly-report"}
        assert invocation["result"]["received"] == {"job": "nightly-report"}
        assert gateway.handle("POST", "/_local/schedules/EchoFunction", [], b"", "127.0.0.1").status == 404
        assert gateway.handle("GET", "/_local/status", [], b"", "127.0.0.1").status == 200
    finally:
        runtime.gateway.server.server_close()


def real_stack() -> Stack:
    """template.yaml with stand-in queues (discovery needs them; nothing is created)."""
    stack = Stack.load("unit")
    for logical_id in stack.resources("AWS::SQS::Queue"):
        name = f"unit-{logical_id}"
        stack.queues[logical_id] = Queue(
            logical_id, name, f"http://sqs/{name}", f"arn:aws:sqs:us-east-1:000000000000:{name}"
        )
        stack.physical[logical_id] = f"http://sqs/{name}"
    return stack


@pytest.mark.parametrize("response_type", sorted(GATEWAY_ERRORS))
def test_api_gateways_own_replies_follow_the_templates_gateway_responses(response_type: str) -> None:
    from notify_core.http import SECURITY_HEADERS
    from notify_core.models import ErrorEnvelope

    # Given the GatewayResponses template.yaml declares (what API Gateway will answer in AWS)
    responses = discover(real_stack()).gateway_responses
    assert {
        "MISSING_AUTHENTICATION_TOKEN",
        "THROTTLED",
        "REQUEST_TOO_LARGE",
        "DEFAULT_4XX",
        "DEFAULT_5XX",
    } <= set(responses)
    # When the local runtime gives that reply
    reply = render_gateway_response(responses, response_type, {"requestId": "r-1", "httpMethod": "GET"})

    # Then its body is the contract's error envelope and it carries the API's headers
    envelope = ErrorEnvelope.model_validate_json(reply.body)
    expected = {
        "MISSING_AUTHENTICATION_TOKEN": (404, "not_found"),
        "REQUEST_TOO_LARGE": (413, "payload_too_large"),
        "INTEGRATION_FAILURE_LAMBDA": (502, "internal_error"),
    }[response_type]
    assert (reply.status, envelope.error.code) == expected
    assert set(SECURITY_HEADERS.items()) <= set(reply.headers)
    assert ("Content-Type", "application/json") in reply.headers


def test_gateway_response_templates_fill_context_variables_and_need_static_headers() -> None:
    responses = parse_gateway_responses(
        {
            "DEFAULT_4XX": {
                "StatusCode": "418",
                "ResponseParameters": {"Headers": {"X-A": "'b'"}},
                "ResponseTemplates": {
                    "application/json": '{"m": $context.error.messageString, "id": "$context.requestId",'
                    ' "t": "$context.error.responseType", "u": "$context.unknown"}'
                },
            }
        }
    )
    reply = render_gateway_response(responses, "REQUEST_TOO_LARGE", {"requestId": "r-9"})
    assert reply.status == 418 and ("X-A", "b") in reply.headers
    assert json.loads(reply.body) == {
        "m": "Request Too Long",
        "id": "r-9",
        "t": "REQUEST_TOO_LARGE",
        "u": "$context.unknown",
    }
    # no entry for the type nor its DEFAULT_nXX: API Gateway's own body
    plain = render_gateway_response(responses, "INTEGRATION_FAILURE_LAMBDA", {"requestId": "r"})
    assert plain.status == 502 and json.loads(plain.body) == {"message": "Internal server error"}
    with pytest.raises(ValueError, match="static"):
        parse_gateway_responses(
            {"DEFAULT_5XX": {"ResponseParameters": {"Headers": {"X": "method.request.x"}}}}
        )


def test_gateway_queues_bursts_instead_of_refusing_them() -> None:
    gateway = HttpGateway([], invoke=lambda name, event: InvokeResult(name, "r"), port=0)
    try:
        assert gateway.server.request_queue_size == LISTEN_BACKLOG >= 1024
    finally:
        gateway.server.server_close()


# --------------------------------------------------------------------------- configuration


def test_overrides_file_format() -> None:
    pairs = parse_pairs(
        [
            "# a comment",
            "",
            "RateLimitRequests=100",
            "export LogLevel = DEBUG",
            "SENDGRID_API_KEY='SG.x # not a comment'",
            'EMPTY=""',
            "MaxReceiveCount=3 # trailing comment",
        ]
    )
    assert pairs == [
        ("RateLimitRequests", "100"),
        ("LogLevel", "DEBUG"),
        ("SENDGRID_API_KEY", "SG.x # not a comment"),
        ("EMPTY", ""),
        ("MaxReceiveCount", "3"),
    ]
    out = classify(pairs, ["RateLimitRequests", "LogLevel", "MaxReceiveCount"], "local.env")
    assert out.parameters == {"RateLimitRequests": "100", "LogLevel": "DEBUG", "MaxReceiveCount": "3"}
    assert out.environment == {"SENDGRID_API_KEY": "SG.x # not a comment", "EMPTY": ""}
    with pytest.raises(OverridesError, match="KEY=VALUE"):
        parse_pairs(["just words"])
    with pytest.raises(OverridesError, match="neither a template parameter"):
        classify([("RateLimit", "1")], ["RateLimitRequests"], "local.env")
    with pytest.raises(OverridesError, match="DatabaseUrl"):
        classify([("DATABASE_URL", "postgresql://x")], ["DatabaseUrl"], "local.env")


def test_function_environments_merge_into_one() -> None:
    union, conflicts = merge_environments(
        {
            "Api": {"DATABASE_URL": "d", "POWERTOOLS_SERVICE_NAME": "api"},
            "Sender": {"DATABASE_URL": "d", "POWERTOOLS_SERVICE_NAME": "sender", "RETRY_BASE_SECONDS": "30"},
            "Odd": {"DATABASE_URL": "other"},
        }
    )
    assert union == {
        "DATABASE_URL": "d",
        "POWERTOOLS_SERVICE_NAME": "notify-local",
        "RETRY_BASE_SECONDS": "30",
    }
    assert len(conflicts) == 1 and conflicts[0].startswith("DATABASE_URL")
