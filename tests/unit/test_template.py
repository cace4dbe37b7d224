"""Rules on template.yaml and events/ that cfn-lint does not know: routes, redrive, timeouts, privileges."""

from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notify_core.openapi import operations
from notify_local.lambda_env import load_handler
from notify_local.template import load_template, parse_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
EVENTS_DIR = ROOT / "events"

API_FUNCTION = "ApiFunction"
API_RESOURCE = "NotificationsApi"
QUEUE = "NotificationsQueue"
DLQ = "NotificationsDLQ"

REST_PROXY_KEYS = {
    "resource",
    "path",
    "httpMethod",
    "headers",
    "multiValueHeaders",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "pathParameters",
    "stageVariables",
    "requestContext",
    "body",
    "isBase64Encoded",
}
REQUEST_CONTEXT_KEYS = {"stage", "requestId", "resourcePath", "httpMethod", "identity"}
REQUIRED_SAMPLE_EVENTS = {
    "api_health.json",
    "api_create_user.json",
    "api_create_notification.json",
    "api_create_notification_batch.json",
    "api_get_notification.json",
    "api_list_notifications.json",
}
SAMPLE_EVENTS = sorted(EVENTS_DIR.glob("api_*.json"))

LAMBDA_DEFAULT_TIMEOUT = 3


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


def _resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == type_}


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _resources_of_type(template, "AWS::Serverless::Function")


def _events(function: dict[str, Any], type_: str) -> list[dict[str, Any]]:
    events = function["Properties"].get("Events") or {}
    return [event["Properties"] for event in events.values() if event["Type"] == type_]


def _routes(function: dict[str, Any]) -> list[tuple[str, str]]:
    return [(event["Method"].upper(), event["Path"]) for event in _events(function, "Api")]


def _refers_to(value: Any, logical_id: str) -> bool:
    if not isinstance(value, dict):
        return False
    if value.get("Ref") == logical_id:
        return True
    get_att = value.get("Fn::GetAtt")
    return isinstance(get_att, list) and bool(get_att) and get_att[0] == logical_id


def _resolve_int(template: dict[str, Any], value: Any) -> int:
    """A literal number, or a Ref to a parameter (its default)."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        value = template["Parameters"][value["Ref"]]["Default"]
    return int(value)


def _globals_timeout(template: dict[str, Any]) -> int:
    timeout = template.get("Globals", {}).get("Function", {}).get("Timeout", LAMBDA_DEFAULT_TIMEOUT)
    return _resolve_int(template, timeout)


def _timeout(template: dict[str, Any], function: dict[str, Any]) -> int:
    if "Timeout" in function["Properties"]:
        return _resolve_int(template, function["Properties"]["Timeout"])
    return _globals_timeout(template)


def _consumer_timeouts(template: dict[str, Any], queue_id: str) -> list[int]:
    return [
        _timeout(template, function)
        for function in _functions(template).values()
        for event in _events(function, "SQS")
        if _refers_to(event["Queue"], queue_id)
    ]


def _policy_statements(policy: Any) -> Iterator[dict[str, Any]]:
    """Statements of an inline policy document, through both branches of Fn::If."""
    if not isinstance(policy, dict):
        return
    if "Fn::If" in policy:
        _, when_true, when_false = policy["Fn::If"]
        yield from _policy_statements(when_true)
        yield from _policy_statements(when_false)
    elif "Statement" in policy:
        statements = policy["Statement"]
        yield from [statements] if isinstance(statements, dict) else statements


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# ---------------------------------------------------------------- the loader


def test_loader_turns_short_form_intrinsics_into_long_form() -> None:
    # Given a template using the short forms
    text = """
AWSTemplateFormatVersion: 2010-09-09
Resources:
  Q:
    Type: AWS::SQS::Queue
    Properties:
      A: !Ref X
      B: !GetAtt Dlq.Arn
      C: !Sub "${AWS::StackName}-q"
      D: !If [HasIt, !Ref Y, !Ref AWS::NoValue]
      E: !Join ["", [a, !Select [0, !Split [",", !Ref L]]]]
      F: !GetAtt [Dlq, Arn]
"""
    # When it is parsed
    props = parse_template(text)["Resources"]["Q"]["Properties"]

    # Then the intrinsics are dicts in CloudFormation's long form and dates stay strings
    assert parse_template(text)["AWSTemplateFormatVersion"] == "2010-09-09"
    assert props["A"] == {"Ref": "X"}
    assert props["B"] == {"Fn::GetAtt": ["Dlq", "Arn"]}
    assert props["C"] == {"Fn::Sub": "${AWS::StackName}-q"}
    assert props["D"] == {"Fn::If": ["HasIt", {"Ref": "Y"}, {"Ref": "AWS::NoValue"}]}
    assert props["E"] == {"Fn::Join": ["", ["a", {"Fn::Select": [0, {"Fn::Split": [",", {"Ref": "L"}]}]}]]}
    assert props["F"] == {"Fn::GetAtt": ["Dlq", "Arn"]}


# ---------------------------------------------------------------- routes


def test_the_resolvers_routes_are_the_templates_api_events(template: dict[str, Any]) -> None:
    """One route, declared twice (the template's Api event, the resolver's route): held equal here."""
    api_module = inspect.unwrap(load_handler("functions/api/", "app.handler")).__globals__
    resolver = api_module["app"]
    # Powertools keeps the registered routes in these two lists (no public accessor)
    served = Counter(
        (route.method, re.sub(r"<(\w+)>", r"{\1}", route.path))
        for route in resolver._static_routes + resolver._dynamic_routes
    )
    declared = Counter(_routes(_functions(template)[API_FUNCTION]))
    assert served == declared
    # and the routes the gate knows are the same ones
    assert Counter(operations(api_module["routes"].specs)) == declared


def test_no_route_is_served_twice_and_all_use_the_explicit_api(template: dict[str, Any]) -> None:
    all_routes: Counter[tuple[str, str]] = Counter()
    for name, function in _functions(template).items():
        for event in _events(function, "Api"):
            assert _refers_to(event.get("RestApiId"), API_RESOURCE), f"{name} {event['Path']}"
        all_routes.update(_routes(function))
    assert [route for route, count in all_routes.items() if count > 1] == []


def test_api_stage_is_the_stage_parameter(template: dict[str, Any]) -> None:
    api = template["Resources"][API_RESOURCE]
    assert api["Type"] == "AWS::Serverless::Api"
    assert api["Properties"]["StageName"] == {"Ref": "Stage"}


# ---------------------------------------------------------------- queues


def test_notifications_queue_redrives_to_the_dlq_after_max_receive_count(template: dict[str, Any]) -> None:
    redrive = template["Resources"][QUEUE]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [DLQ, "Arn"]}
    assert template["Resources"][DLQ]["Type"] == "AWS::SQS::Queue"
    assert template["Parameters"]["MaxReceiveCount"]["Type"] == "Number"


def test_dlq_keeps_messages_longer_than_the_queue(template: dict[str, Any]) -> None:
    queue = template["Resources"][QUEUE]["Properties"]
    dlq = template["Resources"][DLQ]["Properties"]
    assert int(dlq["MessageRetentionPeriod"]) > int(queue["MessageRetentionPeriod"])


def test_notifications_queue_visibility_timeout_is_six_times_its_consumers_timeout(
    template: dict[str, Any],
) -> None:
    # Until a function reads the queue, the Globals timeout stands in for the future consumer.
    timeouts = _consumer_timeouts(template, QUEUE) or [_globals_timeout(template)]
    visibility = _resolve_int(template, template["Resources"][QUEUE]["Properties"]["VisibilityTimeout"])
    assert visibility >= 6 * max(timeouts)


def test_every_consumed_queue_has_visibility_timeout_six_times_its_consumers_timeout(
    template: dict[str, Any],
) -> None:
    for name, queue in _resources_of_type(template, "AWS::SQS::Queue").items():
        timeouts = _consumer_timeouts(template, name)
        if timeouts:
            visibility = _resolve_int(template, queue["Properties"].get("VisibilityTimeout", 30))
            assert visibility >= 6 * max(timeouts), name


# ---------------------------------------------------------------- privileges


def test_api_function_has_no_wildcard_sqs_permissions(template: dict[str, Any]) -> None:
    policies = _as_list(_functions(template)[API_FUNCTION]["Properties"].get("Policies", []))
    for policy in policies:
        if isinstance(policy, str):  # a managed policy name or ARN
            assert "sqs" not in policy.lower(), policy
            continue
        for statement in _policy_statements(policy):
            actions = [str(action).lower() for action in _as_list(statement.get("Action", []))]
            if any(action.startswith("sqs:") or action == "*" for action in actions):
                assert "*" not in _as_list(statement.get("Resource")), statement
        for template_name, params in policy.items():
            if template_name.startswith("SQS"):  # a SAM policy template
                assert _refers_to(params.get("QueueName"), QUEUE), policy


def test_api_function_reads_only_the_configured_secret(template: dict[str, Any]) -> None:
    policies = _as_list(_functions(template)[API_FUNCTION]["Properties"].get("Policies", []))
    secret_statements = [
        statement
        for policy in policies
        for statement in _policy_statements(policy)
        if any(str(action).startswith("secretsmanager:") for action in _as_list(statement.get("Action", [])))
    ]
    for statement in secret_statements:
        actions = set(_as_list(statement["Action"]))
        if "secretsmanager:GetSecretValue" in actions:
            assert statement["Resource"] == {"Ref": "DatabaseSecretArn"}
            assert actions == {"secretsmanager:GetSecretValue"}
        else:  # provider config credentials: written, never read back, and only under their prefix
            assert actions <= {
                "secretsmanager:CreateSecret",
                "secretsmanager:PutSecretValue",
                "secretsmanager:DeleteSecret",
                "secretsmanager:TagResource",
            }
            assert statement["Resource"]["Fn::Sub"].endswith(":secret:${AWS::StackName}/provider-configs/*")
    assert "HasDatabaseSecret" in template["Conditions"]


# ---------------------------------------------------------------- build inputs and settings


def test_functions_and_layer_have_build_inputs(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CommonLayer"]
    assert layer["Metadata"]["BuildMethod"] == "python3.12"
    assert (ROOT / layer["Properties"]["ContentUri"] / "requirements.txt").is_file()
    for name, function in _functions(template).items():
        assert (ROOT / function["Properties"]["CodeUri"] / "requirements.txt").is_file(), name
    assert {"Ref": "CommonLayer"} in template["Globals"]["Function"]["Layers"]


def test_environment_variables_are_known_settings(template: dict[str, Any]) -> None:
    from notify_core.config import Settings
    from notify_core.providers.base import ProviderSettings

    variables = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for function in _functions(template).values():
        variables |= set(function["Properties"].get("Environment", {}).get("Variables", {}))
    settings = {field.upper() for field in (*Settings.model_fields, *ProviderSettings.model_fields)}
    unknown = {name for name in variables if not name.startswith("POWERTOOLS_")} - settings
    assert unknown == set()


# ---------------------------------------------------------------- sample events


def test_required_sample_events_exist() -> None:
    assert {path.name for path in SAMPLE_EVENTS} >= REQUIRED_SAMPLE_EVENTS


@pytest.mark.parametrize("event_path", SAMPLE_EVENTS, ids=[path.name for path in SAMPLE_EVENTS])
def test_sample_event_is_a_rest_proxy_event_for_a_served_route(
    template: dict[str, Any], event_path: Path
) -> None:
    event = json.loads(event_path.read_text(encoding="utf-8"))

    assert set(event) >= REST_PROXY_KEYS
    assert set(event["requestContext"]) >= REQUEST_CONTEXT_KEYS
    assert (event["httpMethod"], event["resource"]) in _routes(_functions(template)[API_FUNCTION])
    assert event["requestContext"]["resourcePath"] == event["resource"]
    assert event["requestContext"]["httpMethod"] == event["httpMethod"]
    assert event["body"] is None or isinstance(event["body"], str)
    assert isinstance(event["isBase64Encoded"], bool)
    for name, value in (event["headers"] or {}).items():
        assert value in event["multiValueHeaders"][name]
    for name, value in (event["queryStringParameters"] or {}).items():
        assert value in event["multiValueQueryStringParameters"][name]
    placeholders = set(re.findall(r"{(\w+)}", event["resource"]))
    assert set(event["pathParameters"] or {}) == placeholders


# ---------------------------------------------------------------- operating: alarms, dashboard, roll-up


def _dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """Every queue some queue's RedrivePolicy sends its dead letters to."""
    found = set()
    for queue in _resources_of_type(template, "AWS::SQS::Queue").values():
        target = (queue["Properties"].get("RedrivePolicy") or {}).get("deadLetterTargetArn")
        if isinstance(target, dict) and "Fn::GetAtt" in target:
            found.add(target["Fn::GetAtt"][0])
    return found


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: res["Properties"]
        for name, res in _resources_of_type(template, "AWS::CloudWatch::Alarm").items()
    }


def _watches(alarm: dict[str, Any], namespace: str, metric: str, dimension: dict[str, Any]) -> bool:
    stats = [alarm] + [m["MetricStat"]["Metric"] for m in alarm.get("Metrics", []) if "MetricStat" in m]
    return any(
        s.get("Namespace") == namespace
        and s.get("MetricName") == metric
        and any(d.get("Value") == dimension for d in s.get("Dimensions", []))
        for s in stats
    )


def test_every_dead_letter_queue_has_a_depth_alarm(template: dict[str, Any]) -> None:
    dlqs = _dead_letter_queues(template)
    assert DLQ in dlqs
    for dlq in dlqs:
        depth = [
            a
            for a in _alarms(template).values()
            if _watches(
                a, "AWS/SQS", "ApproximateNumberOfMessagesVisible", {"Fn::GetAtt": [dlq, "QueueName"]}
            )
        ]
        assert depth, f"no depth alarm on {dlq}"
        assert depth[0]["Threshold"] == 0 and depth[0]["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_promised_alarms_exist_and_notify_the_topic(template: dict[str, Any]) -> None:
    alarms = _alarms(template)
    watched = {
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", json.dumps({"Fn::GetAtt": [QUEUE, "QueueName"]})),
        ("AWS/Lambda", "Errors", json.dumps({"Ref": "SenderFunction"})),
        ("AWS/Lambda", "Throttles", json.dumps({"Ref": "SenderFunction"})),
        ("AWS/Lambda", "Errors", json.dumps({"Ref": API_FUNCTION})),
        ("AWS/Lambda", "Throttles", json.dumps({"Ref": API_FUNCTION})),
        ("AWS/ApiGateway", "5XXError", json.dumps({"Fn::Sub": "${AWS::StackName}-api"})),
    }
    for namespace, metric, dimension in watched:
        assert any(_watches(a, namespace, metric, json.loads(dimension)) for a in alarms.values()), metric
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    subscription = template["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


def test_the_dashboard_shows_every_alarm(template: dict[str, Any]) -> None:
    body = template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    assert widgets
    for name in _alarms(template):
        assert "${" + name + ".Arn}" in body, name


def test_metrics_rollup_runs_every_five_minutes(template: dict[str, Any]) -> None:
    function = _functions(template)["MetricsRollupFunction"]
    assert [e["Schedule"] for e in _events(function, "Schedule")] == ["rate(5 minutes)"]


def test_the_sender_may_send_through_ses_and_sns_and_read_only_config_secrets(
    template: dict[str, Any],
) -> None:
    policies = _as_list(_functions(template)["SenderFunction"]["Properties"]["Policies"])
    actions = {
        str(action): statement.get("Resource")
        for policy in policies
        for statement in _policy_statements(policy)
        for action in _as_list(statement.get("Action", []))
    }
    assert {"ses:SendEmail", "ses:SendRawEmail", "sns:Publish"} <= set(actions)
    config_secrets = [
        s
        for p in policies
        for s in _policy_statements(p)
        if "secretsmanager:GetSecretValue" in _as_list(s.get("Action", []))
        and isinstance(s.get("Resource"), dict)
        and "Fn::Sub" in s["Resource"]
    ]
    assert config_secrets and config_secrets[0]["Resource"]["Fn::Sub"].endswith("/provider-configs/*")
