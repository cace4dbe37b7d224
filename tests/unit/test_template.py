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


def _role(template: dict[str, Any], function: dict[str, Any]) -> dict[str, Any]:
    role = function["Properties"]["Role"]
    assert isinstance(role, dict) and "Fn::GetAtt" in role, "every function has its own role"
    logical_id, attribute = role["Fn::GetAtt"]
    assert attribute == "Arn"
    resource = template["Resources"][logical_id]
    assert resource["Type"] == "AWS::IAM::Role"
    return dict(resource["Properties"])


def _inline_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    """Inline statements of a role, through both branches of Fn::If."""
    out: list[dict[str, Any]] = []
    for policy in role.get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                _, yes, no = statement["Fn::If"]
                out.extend(s for s in (yes, no) if isinstance(s, dict) and "Effect" in s)
            else:
                out.append(statement)
    return out


def _role_statements(template: dict[str, Any], function: dict[str, Any]) -> list[dict[str, Any]]:
    return _inline_statements(_role(template, function))


def _all_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::Role":
            for statement in _inline_statements(resource["Properties"]):
                yield name, statement
        elif resource["Type"] == "AWS::IAM::ManagedPolicy":
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                yield name, statement


def test_functions_have_their_own_roles_and_log_groups_with_retention(template: dict[str, Any]) -> None:
    roles = set()
    for name, function in _functions(template).items():
        props = function["Properties"]
        assert "Policies" not in props, f"{name}: SAM would generate a role; its role is {name}Role"
        role = props["Role"]["Fn::GetAtt"][0]
        assert role not in roles, f"{name} shares {role}"
        roles.add(role)
        group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
        group = template["Resources"][group_id]
        assert group["Type"] == "AWS::Logs::LogGroup"
        assert "RetentionInDays" in group["Properties"], group_id
        logs = [
            s for s in _role_statements(template, function) if "logs:PutLogEvents" in _as_list(s["Action"])
        ]
        assert [s["Resource"] for s in logs] == [{"Fn::GetAtt": [group_id, "Arn"]}], name


# Actions that name no resource: SMS to a phone number (Amazon SNS as a provider), listing secrets
# (cleanup finds the credentials of removed provider configs). Nothing else may use Resource "*".
NO_RESOURCE_ACTIONS = {"sns:Publish", "secretsmanager:ListSecrets"}


def test_no_wildcard_actions_or_resources(template: dict[str, Any]) -> None:
    for name, statement in _all_statements(template):
        actions = [str(a) for a in _as_list(statement["Action"])]
        assert not any(a == "*" or a.endswith(":*") for a in actions), (name, actions)
        if "*" in _as_list(statement["Resource"]):
            assert set(actions) <= NO_RESOURCE_ACTIONS, (name, statement)


def test_vpc_access_and_tracing_are_granted_only_when_switched_on(template: dict[str, Any]) -> None:
    vpc = template["Globals"]["Function"]["VpcConfig"]["Fn::If"]
    assert vpc[0] == "InVpc" and vpc[2] == {"Ref": "AWS::NoValue"}
    assert template["Parameters"]["SubnetIds"]["Default"] == ""
    for name, function in _functions(template).items():
        for arn in _role(template, function).get("ManagedPolicyArns", []):
            condition, _, otherwise = arn["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}, name
            text = json.dumps(arn)
            if "AWSLambdaVPCAccessExecutionRole" in text:
                assert condition == "InVpc"
            elif "XRay" in text:
                assert condition == "TracingOn"
            else:
                assert condition == "HasDatabaseSecret"


def test_api_function_may_only_enqueue_and_read_its_queues(template: dict[str, Any]) -> None:
    statements = _role_statements(template, _functions(template)[API_FUNCTION])
    sqs = [s for s in statements if any(str(a).startswith("sqs:") for a in _as_list(s["Action"]))]
    by_queue = {s["Resource"]["Fn::GetAtt"][0]: set(_as_list(s["Action"])) for s in sqs}
    # notifications (and GET /health?deep=1 reads its attributes); webhook events of its changes
    assert by_queue == {
        QUEUE: {"sqs:SendMessage", "sqs:GetQueueAttributes"},
        "WebhooksQueue": {"sqs:SendMessage"},
    }


PROVIDER_CONFIG_SECRETS = ":secret:${AWS::StackName}/provider-configs/*"
# Who may do what with the provider configs' credentials: the API writes them (never reads them
# back), the sender reads them, cleanup deletes the ones whose config is gone.
PROVIDER_CONFIG_SECRET_ACTIONS = {
    "ApiFunctionRole": {
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:DeleteSecret",
        "secretsmanager:TagResource",
    },
    "SenderFunctionRole": {"secretsmanager:GetSecretValue"},
    "CleanupFunctionRole": {"secretsmanager:DeleteSecret"},
}


def test_secrets_are_readable_only_where_configured(template: dict[str, Any]) -> None:
    policy = template["Resources"]["DatabaseSecretReadPolicy"]
    assert policy["Condition"] == "HasDatabaseSecret"
    config_secrets: dict[str, set[str]] = {}
    for name, statement in _all_statements(template):
        actions = {str(a) for a in _as_list(statement["Action"])}
        if not any(a.startswith("secretsmanager:") for a in actions):
            continue
        resource = statement["Resource"]
        if resource == "*":
            assert actions == {"secretsmanager:ListSecrets"} and name == "CleanupFunctionRole", name
        elif "Fn::Sub" in resource:
            assert resource["Fn::Sub"].endswith(PROVIDER_CONFIG_SECRETS), (name, resource)
            config_secrets.setdefault(name, set()).update(actions)
        else:
            assert actions == {"secretsmanager:GetSecretValue"}, name
            assert resource in ({"Ref": "DatabaseSecretArn"}, {"Ref": "ProviderSecretsArn"}), name
            if resource == {"Ref": "ProviderSecretsArn"}:
                # the sender sends with it; the API verifies provider callbacks with its keys
                assert name in ("SenderFunctionRole", "ApiFunctionRole"), name
    assert config_secrets == PROVIDER_CONFIG_SECRET_ACTIONS


def test_queues_are_encrypted_and_every_scan_finding_left_has_a_reason(template: dict[str, Any]) -> None:
    for name, queue in _resources_of_type(template, "AWS::SQS::Queue").items():
        assert queue["Properties"].get("KmsMasterKeyId"), name
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert skip["id"].startswith("CKV") and len(skip.get("comment", "")) > 20, (name, skip)


# ---------------------------------------------------------------- build inputs and settings


def test_functions_and_layer_have_build_inputs(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CommonLayer"]
    layer_dir = ROOT / layer["Properties"]["ContentUri"]
    # built by layers/common/Makefile (build_layer.py): slim, precompiled
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert "build-CommonLayer:" in (layer_dir / "Makefile").read_text(encoding="utf-8")
    assert (layer_dir / "requirements.txt").is_file()
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
    unknown = {name for name in variables if not name.startswith(("POWERTOOLS_", "PYDANTIC_"))} - settings
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


def test_the_sender_may_send_through_ses_and_sns(template: dict[str, Any]) -> None:
    statements = _role_statements(template, _functions(template)["SenderFunction"])
    actions = {str(a) for s in statements for a in _as_list(s["Action"])}
    assert {"ses:SendEmail", "ses:SendRawEmail", "sns:Publish"} <= actions
