"""Logger, Tracer and Metrics, created once and configured by POWERTOOLS_* variables.

X-Ray tracing is a deployment choice (template parameter EnableTracing). Powertools' Tracer imports
the X-Ray SDK, and with it botocore, in its constructor even when tracing is disabled: ~330 ms of
cold start. So the real Tracer is built only when tracing is on; otherwise a no-op with the same
decorators stands in.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics

# An invocation that emits no business metric is normal here (a GET, a 4xx); don't warn about it.
warnings.filterwarnings("ignore", message="No application metrics to publish")

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME", "notification-platform")
TRACING = os.getenv("POWERTOOLS_TRACE_DISABLED", "false").lower() not in ("1", "true")


class _NoTracer:
    """Tracer's decorator API, doing nothing (tracing off)."""

    def capture_lambda_handler(self, handler: Any = None, **_: Any) -> Any:
        return handler if handler is not None else (lambda f: f)

    def capture_method(self, method: Any = None, **_: Any) -> Any:
        return method if method is not None else (lambda f: f)

    def put_annotation(self, key: str, value: Any) -> None:
        return None


def _tracer() -> Any:
    if not TRACING:
        return _NoTracer()
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


logger = Logger(service=SERVICE)
tracer: Any = _tracer()
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "NotificationPlatform"))

__all__ = ["SERVICE", "TRACING", "logger", "metrics", "tracer"]
