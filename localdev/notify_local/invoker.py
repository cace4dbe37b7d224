"""Invoke a function's handler in this process the way Lambda does: one invocation per execution
environment at a time, a LambdaContext with the function's name, memory and remaining time, a
JSON round trip of the event and of the result.

Why execution environments: module state of a handler (Powertools' resolver keeps the current event
and `app.context` on the `app` object; a BatchProcessor keeps the batch it is working on) is safe in
Lambda because an environment serves one invocation at a time. Here threads serve the API and
several pollers at once, so each function gets a pool of environments - separately imported copies
of its handler module - and an invocation borrows one (a "cold start" when a new copy must be
imported). Shared code (`notify_core`, its connection pools and clients) is imported once, as the
layer would be in one environment; it is thread-safe.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .lambda_env import Handler, LambdaContext, load_handler

log = logging.getLogger("notify_local")


@dataclass(frozen=True)
class FunctionSpec:
    """An AWS::Serverless::Function as the runtime needs it (Globals applied, values resolved)."""

    logical_id: str
    code_uri: str  # absolute path of the CodeUri folder
    handler: str  # module.function
    timeout: float = 3.0
    memory: int = 128
    runtime: str = "python3.12"


@dataclass
class InvokeResult:
    function: str
    request_id: str
    result: Any = None
    error: BaseException | None = None
    duration_ms: float = 0.0
    init_ms: float | None = None  # set on a cold start: importing the handler module took this long
    started_at: float = field(default_factory=time.time)  # wall clock, when the handler was called

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        cold = f", cold start {self.init_ms:.0f} ms" if self.init_ms is not None else ""
        return f"{self.duration_ms:.1f} ms{cold}, request {self.request_id}"


@dataclass
class Invocation:
    """One invocation as the event source saw it; passed to observers (tests, tools)."""

    kind: str  # api | sqs | schedule
    source: str  # "GET /health", the queue name, "Function/Event"
    function: str
    event: Any
    outcome: InvokeResult
    deleted: list[str] = field(default_factory=list)  # sqs: the message ids deleted
    failed: list[str] = field(default_factory=list)  # sqs: the message ids left to reappear
    note: str = ""


Observer = Callable[[Invocation], None]


class FunctionTimeout(Exception):
    """The invocation ran longer than the function's Timeout (Lambda would have stopped it)."""


class EnvironmentPool:
    """Execution environments of one function: idle handlers, and how many were ever created."""

    def __init__(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self._idle: list[Handler] = []
        self._created = 0
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def created(self) -> int:
        return self._created

    def acquire(self) -> tuple[Handler, float | None]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), None
        with self._load_lock:  # imports run one at a time; a copy after the first takes milliseconds
            with self._lock:
                if self._idle:
                    return self._idle.pop(), None
                index = self._created
            started = time.perf_counter()
            handler = load_handler(self.spec.code_uri, self.spec.handler, index)
            with self._lock:
                self._created += 1
            return handler, (time.perf_counter() - started) * 1000

    def release(self, handler: Handler) -> None:
        with self._lock:
            self._idle.append(handler)


def _json_round_trip(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON serializable: {exc}") from exc


_METRICS_LOCK = threading.RLock()


def guard_powertools_metrics() -> None:
    """Powertools keeps one metric store per process (class attributes of Metrics), which Lambda
    never shares: an execution environment runs one invocation at a time. Here every environment
    shares it, and an invocation's flush (serialize, print, clear: the print lets other threads
    run) dropped what other invocations added meanwhile. Adding and flushing therefore take one
    lock: a metric added during another invocation's flush goes out with the next one. Idempotent."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider as Provider,
    )

    for name in ("add_metric", "flush_metrics"):
        original = getattr(Provider, name)
        if getattr(original, "_notify_local_guarded", False):
            continue

        def guarded(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _METRICS_LOCK:
                return _original(self, *args, **kwargs)

        guarded._notify_local_guarded = True  # type: ignore[attr-defined]
        setattr(Provider, name, functools.wraps(original)(guarded))


class Invoker:
    def __init__(self, functions: dict[str, FunctionSpec]) -> None:
        guard_powertools_metrics()
        self.functions = functions
        self.pools = {name: EnvironmentPool(spec) for name, spec in functions.items()}

    def warm(self, name: str) -> float | None:
        """Create one environment now (import errors surface at start, not at the first request)."""
        pool = self.pools[name]
        if pool.created:
            return None
        handler, init_ms = pool.acquire()
        pool.release(handler)
        return init_ms

    def invoke(self, name: str, event: Any) -> InvokeResult:
        spec = self.functions[name]
        outcome = InvokeResult(name, str(uuid.uuid4()))
        pool = self.pools[name]
        try:
            handler, outcome.init_ms = pool.acquire()
        except Exception as exc:  # noqa: BLE001 - an import error is the invocation's error (Runtime.ImportModuleError)
            outcome.error = exc
            self._report(spec, outcome)
            return outcome
        # Lambda's init phase is not part of the invocation's Timeout; the context is made after it.
        context = LambdaContext(spec.logical_id, spec.memory, spec.timeout, aws_request_id=outcome.request_id)
        outcome.started_at = time.time()
        started = time.perf_counter()
        try:
            payload = _json_round_trip(event, "the event")
            outcome.result = _json_round_trip(handler(payload, context), "the handler's result")
        except Exception as exc:  # noqa: BLE001 - whatever the handler raises is the invocation's error
            outcome.error = exc
        finally:
            pool.release(handler)
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        if outcome.error is None and outcome.duration_ms > spec.timeout * 1000:
            outcome.error = FunctionTimeout(
                f"Task timed out after {spec.timeout:.2f} seconds (took {outcome.duration_ms / 1000:.2f} s; "
                "Lambda would have stopped it and discarded the result)"
            )
        if outcome.error is not None:
            self._report(spec, outcome)
        return outcome

    @staticmethod
    def _report(spec: FunctionSpec, outcome: InvokeResult) -> None:
        error = outcome.error
        assert error is not None
        lines = "".join(traceback.format_exception(error)).rstrip().splitlines()
        log.error(
            "[%s] ERROR %s: %s (request %s)\n%s",
            spec.logical_id,
            type(error).__name__,
            error,
            outcome.request_id,
            "\n".join(f"[{spec.logical_id}]   {line}" for line in lines),
        )
