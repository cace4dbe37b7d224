"""Routes that document themselves: each route declares its scope and its success replies; the
errors it can answer follow from what it is, so the OpenAPI document lists every status a route
really returns, each error with the contract's envelope and an example.

    routes = Routes(app)

    @routes.post("/api/v1/users", scope="users:write", ok={201: User}, errors={409: None},
                 summary="Create a recipient", tags=["users"])
    def create_user(body: Annotated[UserCreate, Body()]) -> Response[str]: ...

What each route answers besides its `ok` statuses:

* every route: 500;
* a route with a scope (not public): 401, 403, 429 and 503 (the gate: key, scope, rate limit, a
  rate limiter failing closed);
* a route that takes a body: 400, 413, 415 and 422 (the gate and validation);
* a route with path, query or header parameters: 422; with a path parameter also 404;
* `errors`: whatever else the route's domain call raises (409, ...), each with the envelope or a
  model of its own (a subclass of ErrorEnvelope).

`Routes.match` tells the gate, before the resolver runs, the scope and whether a body is read.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.openapi.params import Body, Param

from .auth import ANY_SCOPE
from .http import Gate
from .models import ErrorEnvelope

# status -> (description, error code, example message)
ERRORS: dict[int, tuple[str, str, str]] = {
    400: (
        "The body is not JSON this API reads: not UTF-8, malformed, nested too deep, a number too long",
        "validation_error",
        "the request body is not valid JSON: Expecting value at line 1 column 1",
    ),
    401: ("No API key, or an unknown or revoked one", "unauthorized", "the API key is unknown or revoked"),
    403: ("The API key lacks the scope this route needs", "forbidden", "this API key lacks the scope"),
    404: ("No such resource for this API key's tenant", "not_found", "not found"),
    409: (
        "The resource's state does not allow this, or the idempotency key was used with another body",
        "conflict",
        "a notification in status 'sent' can no longer be cancelled",
    ),
    413: ("The body is larger than MAX_BODY_BYTES", "payload_too_large", "the request body is too large"),
    415: (
        "The body is not sent as application/json",
        "unsupported_media_type",
        "send JSON with 'Content-Type: application/json'",
    ),
    422: ("A field is invalid: one detail per field", "validation_error", "request body failed validation"),
    429: (
        "Over the API key's rate limit, or too many failed authentications from this address",
        "rate_limited",
        "rate limit of 600 requests exceeded; retry in 2 s",
    ),
    500: ("An unexpected error; it has been logged", "internal_error", "an internal error occurred"),
    503: (
        "A dependency is unavailable (the rate limiter, when RATE_LIMIT_FAIL_MODE is closed)",
        "service_unavailable",
        "the rate limiter is unavailable; retry shortly",
    ),
}
GATE_ERRORS = (401, 403, 429, 503)
BODY_ERRORS = (400, 413, 415, 422)

SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]

_HEADERS_429 = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
}


def error_example(status: int, code: str | None = None, message: str | None = None) -> dict[str, Any]:
    _, default_code, default_message = ERRORS[status]
    field = {400: "body", 413: "body", 415: "Content-Type", 422: "payload.to", 429: "api_key"}.get(status)
    details = [{"field": field, "message": "..."}] if field else []
    return {
        "error": {"code": code or default_code, "message": message or default_message, "details": details}
    }


def _error_response(status: int, model: Any, *, as_ref: bool = False) -> dict[str, Any]:
    """The documented reply for an error status: the envelope (or `model`, a subclass), an example.
    `as_ref`: the schema as a reference to its component, as it stands in the final document.
    A dict is a whole response object of the route's own (an HTML page beside the envelope)."""
    if isinstance(model, dict):
        return model
    description, code, _ = ERRORS[status]
    model = model or ErrorEnvelope
    schema: dict[str, Any] = (
        {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}} if as_ref else {"model": model}
    )
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {**schema, "examples": {code: {"value": error_example(status)}}}},
    }
    if status == 429:
        response["headers"] = _HEADERS_429
    return response


def _success_response(status: int, model: Any) -> dict[str, Any]:
    """`model`: a pydantic model, None (no body), or a whole OpenAPI response object (a dict)."""
    if isinstance(model, dict):
        return model
    description = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 207: "Some accepted"}
    response: dict[str, Any] = {"description": description.get(status, "Success")}
    if model is not None:
        response["content"] = {"application/json": {"model": model}}
    return response


@dataclass(frozen=True, slots=True)
class RouteSpec:
    method: str
    path: str  # as the resolver takes it: /api/v1/users/<id>
    gate: Gate
    statuses: frozenset[int]
    success: Mapping[int, Any]
    errors: Mapping[int, Any]
    pattern: re.Pattern[str]


def _parameters(func: Callable[..., Any]) -> tuple[bool, bool]:
    """(takes a body, has query/header/path parameters), from the route function's annotations."""
    hints = typing.get_type_hints(func, include_extras=True)
    takes_body = has_params = False
    for name in inspect.signature(func).parameters:
        for meta in getattr(hints.get(name), "__metadata__", ()):
            if isinstance(meta, Body):
                takes_body = True
            elif isinstance(meta, Param):
                has_params = True
    return takes_body, has_params


class Routes:
    """Declares routes on a Powertools resolver with their scope and every reply they can give."""

    def __init__(self, app: APIGatewayRestResolver) -> None:
        self.app = app
        self.specs: list[RouteSpec] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        scope: str | None,
        ok: Mapping[int, Any],
        errors: Mapping[int, Any] | None = None,
        summary: str,
        description: str | None = None,
        tags: list[str] | None = None,
        media_types: tuple[str, ...] = ("application/json",),
        max_body_bytes: int | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """`scope=None` makes a public route (no key, no security in the document). `ok` maps each
        success status to its model (None: no body); `errors` adds statuses the domain raises.
        `media_types` / `max_body_bytes`: what the gate lets through (form posts: one-click
        unsubscribe, provider callbacks) and a body limit below MAX_BODY_BYTES."""

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            takes_body, has_params = _parameters(func)
            path_params = "<" in path
            statuses: dict[int, Any] = {500: None}
            if scope is not None:
                statuses.update(
                    dict.fromkeys(s for s in GATE_ERRORS if not (s == 403 and scope == ANY_SCOPE))
                )
            if takes_body:
                statuses.update(dict.fromkeys(BODY_ERRORS))
            if has_params or path_params:
                statuses[422] = None
            if path_params:
                statuses[404] = None
            statuses.update(errors or {})
            responses: dict[int, Any] = {
                status: _success_response(status, model) for status, model in ok.items()
            }
            responses.update({s: _error_response(s, m) for s, m in sorted(statuses.items())})
            self.app.route(
                path,
                method.upper(),
                summary=summary,
                description=description,
                tags=tags,
                responses=responses,
                security=SECURITY if scope is not None else None,
            )(func)
            regex = "^" + re.sub(r"<(\w+)>", r"(?P<\1>[^/]+)", path) + "$"
            self.specs.append(
                RouteSpec(
                    method.upper(),
                    path,
                    Gate(scope, takes_body, media_types, max_body_bytes),
                    frozenset(responses),
                    dict(ok),
                    statuses,
                    re.compile(regex),
                )
            )
            return func

        return register

    def get(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("POST", path, **kwargs)

    # audience (issue 10): PUT routes (a new template version, a user's preferences)
    def put(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("PUT", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return self.route("DELETE", path, **kwargs)

    def match(self, method: str, path: str) -> RouteSpec | None:
        """The route the resolver will call for `method` and `path`, or None (its not-found reply)."""
        method = method.upper()
        for spec in self.specs:
            if spec.method == method and spec.pattern.match(path):
                return spec
        return None

    def document(self, generated: str) -> dict[str, Any]:
        """The resolver's generated document, trimmed to the truth: Powertools adds a 422 (and with
        response validation a 500) with bodies of its own to every operation; here an operation keeps
        only the statuses its route declared, each error with the envelope, and Powertools' schemas go."""
        doc = json.loads(generated)
        declared = {(m, p): s for s in self.specs for m, p in operations([s])}
        for path, items in doc.get("paths", {}).items():
            for method, operation in items.items():
                spec = declared.get((method.upper(), path))
                if spec is None:
                    continue
                responses = {c: r for c, r in operation["responses"].items() if int(c) in spec.statuses}
                for status, model in spec.success.items():
                    if model is None:  # Powertools fills a missing content from the return annotation
                        responses[str(status)].pop("content", None)
                for status, model in spec.errors.items():
                    responses[str(status)] = _error_response(status, model, as_ref=True)
                operation["responses"] = dict(sorted(responses.items()))
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
            schemas.pop(name, None)
        return doc


def operations(specs: Iterable[RouteSpec]) -> list[tuple[str, str]]:
    """(METHOD, /path/{param}) of each route, in the template's notation."""
    return [(s.method, re.sub(r"<(\w+)>", r"{\1}", s.path)) for s in specs]


# ---------------------------------------------------------------- Swagger UI, without any CDN

_ASSETS = Path(inspect.getfile(APIGatewayRestResolver)).parent / "openapi" / "swagger_ui"
_INIT = """
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: window.location.pathname + "?format=json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    docExpansion: "list",
    filter: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
"""


def _sha256(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@cache
def swagger_page() -> tuple[str, str]:
    """Swagger UI's page (its script and style inline, from the Powertools package: no CDN, nothing
    from the internet; no validator badge, which would send the document's URL to a public service)
    and the Content-Security-Policy that allows exactly those two scripts and nothing external."""
    script = (_ASSETS / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    style = (_ASSETS / "swagger-ui.min.css").read_text(encoding="utf-8")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>Notification platform API</title>\n"
        f'<style>{style}</style>\n</head>\n<body>\n<div id="swagger-ui"></div>\n'
        f"<script>{script}</script>\n<script>{_INIT}</script>\n</body>\n</html>\n"
    )
    policy = (
        f"default-src 'none'; script-src {_sha256(script)} {_sha256(_INIT)}; "
        "style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, policy
