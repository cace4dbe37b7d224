"""A local stand-in for what CloudFormation does with template.yaml: resolve parameters, conditions
and intrinsic functions, and create the SQS queues (with their redrive policies) the template
declares. Tests and the local runtime build their resources from here, never from a second list."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
ACCOUNT_ID = "000000000000"
REGION = "us-east-1"
NO_VALUE = object()
# What every local process talking to LocalStack/moto uses: never a real account's credentials.
LOCAL_AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": REGION}

_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
)


@dataclass
class Queue:
    logical_id: str
    name: str
    url: str = ""
    arn: str = ""


@dataclass
class Stack:
    """The template with parameter values; `physical` maps logical ids to what Ref returns."""

    name: str
    template: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)
    physical: dict[str, Any] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)

    @classmethod
    def load(cls, name: str, overrides: dict[str, str] | None = None, path: Path = TEMPLATE) -> Stack:
        return cls(name, load_template(path), dict(overrides or {}))

    # ------------------------------------------------------------ template walking

    def resources(self, type_: str | None = None) -> dict[str, dict[str, Any]]:
        res: dict[str, dict[str, Any]] = self.template.get("Resources", {})
        return {k: v for k, v in res.items() if type_ is None or v.get("Type") == type_}

    def parameter(self, name: str) -> str:
        if name in self.overrides:
            return str(self.overrides[name])
        spec = self.template.get("Parameters", {}).get(name)
        if spec is None:
            raise KeyError(f"template has no parameter {name}")
        return str(spec.get("Default", ""))

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def pseudo(self, name: str) -> str | None:
        return {
            "AWS::StackName": self.name,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }.get(name)

    def resolve(self, value: Any) -> Any:
        """Evaluate intrinsic functions as far as a local run can (unknown attributes raise)."""
        if isinstance(value, list):
            return [v for v in (self.resolve(x) for x in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: r for k, v in value.items() if (r := self.resolve(v)) is not NO_VALUE}
        ((key, arg),) = value.items()
        if key == "Ref":
            if arg == "AWS::NoValue":
                return NO_VALUE
            if (p := self.pseudo(arg)) is not None:
                return p
            if arg in self.template.get("Parameters", {}):
                return self.parameter(arg)
            if arg in self.physical:
                return self.physical[arg]
            raise KeyError(f"Ref {arg} cannot be resolved locally")
        if key == "Fn::GetAtt":
            logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            queue = self.queues.get(logical)
            if queue is not None and attribute in ("Arn", "QueueName", "QueueUrl"):
                return {"Arn": queue.arn, "QueueName": queue.name, "QueueUrl": queue.url}[attribute]
            raise KeyError(f"GetAtt {logical}.{attribute} cannot be resolved locally")
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

            def sub(match: re.Match[str]) -> str:
                ref = match.group(1)
                if ref in variables:
                    return str(variables[ref])
                if "." in ref:
                    return str(self.resolve({"Fn::GetAtt": ref.split(".", 1)}))
                return str(self.resolve({"Ref": ref}))

            return re.sub(r"\$\{([^!}][^}]*)\}", sub, text)
        if key == "Fn::Join":
            sep, items = arg
            return str(sep).join(str(x) for x in self.resolve(items))
        if key == "Fn::If":
            cond, yes, no = arg
            return self.resolve(yes if self.condition(cond) else no)
        if key == "Fn::Equals":
            a, b = self.resolve(arg)
            return str(a) == str(b)
        if key == "Fn::Not":
            return not self.resolve(arg[0])
        if key == "Fn::And":
            return all(self.resolve(arg))
        if key == "Fn::Or":
            return any(self.resolve(arg))
        if key == "Condition":
            return self.condition(arg)
        if key == "Fn::FindInMap":
            mapping, top, second = self.resolve(arg)
            return self.template["Mappings"][mapping][top][second]
        if key == "Fn::Select":
            index, items = arg
            return self.resolve(items)[int(self.resolve(index))]
        return {key: self.resolve(arg)}

    # ------------------------------------------------------------ queues

    def create_queues(self, sqs: Any) -> dict[str, Queue]:
        """Create every AWS::SQS::Queue, dead-letter targets first, with the template's attributes."""
        pending = dict(self.resources("AWS::SQS::Queue"))
        while pending:
            progressed = False
            for logical_id, spec in list(pending.items()):
                try:
                    self._create_queue(sqs, logical_id, spec.get("Properties", {}))
                except KeyError:
                    continue  # depends on a queue not created yet
                del pending[logical_id]
                progressed = True
            if not progressed:
                raise RuntimeError(f"cannot resolve queue dependencies of {sorted(pending)}")
        return self.queues

    def _create_queue(self, sqs: Any, logical_id: str, props: dict[str, Any]) -> None:
        name = self.resolve(props["QueueName"]) if "QueueName" in props else f"{self.name}-{logical_id}"
        attributes = {
            a: str(self.resolve(props[a])).lower()
            if isinstance(props[a], bool)
            else str(self.resolve(props[a]))
            for a in _QUEUE_ATTRIBUTES
            if a in props
        }
        if "RedrivePolicy" in props:
            policy = self.resolve(props["RedrivePolicy"])
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": policy["deadLetterTargetArn"],
                    "maxReceiveCount": int(policy["maxReceiveCount"]),
                }
            )
        try:
            url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        except sqs.exceptions.QueueNameExists:
            # it exists with other attributes (say MaxReceiveCount changed): bring it in line
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.queues[logical_id] = Queue(logical_id, name, url, arn)
        self.physical[logical_id] = url  # Ref of a queue is its URL

    def delete_queues(self, sqs: Any) -> None:
        for queue in self.queues.values():
            sqs.delete_queue(QueueUrl=queue.url)
        self.queues.clear()

    # ------------------------------------------------------------ functions

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """Globals + function variables, resolved: what Lambda would put in os.environ."""
        glob = (
            self.template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
        )
        fn = self.resources()[logical_id].get("Properties", {}).get("Environment", {}).get("Variables", {})
        env = {}
        for key, value in {**glob, **fn}.items():
            resolved = self.resolve(value)
            if resolved is not NO_VALUE:
                env[key] = str(resolved)
        return env
