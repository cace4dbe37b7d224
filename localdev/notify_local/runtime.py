"""The local runtime: what AWS does with template.yaml's functions, in one process.

`discover(stack)` reads every AWS::Serverless::Function (Globals applied) and its events:

* `Api`      -> a route of the HTTP gateway (http_gateway.py)
* `SQS`      -> a poller behaving as Lambda's event source mapping (pollers.py)
* `Schedule` / `ScheduleV2` -> a timer firing the EventBridge scheduled event (schedules.py)

Other event types are reported and skipped. `Runtime` starts them all and invokes the handlers in
this process (invoker.py). It does not touch os.environ: the caller (cli.py, or a test's sandbox)
sets the functions' environment first.

Control endpoints, on the gateway's port:

* `POST /_local/schedules/<Function>[/<Event>]` fires that function's schedule(s) now (also a
  disabled one: it is an explicit request) and answers with each invocation's result;
* `GET /_local/status` lists functions, routes, event sources and the next firing times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .http_gateway import GatewayResponse, HttpGateway, HttpReply, Route, json_reply, parse_gateway_responses
from .invoker import FunctionSpec, Invocation, Invoker, InvokeResult, Observer
from .pollers import SqsPoller, SqsSource
from .schedules import ScheduleError, Scheduler, ScheduleSpec, schedule_spec
from .stack import NO_VALUE, TEMPLATE, Stack

log = logging.getLogger("notify_local")

EVENT_KINDS = ("api", "sqs", "schedule")
DEFAULT_MAX_CONCURRENCY = 2  # the lowest MaximumConcurrency AWS accepts


class TemplateError(ValueError):
    """The template asks for something AWS would reject or this runtime cannot do."""


@dataclass
class Discovery:
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    sources: list[SqsSource] = field(default_factory=list)
    schedules: list[ScheduleSpec] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    # the API's GatewayResponses (the first AWS::Serverless::Api declaring any): the runtime serves
    # every route on one port, so API Gateway's own replies follow one API's declaration
    gateway_responses: dict[str, GatewayResponse] = field(default_factory=dict)


def _resolved(stack: Stack, value: Any, default: Any = None) -> Any:
    if value is None:
        return default
    resolved = stack.resolve(value)
    return default if resolved is NO_VALUE else resolved


def _stage_of(stack: Stack, rest_api_id: Any) -> str:
    """The stage an Api event is served under: its RestApiId's StageName, else SAM's implicit Prod."""
    if isinstance(rest_api_id, dict) and "Ref" in rest_api_id:
        api = stack.resources().get(rest_api_id["Ref"], {})
        stage = _resolved(stack, api.get("Properties", {}).get("StageName"))
        if stage:
            return str(stage)
    return "Prod"


def _bool(value: Any, default: bool = True) -> bool:
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no")
    return bool(value)


def discover(stack: Stack, template_dir: Path | None = None) -> Discovery:
    """Functions and their event sources. SQS events need the stack's queues created first."""
    base = (template_dir or TEMPLATE.parent).resolve()
    found = Discovery()
    for api_id, api in stack.resources("AWS::Serverless::Api").items():
        declared = _resolved(stack, api.get("Properties", {}).get("GatewayResponses"), {})
        if declared and not found.gateway_responses:
            try:
                found.gateway_responses = parse_gateway_responses(declared)
            except ValueError as exc:
                raise TemplateError(f"{api_id}: {exc}") from exc
    globals_ = stack.template.get("Globals", {}).get("Function", {})
    by_arn = {q.arn: q for q in stack.queues.values()}
    for logical_id, resource in stack.resources("AWS::Serverless::Function").items():
        if "Condition" in resource and not stack.condition(resource["Condition"]):
            found.skipped.append(f"{logical_id}: its Condition {resource['Condition']} is false")
            continue
        props = {**globals_, **resource.get("Properties", {})}
        runtime = str(_resolved(stack, props.get("Runtime"), ""))
        if not runtime.startswith("python"):
            found.skipped.append(f"{logical_id}: runtime {runtime or '(none)'} is not Python")
            continue
        code_uri = _resolved(stack, props.get("CodeUri"))
        handler = _resolved(stack, props.get("Handler"))
        if not isinstance(code_uri, str) or not isinstance(handler, str):
            found.skipped.append(f"{logical_id}: needs a local CodeUri folder and a Handler")
            continue
        found.functions[logical_id] = FunctionSpec(
            logical_id,
            str((base / code_uri).resolve()),
            handler,
            timeout=float(_resolved(stack, props.get("Timeout"), 3)),
            memory=int(_resolved(stack, props.get("MemorySize"), 128)),
            runtime=runtime,
        )
        for event_name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            kind = event.get("Type")
            raw = event.get("Properties", {})
            where = f"{logical_id}/{event_name}"
            if kind == "Api":
                found.routes.append(
                    Route(
                        logical_id,
                        event_name,
                        str(_resolved(stack, raw.get("Method"))).upper(),
                        str(_resolved(stack, raw.get("Path"))),
                        _stage_of(stack, raw.get("RestApiId")),
                    )
                )
            elif kind == "SQS":
                found.sources.append(_sqs_source(stack, logical_id, event_name, raw, by_arn))
            elif kind in ("Schedule", "ScheduleV2"):
                try:
                    props_resolved = {k: _resolved(stack, v) for k, v in raw.items()}
                    found.schedules.append(
                        schedule_spec(stack.name, logical_id, event_name, kind, props_resolved)
                    )
                except ScheduleError as exc:
                    raise TemplateError(f"{where}: {exc}") from exc
            else:
                found.skipped.append(f"{where}: event type {kind} is not run locally")
    return found


def _sqs_source(
    stack: Stack, function: str, event_name: str, raw: dict[str, Any], by_arn: dict[str, Any]
) -> SqsSource:
    where = f"{function}/{event_name}"
    arn = _resolved(stack, raw.get("Queue"))
    queue = by_arn.get(str(arn))
    if queue is None:
        raise TemplateError(f"{where}: queue {arn} is not one of the stack's queues (create_queues first)")
    batch_size = int(_resolved(stack, raw.get("BatchSize"), 10))
    window = float(_resolved(stack, raw.get("MaximumBatchingWindowInSeconds"), 0))
    fifo = queue.name.endswith(".fifo")
    if not 1 <= batch_size <= (10 if fifo else 10_000):
        raise TemplateError(f"{where}: BatchSize {batch_size} is outside 1-{10 if fifo else 10_000}")
    if batch_size > 10 and window < 1:
        raise TemplateError(
            f"{where}: a BatchSize above 10 needs MaximumBatchingWindowInSeconds >= 1 (AWS rule)"
        )
    if not 0 <= window <= 300:
        raise TemplateError(f"{where}: MaximumBatchingWindowInSeconds must be 0-300")
    scaling = _resolved(stack, raw.get("ScalingConfig"), {}) or {}
    concurrency = int(scaling.get("MaximumConcurrency", DEFAULT_MAX_CONCURRENCY))
    if raw.get("FilterCriteria"):
        log.warning(
            "[%s] FilterCriteria is not applied locally: every message reaches the function", function
        )
    return SqsSource(
        function,
        event_name,
        queue.name,
        queue.url,
        queue.arn,
        batch_size=batch_size,
        batching_window=window,
        report_failures="ReportBatchItemFailures"
        in (_resolved(stack, raw.get("FunctionResponseTypes"), []) or []),
        max_concurrency=max(1, concurrency),
        enabled=_bool(_resolved(stack, raw.get("Enabled"))),
    )


class Runtime:
    """Serve the API, run the pollers and fire the schedules of a stack until `stop()`."""

    def __init__(
        self,
        stack: Stack,
        sqs: Any,
        *,
        port: int = 3000,
        template_dir: Path | None = None,
        kinds: tuple[str, ...] = EVENT_KINDS,
        functions: set[str] | None = None,
        schedule_speedup: float = 1.0,
        poll_wait: int = 20,
        observers: list[Observer] | None = None,
    ) -> None:
        self.stack = stack
        self.sqs = sqs
        self.discovery = discover(stack, template_dir)
        chosen = set(self.discovery.functions) if functions is None else set(functions)
        unknown = chosen - set(self.discovery.functions)
        if unknown:
            raise TemplateError(
                f"unknown function(s) {sorted(unknown)}; known: {sorted(self.discovery.functions)}"
            )
        self.observers: list[Observer] = observers if observers is not None else []
        self.invoker = Invoker(self.discovery.functions)
        self.routes = [r for r in self.discovery.routes if "api" in kinds and r.function in chosen]
        self.sources = [
            s for s in self.discovery.sources if "sqs" in kinds and s.function in chosen and s.enabled
        ]
        self.schedules = [s for s in self.discovery.schedules if s.function in chosen]
        self.gateway = HttpGateway(
            self.routes,
            self.invoke,
            port=port,
            control=self._control,
            observers=self.observers,
            gateway_responses=self.discovery.gateway_responses,
        )
        self.pollers = [
            SqsPoller(s, sqs, self.invoke, poll_wait=poll_wait, observers=self.observers)
            for s in self.sources
        ]
        self.scheduler = Scheduler(
            [s for s in self.schedules if "schedule" in kinds],
            self.invoke,
            speedup=schedule_speedup,
            observers=self.observers,
        )
        self._started = False

    @property
    def url(self) -> str:
        return self.gateway.url

    def invoke(self, function: str, event: Any) -> InvokeResult:
        return self.invoker.invoke(function, event)

    def warm(self, functions: list[str] | None = None) -> dict[str, BaseException]:
        """Import handlers now, so that the first request is no cold start and an import error shows
        at start. A function that cannot be imported is logged (its invocations fail); the rest run."""
        failed: dict[str, BaseException] = {}
        for name in functions or list(self.discovery.functions):
            try:
                self.invoker.warm(name)
            except Exception as exc:  # noqa: BLE001 - reported; the other functions keep running
                failed[name] = exc
                log.error("[%s] cannot be imported: %s: %s", name, type(exc).__name__, exc)
        return failed

    def start(self) -> None:
        self.gateway.start()
        for poller in self.pollers:
            poller.start()
        self.scheduler.start()
        self._started = True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work, let invocations in flight finish (up to `timeout`), close the port."""
        for poller in self.pollers:
            poller.stop()
        self.scheduler.stop()
        self.gateway.stop()
        for poller in self.pollers:
            poller.join(timeout)
        self.scheduler.join(timeout)
        self._started = False

    def trigger(self, function: str, event_name: str | None = None) -> list[Invocation]:
        """Fire a function's schedule(s) now, whatever their expression or state."""
        specs = [
            s
            for s in self.schedules
            if s.function == function and (event_name is None or s.event_name == event_name)
        ]
        if not specs:
            raise KeyError(f"{function}{'/' + event_name if event_name else ''} has no Schedule event")
        return [self.scheduler.fire(spec, manual=True) for spec in specs]

    def status(self) -> dict[str, Any]:
        return {
            "functions": {
                name: {
                    "handler": spec.handler,
                    "timeout": spec.timeout,
                    "memory": spec.memory,
                    "environments": self.invoker.pools[name].created,
                }
                for name, spec in self.discovery.functions.items()
            },
            "routes": [f"{r.method} {r.path} -> {r.function}" for r in self.routes],
            "sqs": [
                {
                    "function": s.function,
                    "queue": s.queue_name,
                    "batch_size": s.batch_size,
                    "window": s.batching_window,
                    "report_failures": s.report_failures,
                    "concurrency": s.max_concurrency,
                }
                for s in self.sources
            ],
            "schedules": [
                {
                    "function": s.function,
                    "event": s.event_name,
                    "expression": s.expression.text,
                    "enabled": s.enabled,
                    "next": _iso(self.scheduler.next_fire.get(s.label)),
                }
                for s in self.schedules
            ],
            "skipped": self.discovery.skipped,
        }

    def _control(self, method: str, path: str, body: bytes) -> HttpReply:
        parts = [p for p in path.split("/") if p][1:]  # drop "_local"
        if method == "GET" and parts == ["status"]:
            return json_reply(200, self.status())
        if method == "POST" and len(parts) in (2, 3) and parts[0] == "schedules":
            try:
                invocations = self.trigger(parts[1], parts[2] if len(parts) == 3 else None)
            except KeyError as exc:
                return json_reply(404, {"message": str(exc.args[0])})
            return json_reply(
                200,
                {
                    "invocations": [
                        {
                            "schedule": inv.source,
                            "request_id": inv.outcome.request_id,
                            "event": inv.event,
                            "result": inv.outcome.result,
                            "error": None if inv.outcome.ok else repr(inv.outcome.error),
                            "duration_ms": round(inv.outcome.duration_ms, 1),
                        }
                        for inv in invocations
                    ]
                },
            )
        return json_reply(404, {"message": f"no local control endpoint {method} {path}"})


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None
