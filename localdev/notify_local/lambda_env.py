"""What Lambda and API Gateway give a handler, built locally: REST proxy events, the context
object, and the handler loaded from a function's CodeUri the way the Lambda runtime loads it."""

from __future__ import annotations

import base64
import importlib.util
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs

from .stack import ACCOUNT_ID, REGION, ROOT

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    function_name: str
    memory_limit_in_mb: int = 128
    timeout_s: float = 3.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = "local"
    function_version: str = "$LATEST"
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


_modules: dict[tuple[str, str, int], ModuleType] = {}


def load_module(code_uri: str, module_name: str, instance: int = 0) -> ModuleType:
    """Import `module_name` from the CodeUri folder (relative to the repository, or absolute) under a
    unique module name (no sys.path). Each `instance` is a separate import with its own
    module-level state, as each Lambda execution environment has."""
    key = (code_uri, module_name, instance)
    if key not in _modules:
        path = (ROOT / code_uri / f"{module_name.replace('.', '/')}.py").resolve()
        suffix = f"_env{instance}" if instance else ""
        unique = f"lambda_{path.parent.name}_{module_name}{suffix}".replace(".", "_")
        spec = importlib.util.spec_from_file_location(unique, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module  # pydantic resolves the module's annotations through sys.modules
        spec.loader.exec_module(module)
        _modules[key] = module
    return _modules[key]


def load_handler(code_uri: str, handler: str, instance: int = 0) -> Handler:
    """`module.function` of a function's CodeUri, loaded as the Lambda runtime loads it (see
    load_module)."""
    module_name, func_name = handler.rsplit(".", 1)
    return getattr(load_module(code_uri, module_name, instance), func_name)


def rest_event(
    method: str,
    path: str,
    *,
    resource: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
    query: str | Mapping[str, str] | None = None,
    body: bytes | str | None = None,
    stage: str = "dev",
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload 1.0) for one request, as SAM and AWS send it."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    multi_headers: dict[str, list[str]] = {}
    for name, value in pairs:
        multi_headers.setdefault(name, []).append(value)
    if isinstance(query, str):
        multi_query = {k: v for k, v in parse_qs(query, keep_blank_values=True).items()}
    else:
        multi_query = {k: [v] for k, v in (query or {}).items()}
    is_b64 = False
    text: str | None
    if body is None or body in (b"", ""):
        text = None
    elif isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text, is_b64 = base64.b64encode(body).decode(), True
    else:
        text = body
    now = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    return {
        "resource": resource or path,
        "path": path,
        "httpMethod": method.upper(),
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": "local",
            "resourcePath": resource or path,
            "httpMethod": method.upper(),
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": "localhost",
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {"sourceIp": source_ip, "userAgent": dict(pairs).get("User-Agent")},
            "domainName": "localhost",
            "apiId": "local",
        },
        "body": text,
        "isBase64Encoded": is_b64,
    }


# System attributes Lambda passes on only when the message has them (FIFO queues, X-Ray).
OPTIONAL_ATTRIBUTES = ("AWSTraceHeader", "SequenceNumber", "MessageGroupId", "MessageDeduplicationId")


def _binary(value: Any) -> Any:
    """boto3 returns binary attribute values as bytes; the Lambda event carries them as base64."""
    return base64.b64encode(value).decode() if isinstance(value, bytes | bytearray) else value


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping sends, from ReceiveMessage results (received
    with AttributeNames=['All'] and MessageAttributeNames=['All'])."""
    records = []
    for m in messages:
        attributes = m.get("Attributes", {})
        records.append(
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
                    "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
                    "SenderId": attributes.get("SenderId", ACCOUNT_ID),
                    "ApproximateFirstReceiveTimestamp": attributes.get(
                        "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
                    ),
                    **{k: attributes[k] for k in OPTIONAL_ATTRIBUTES if k in attributes},
                },
                "messageAttributes": {
                    name: {
                        "stringValue": value.get("StringValue"),
                        "binaryValue": _binary(value.get("BinaryValue")),
                        "stringListValues": [],
                        "binaryListValues": [],
                        "dataType": value.get("DataType", "String"),
                    }
                    for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
        )
    return {"Records": records}
