"""Logger, Tracer and Metrics, created once and configured by POWERTOOLS_* variables.

X-Ray tracing is a deployment choice (template parameter EnableTracing). Powertools' Tracer imports
the X-Ray SDK, and with it botocore, in its constructor even when tracing is disabled: ~330 ms of
cold start. So the real Tracer is built only when tracing is on; otherwise a no-op with the same
decorators stands in.
"""

from __future__ import annotations

import os
import traceback
import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

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


def describe_exception(exc: BaseException) -> str:
    """`module.Type`, with PostgreSQL's SQLSTATE when there is one; never the message. Messages carry
    request data: psycopg's quote the offending value and PostgreSQL's CONTEXT (parameters, JSON
    fragments, recipient addresses), pydantic's the input, a KeyError its key."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    diag = getattr(exc, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return f"{name} (SQLSTATE {sqlstate})" if isinstance(sqlstate, str) else name


def safe_traceback(exc: BaseException) -> str:
    """A traceback with every frame (file, line, function) and every chained exception's type, and
    no exception message or source line."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    lines: list[str] = []
    for item in reversed(chain):
        if lines:
            lines.append("The above exception led to:")
        lines.append("Traceback (most recent call last):")
        lines += [
            f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}'
            for frame in traceback.extract_tb(item.__traceback__)
        ]
        lines.append(f"{describe_exception(item)}: (message withheld from logs)")
    return "\n".join(lines)


class SafeFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter whose exception output keeps the frames and drops the messages."""

    def formatException(self, ei: Any) -> str:
        exc = ei[1] if isinstance(ei, tuple) else None
        return safe_traceback(exc) if isinstance(exc, BaseException) else ""


logger = Logger(service=SERVICE, logger_formatter=SafeFormatter(serialize_stacktrace=False))
tracer: Any = _tracer()
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE", "NotificationPlatform"))

__all__ = ["SERVICE", "TRACING", "logger", "metrics", "tracer"]
