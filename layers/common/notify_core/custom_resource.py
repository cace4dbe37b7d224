"""CloudFormation custom resources, answered the way CloudFormation expects: a PUT of the outcome to
the pre-signed ResponseURL. A handler that never answers would leave the stack waiting for an hour,
so every path — success or any error — answers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

from .observability import logger

Action = Callable[[dict[str, Any]], dict[str, Any] | None]


def respond(event: dict[str, Any], status: str, reason: str = "", data: dict[str, Any] | None = None) -> None:
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason[:1000] or f"see the function's log for {event.get('LogicalResourceId')}",
            "PhysicalResourceId": event.get("PhysicalResourceId") or event["LogicalResourceId"],
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "Data": data or {},
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 — the URL is CloudFormation's pre-signed S3 URL
        event["ResponseURL"],
        data=body,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
        reply.read()


def handle(event: dict[str, Any], on_change: Action) -> str:
    """Run `on_change` for Create and Update (Delete does nothing: data outlives the stack), then
    answer CloudFormation. Returns the status sent."""
    try:
        data = None if event["RequestType"] == "Delete" else on_change(event)
    except Exception as exc:  # noqa: BLE001 — every failure must reach CloudFormation as FAILED
        logger.exception("custom resource failed", extra={"request_type": event.get("RequestType")})
        respond(event, "FAILED", f"{type(exc).__name__}: {exc}")
        return "FAILED"
    respond(event, "SUCCESS", data=data)
    return "SUCCESS"
