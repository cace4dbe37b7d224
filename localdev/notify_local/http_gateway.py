"""API Gateway (REST API, Lambda proxy integration) in front of in-process handlers.

Each `Api` event of the template is a route: its Path template (`/users/{id}`, `/files/{proxy+}`)
and Method (`any` matches every method). A request is matched as API Gateway matches resources:
the most specific resource wins (a literal segment over `{param}` over `{proxy+}`), then the method
on that resource (its own, else ANY). No resource, or a resource without that method, gets API
Gateway's 403 `{"message":"Missing Authentication Token"}`. A handler that raises or returns a
malformed proxy response gets its 502 `{"message": "Internal server error"}`; a body over API
Gateway's 10 MB payload limit its 413. Each of these replies is rendered from the Api resource's
`GatewayResponses` when the template declares one for its type (or the DEFAULT_4XX / DEFAULT_5XX
entry), exactly as API Gateway would: status, static headers, and the `application/json` template
with `$context` variables filled in. Without such an entry, API Gateway's own body is used.

The server takes connections as API Gateway does under a burst: its listen backlog is LISTEN_BACKLOG
(the standard library's default of 5 reset or timed out dozens of 200 concurrent connections).

The event is the REST proxy event (payload 1.0) from `lambda_env.rest_event`: `path` as sent
(still percent-encoded, as REST APIs deliver it), `pathParameters` decoded, multi-value headers and
query parameters, a body that is not UTF-8 base64-encoded with `isBase64Encoded`, and a
requestContext with the stage and a request id. Paths under `/_local/` are the runtime's own
control endpoints (see runtime.py). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from .invoker import Invocation, InvokeResult, Observer
from .lambda_env import rest_event

log = logging.getLogger("notify_local")

LOOPBACK = "127.0.0.1"
MISSING_TOKEN = {"message": "Missing Authentication Token"}
INTERNAL_ERROR = {"message": "Internal server error"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway REST APIs refuse larger request bodies
LISTEN_BACKLOG = 1024

SegmentKind = Literal["literal", "param", "greedy"]
_RANK: dict[str, int] = {"literal": 0, "param": 1, "greedy": 2}


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    value: str  # the literal text, or the parameter's name


@dataclass(frozen=True)
class Route:
    function: str
    event_name: str
    method: str  # upper case, or ANY
    path: str  # the resource path template, e.g. /api/v1/users/{id}
    stage: str = "Prod"

    @property
    def segments(self) -> tuple[Segment, ...]:
        return parse_path_template(self.path)


def parse_path_template(path: str) -> tuple[Segment, ...]:
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    segments: list[Segment] = []
    for i, part in enumerate(parts):
        if part.startswith("{") and part.endswith("+}"):
            if i != len(parts) - 1:
                raise ValueError(f"{path}: a greedy {{name+}} parameter must be the last segment")
            segments.append(Segment("greedy", part[1:-2]))
        elif part.startswith("{") and part.endswith("}"):
            segments.append(Segment("param", part[1:-1]))
        else:
            segments.append(Segment("literal", part))
    return tuple(segments)


def match_path(segments: tuple[Segment, ...], raw_path: str) -> dict[str, str] | None:
    """Path parameters (decoded) if `raw_path` (as sent, percent-encoded) fits the template."""
    trimmed = raw_path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    params: dict[str, str] = {}
    for i, segment in enumerate(segments):
        if segment.kind == "greedy":
            rest = parts[i:]
            if not rest or any(p == "" for p in rest):
                return None
            params[segment.value] = unquote("/".join(rest))
            return params
        if i >= len(parts) or parts[i] == "":
            return None
        if segment.kind == "literal":
            if unquote(parts[i]) != segment.value:
                return None
        else:
            params[segment.value] = unquote(parts[i])
    return params if len(parts) == len(segments) else None


@dataclass(frozen=True)
class Match:
    route: Route
    path_parameters: dict[str, str]


class Router:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self._resources: dict[str, tuple[tuple[Segment, ...], dict[str, Route]]] = {}
        for route in self.routes:
            _, methods = self._resources.setdefault(route.path, (route.segments, {}))
            if route.method in methods:
                other = methods[route.method]
                raise ValueError(
                    f"{route.method} {route.path} is declared twice ({other.function}/{other.event_name} "
                    f"and {route.function}/{route.event_name})"
                )
            methods[route.method] = route

    def resolve(self, method: str, raw_path: str) -> Match | None:
        """The route API Gateway would pick, or None for its 403 Missing Authentication Token."""
        best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
        for path, (segments, _) in self._resources.items():
            params = match_path(segments, raw_path)
            if params is None:
                continue
            rank = tuple(_RANK[s.kind] for s in segments)
            if best is None or rank < best[0]:
                best = (rank, path, params)
        if best is None:
            return None
        methods = self._resources[best[1]][1]
        route = methods.get(method.upper()) or methods.get("ANY")
        return Match(route, best[2]) if route is not None else None


# --------------------------------------------------------------------------- responses


@dataclass
class HttpReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_reply(status: int, data: Any, extra: Iterable[tuple[str, str]] = ()) -> HttpReply:
    return HttpReply(status, [("Content-Type", "application/json"), *extra], json.dumps(data).encode())


def proxy_reply(result: Any) -> HttpReply | None:
    """The HTTP response for a Lambda proxy result; None when API Gateway would call it malformed."""
    if not isinstance(result, dict):
        return None
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return None
    headers = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(headers, dict) or not isinstance(multi, dict):
        return None
    out: list[tuple[str, str]] = []
    # API Gateway merges both; for a name in both, multiValueHeaders' values win.
    for name, value in headers.items():
        if name not in multi and value is not None:
            out.append((str(name), _header_value(value)))
    for name, values in multi.items():
        for value in values if isinstance(values, list) else [values]:
            if value is not None:
                out.append((str(name), _header_value(value)))
    body = result.get("body")
    if body is None:
        data = b""
    elif not isinstance(body, str):
        return None
    elif result.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        data = body.encode("utf-8")
    if not any(name.lower() == "content-type" for name, _ in out):
        out.append(("Content-Type", "application/json"))
    return HttpReply(status, out, data)


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# --------------------------------------------------------------------------- API Gateway's own replies

# response type -> (default status, API Gateway's message, x-amzn-ErrorType)
GATEWAY_ERRORS: dict[str, tuple[int, str, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (
        403,
        "Missing Authentication Token",
        "MissingAuthenticationTokenException",
    ),
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "RequestTooLongException"),
    "INTEGRATION_FAILURE_LAMBDA": (502, "Internal server error", "InternalServerErrorException"),
}
_CONTEXT_VARIABLE = re.compile(r"\$context\.([A-Za-z.]+)")


@dataclass(frozen=True)
class GatewayResponse:
    """One entry of an Api resource's GatewayResponses (values resolved)."""

    status: int | None
    headers: dict[str, str]
    template: str | None  # the application/json response template


def parse_gateway_responses(value: Any) -> dict[str, GatewayResponse]:
    """`GatewayResponses` of an AWS::Serverless::Api as the runtime uses them. Header values must be
    static ('quoted'), as they are in this project; anything else is an error at start."""
    out: dict[str, GatewayResponse] = {}
    for response_type, entry in (value or {}).items():
        headers: dict[str, str] = {}
        for name, raw in ((entry.get("ResponseParameters") or {}).get("Headers") or {}).items():
            text = str(raw)
            if not (len(text) >= 2 and text[0] == text[-1] == "'"):
                raise ValueError(f"GatewayResponses.{response_type}: header {name} must be a 'static' value")
            headers[str(name)] = text[1:-1]
        status = entry.get("StatusCode")
        templates = entry.get("ResponseTemplates") or {}
        out[str(response_type)] = GatewayResponse(
            int(status) if status is not None else None, headers, templates.get("application/json")
        )
    return out


def render_gateway_response(
    responses: dict[str, GatewayResponse], response_type: str, context: dict[str, str]
) -> HttpReply:
    """API Gateway's reply of `response_type` (a key of GATEWAY_ERRORS), shaped by `responses`."""
    default_status, message, error_type = GATEWAY_ERRORS[response_type]
    entry = responses.get(response_type) or responses.get(f"DEFAULT_{str(default_status)[0]}XX")
    values = {
        "error.message": message,
        "error.messageString": json.dumps(message),
        "error.responseType": response_type.removesuffix("_LAMBDA"),
        **context,
    }
    headers = [("x-amzn-ErrorType", error_type)]
    if entry is None:
        return json_reply(default_status, {"message": message}, headers)
    body = json.dumps({"message": message})
    if entry.template is not None:
        body = _CONTEXT_VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), entry.template)
    return HttpReply(
        entry.status or default_status,
        [("Content-Type", "application/json"), *headers, *entry.headers.items()],
        body.encode(),
    )


# --------------------------------------------------------------------------- the server


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True  # idle keep-alive connections must not hold up a stop


Invoke = Callable[[str, dict[str, Any]], InvokeResult]
Control = Callable[[str, str, bytes], HttpReply]


class HttpGateway:
    def __init__(
        self,
        routes: Iterable[Route],
        invoke: Invoke,
        *,
        port: int = 3000,
        control: Control | None = None,
        observers: list[Observer] | None = None,
        gateway_responses: dict[str, GatewayResponse] | None = None,
    ) -> None:
        self.router = Router(routes)
        self.invoke = invoke
        self.control = control
        self.observers = observers if observers is not None else []
        self.gateway_responses = gateway_responses or {}
        self.server = _Server((LOOPBACK, port), _handler_class(self))
        self._thread: threading.Thread | None = None
        self._active = 0  # requests being answered
        self._idle = threading.Condition()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="http-gateway", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let the requests being answered finish (up to `timeout`), close."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout)
        self.server.server_close()

    def gateway_reply(self, response_type: str, context: dict[str, str]) -> HttpReply:
        reply = render_gateway_response(self.gateway_responses, response_type, context)
        reply.headers.append(("x-amzn-RequestId", context["requestId"]))
        return reply

    def serve(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client_ip: str
    ) -> HttpReply:
        with self._idle:
            self._active += 1
        try:
            return self.handle(method, target, headers, body, client_ip)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, client_ip: str
    ) -> HttpReply:
        split = urlsplit(target)
        raw_path = split.path or "/"
        if raw_path.startswith("/_local/") and self.control is not None:
            return self.control(method, raw_path, body)
        api_request_id = str(uuid.uuid4())
        context = {"requestId": api_request_id, "httpMethod": method, "path": raw_path}
        match = self.router.resolve(method, raw_path)
        if match is None:
            reply = self.gateway_reply("MISSING_AUTHENTICATION_TOKEN", context)
            log.info("[gateway] %s %s -> %d (no such route)", method, raw_path, reply.status)
            return reply
        route = match.route
        context["resourcePath"] = route.path
        if len(body) > MAX_PAYLOAD_BYTES:
            reply = self.gateway_reply("REQUEST_TOO_LARGE", context)
            log.info("[gateway] %s %s -> %d (body over 10 MB)", method, raw_path, reply.status)
            return reply
        present = {name.lower() for name, _ in headers}
        extra = [
            (name, value)
            for name, value in (
                ("X-Forwarded-For", client_ip),
                ("X-Forwarded-Port", str(self.port)),
                ("X-Forwarded-Proto", "http"),
            )
            if name.lower() not in present
        ]
        event = rest_event(
            method,
            raw_path,
            resource=route.path,
            path_parameters=match.path_parameters,
            headers=headers + extra,
            query=split.query,
            body=body,
            stage=route.stage,
            source_ip=client_ip,
        )
        event["requestContext"]["requestId"] = api_request_id
        # served at the root, as API Gateway is behind a custom domain: the stage is not in the path
        event["requestContext"]["path"] = raw_path
        outcome = self.invoke(route.function, event)
        proxied = proxy_reply(outcome.result) if outcome.ok else None
        if proxied is None:
            why = "the handler failed" if not outcome.ok else "malformed Lambda proxy response"
            log.info("[%s] %s %s -> 502 (%s) %s", route.function, method, raw_path, why, outcome.describe())
            reply = render_gateway_response(self.gateway_responses, "INTEGRATION_FAILURE_LAMBDA", context)
        else:
            reply = proxied
            log.info(
                "[%s] %s %s -> %d %s", route.function, method, raw_path, reply.status, outcome.describe()
            )
        reply.headers.append(("x-amzn-RequestId", api_request_id))
        for observer in self.observers:
            observer(Invocation("api", f"{method} {route.path}", route.function, event, outcome))
        return reply


def _handler_class(gateway: HttpGateway) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "notify-local"
        # headers and body go out in two writes; with Nagle's algorithm on, a keep-alive client's
        # delayed ACK held every second write back ~40 ms
        disable_nagle_algorithm = True

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _serve(self) -> None:
            body = self._read_body()
            headers = [(k, v) for k, v in self.headers.items() if k.lower() != "transfer-encoding"]
            try:
                reply = gateway.serve(self.command, self.path, headers, body, self.client_address[0])
            except Exception:  # a bug here must not kill the server thread
                log.exception("[gateway] %s %s failed", self.command, self.path)
                reply = json_reply(500, INTERNAL_ERROR)
            self.send_response(reply.status)
            for name, value in reply.headers:
                if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # one line per request is logged by the gateway itself

        def __getattr__(self, name: str) -> Any:
            # any other method (TRACE, CONNECT, made-up ones) is answered as API Gateway answers
            # a method no resource has, not with http.server's 501 page
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

    for method in METHODS:
        setattr(RequestHandler, f"do_{method}", RequestHandler._serve)
    return RequestHandler
