"""API function: API Gateway REST proxy → gate → Powertools resolver → notify_core. Routes stay thin.

Each route declares its scope and its success replies (`routes.get/post/...`, notify_core.openapi);
the errors it can answer, the OpenAPI document and the gate's checks follow from that declaration.
The gate (notify_core.http.gate) runs before the resolver: size, media type, API key, rate limit and
scope, then the body is read once; the resolver validates the parsed body against the route's model.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from notify_core import (
    api_keys,
    audit,
    console,
    dlq,
    health,
    metrics_rollup,
    notifications,
    provider_configs,
    timeline,
    users,
)
from notify_core.auth import ANY_SCOPE, Principal
from notify_core.config import get_settings
from notify_core.errors import DomainError, InternalError, NotFound, ServiceUnavailable, ValidationFailed
from notify_core.fields import Cursor, IdempotencyKeyHeader, Instant, QueryInt, Short, Slug
from notify_core.http import JSON, SECURITY_HEADERS, error_response, gate, proxy_result, raw_body
from notify_core.idempotency import Created, create_once
from notify_core.integrations import callbacks, webhooks
from notify_core.models import (
    AttemptList,
    BatchCreate,
    BatchRejected,
    BatchResult,
    Channel,
    DeadLetterStats,
    Health,
    HealthUnavailable,
    Notification,
    NotificationCreate,
    Page,
    ProviderName,
    Replayed,
    Status,
    User,
    UserCreate,
    UserPatch,
    detail,
)
from notify_core.observability import describe_exception, logger, metrics, tracer
from notify_core.openapi import Routes, swagger_page

TITLE = "Notification platform API"
VERSION = "1.1.0"

get_settings()  # a wrong setting fails the cold start


def _gated_body(_text: str) -> Any:
    """The resolver's validation asks for the JSON body: the gate has read and parsed it already."""
    return app.context.get("body")


# A reply that fails its own declared type is the API's bug: 500 (ResponseValidationError), not 422.
app = APIGatewayRestResolver(
    enable_validation=True, json_body_deserializer=_gated_body, response_validation_error_http_code=500
)
routes = Routes(app)


def json_response(status: int, content: Any) -> Response[str]:
    body = content.model_dump_json() if isinstance(content, BaseModel) else json.dumps(content, default=str)
    return Response(status_code=status, content_type=JSON, body=body)


def no_content() -> Response[str]:
    return Response(HTTPStatus.NO_CONTENT, None, "")


def principal() -> Principal:
    """The caller, admitted by the gate with the route's scope."""
    found = app.context.get("principal")
    assert isinstance(found, Principal), "a route with a scope runs only after the gate admitted a key"
    return found


def _actor() -> audit.Actor:
    """Who acts in an audit event: the admitted key's prefix and API Gateway's request id."""
    return audit.Actor.api_key(principal().key_prefix, app.current_event.request_context.request_id)


# ------------------------------------------------------------------ errors, in one place


@app.exception_handler(DomainError)
def domain_error(exc: DomainError) -> Response[str]:
    return error_response(exc)


def _detail(err: dict[str, Any]) -> dict[str, str]:
    """A resolver validation error as a detail: body paths as in the models, parameters by name
    (headers as documented, e.g. Idempotency-Key)."""
    source, *rest = tuple(err.get("loc") or ("",))  # body, query, path, header or cookie first
    if source == "header" and rest:
        return detail(err, loc=("-".join(part.capitalize() for part in str(rest[0]).split("-")), *rest[1:]))
    return detail(err, loc=tuple(rest) or (source,))


@app.exception_handler(RequestValidationError)
def request_invalid(exc: RequestValidationError) -> Response[str]:
    details = [_detail(err) for err in exc.errors()]
    return error_response(ValidationFailed("the request failed validation", details))


@app.exception_handler([psycopg.DataError, UnicodeError])
def unstorable(exc: Exception) -> Response[str]:
    """Backstop: a value the models let through but the database refuses (out of range, bad
    encoding) is the caller's 422, never a 500. Logged without the database's message or context."""
    logger.warning("database refused a value", extra={"error": describe_exception(exc)})
    metrics.add_metric(name="UnstorableValues", unit="Count", value=1)
    return error_response(
        ValidationFailed(
            "a value in the request cannot be stored",
            [{"field": "body", "message": "a value is out of range or not storable text"}],
        )
    )


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response[str]:
    # logged with the frames and the exception's type only (observability.SafeFormatter)
    logger.exception("unhandled error", extra={"route": app.context.get("route")})
    metrics.add_metric(name="UnhandledErrors", unit="Count", value=1)
    return error_response(InternalError("an internal error occurred; it has been logged"))


@app.not_found
def not_found(exc: Exception) -> Response[str]:
    return error_response(NotFound("no route for this method and path"))


# ------------------------------------------------------------------ public routes


@routes.get(
    "/health",
    scope=None,
    ok={200: Health},
    errors={503: HealthUnavailable},
    summary="Liveness; with deep=1 also PostgreSQL, Redis and SQS reachability",
    tags=["operations"],
)
def get_health(deep: Annotated[Literal["0", "1", "true", "false"] | None, Query()] = None) -> Response[str]:
    report = health.check(deep=deep in ("1", "true"))
    if report["status"] == "ok":
        return json_response(200, report)
    failing = [
        {"field": f"checks.{name}", "message": result}
        for name, result in report["checks"].items()
        if result != "ok"
    ]
    return error_response(ServiceUnavailable("a dependency is unreachable", failing), checks=report["checks"])


@routes.get(
    "/swagger",
    scope=None,
    ok={
        200: {
            "description": "Swagger UI (text/html), or with format=json this OpenAPI document",
            "content": {
                "text/html": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
    summary="This document (format=json) or Swagger UI (HTML)",
    tags=["operations"],
)
def get_swagger(format: Annotated[Literal["json"] | None, Query()] = None) -> Response[str]:
    if format == "json":
        return Response(200, JSON, openapi_json())
    page, policy = swagger_page()
    return Response(200, "text/html; charset=utf-8", page, headers={"Content-Security-Policy": policy})


# ------------------------------------------------------------------ the operator console (issue 14)

_CONSOLE_PAGE = {
    "description": "The console's page (text/html): static, no API key needed to load it",
    "content": {"text/html": {"schema": {"type": "string"}}},
}
_CONSOLE_ASSET = {
    "description": "One of the console's static files (script, style sheet, image, licence)",
    "content": {
        media: {"schema": {"type": "string"}}
        for media in ("text/javascript", "text/css", "image/svg+xml", "text/plain")
    },
}


@routes.get(
    "/console",
    scope=None,
    ok={200: _CONSOLE_PAGE},
    summary="The operator console: sign in with an API key (kept for the tab only)",
    tags=["console"],
)
def get_console() -> Response[str]:
    found = console.page()
    return Response(200, found.content_type, found.body, headers=console.HEADERS)


@routes.get(
    "/console/<asset>",
    scope=None,
    ok={200: _CONSOLE_ASSET},
    summary="The console's static files",
    tags=["console"],
)
def get_console_asset(asset: str) -> Response[str]:
    found = console.asset(asset)
    if found is None:
        raise NotFound(f"the console has no file {asset[:100]!r}")
    return Response(200, found.content_type, found.body, headers=console.HEADERS)


_document: dict[str, Any] | None = None


def _base_path() -> str:
    """Where the API is mounted, as the client sees it: `/<stage>` on API Gateway's own domain, nothing
    behind a custom domain or notify-local (the stage is then not part of the path)."""
    context = app.current_event.request_context
    stage = context.stage
    if stage and stage != "$default" and (context.path or "").startswith(f"/{stage}/"):
        return f"/{stage}"
    return ""


def openapi_json() -> str:
    """The OpenAPI document: generated from the routes once per container, its server per request."""
    global _document
    if _document is None:
        from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

        _document = routes.document(
            app.get_openapi_json_schema(
                title=TITLE,
                version=VERSION,
                description="Send email, SMS and push notifications reliably. Authenticate with an API key.",
                security_schemes={
                    "bearer": HTTPBearer(description="Authorization: Bearer <api key>"),
                    "apiKey": APIKey(name="X-Api-Key", in_=APIKeyIn.header),
                },
            )
        )
    return json.dumps({**_document, "servers": [{"url": _base_path() or "/"}]}, separators=(",", ":"))


# ------------------------------------------------------------------ users


@routes.post(
    "/api/v1/users",
    scope="users:write",
    ok={201: User},
    errors={409: None},
    summary="Create a recipient",
    tags=["users"],
)
def create_user(body: Annotated[UserCreate, Body()]) -> Response[str]:
    return json_response(HTTPStatus.CREATED, users.create_user(principal().tenant_id, body, _actor()))


@routes.get(
    "/api/v1/users/<id>", scope="users:read", ok={200: User}, summary="Read a recipient", tags=["users"]
)
def get_user(id: UUID) -> Response[str]:
    return json_response(200, users.get_user(principal().tenant_id, id))


@routes.patch(
    "/api/v1/users/<id>",
    scope="users:write",
    ok={200: User},
    errors={409: None},
    summary="Change a recipient",
    tags=["users"],
)
def patch_user(id: UUID, body: Annotated[UserPatch, Body()]) -> Response[str]:
    return json_response(200, users.update_user(principal().tenant_id, id, body, _actor()))


@routes.delete(
    "/api/v1/users/<id>", scope="users:write", ok={204: None}, summary="Delete a recipient", tags=["users"]
)
def delete_user(id: UUID) -> Response[str]:
    users.delete_user(principal().tenant_id, id, _actor())
    return no_content()


# ------------------------------------------------------------------ notifications

IdempotencyHeader = Annotated[
    IdempotencyKeyHeader,
    Header(alias="Idempotency-Key", description="The same key and body within 24 h return the first result"),
]


@routes.post(
    "/api/v1/notifications",
    scope="notifications:write",
    ok={200: Notification, 202: Notification},
    errors={409: None},
    summary="Create a notification (202; 200 with the first one for a repeated idempotency key)",
    tags=["notifications"],
)
def create_notification(
    body: Annotated[NotificationCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    (outcome,) = notifications.create(principal().tenant_id, [body], idempotency_key)
    if outcome.error is not None:
        raise outcome.error
    metrics.add_metric(name="NotificationsAccepted", unit="Count", value=0 if outcome.replayed else 1)
    return json_response(200 if outcome.replayed else HTTPStatus.ACCEPTED, outcome.notification)


def _item_details(index: int, error: DomainError) -> list[dict[str, Any]]:
    """An item's field errors as details of the whole request: the same shape, the path prefixed."""
    prefix = f"notifications[{index}]"
    if not error.details:
        return [{"field": prefix, "message": error.message}]
    return [{**d, "field": f"{prefix}.{d['field']}" if d.get("field") else prefix} for d in error.details]


@routes.post(
    "/api/v1/notifications/batch",
    scope="notifications:write",
    ok={202: BatchResult, 207: BatchResult},
    errors={422: BatchRejected},
    summary="Create up to 100 notifications: 202 all accepted, 207 some, 422 none",
    tags=["notifications"],
)
def create_batch(
    body: Annotated[BatchCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    outcomes = notifications.create(principal().tenant_id, body.notifications, idempotency_key, batch=True)
    results = [o.as_batch_item() for o in outcomes]
    failed = [o for o in outcomes if o.error is not None]
    metrics.add_metric(name="NotificationsAccepted", unit="Count", value=len(outcomes) - len(failed))
    summary = {"results": results, "accepted": len(outcomes) - len(failed), "rejected": len(failed)}
    if len(failed) == len(outcomes):
        details = [d for o in failed if o.error is not None for d in _item_details(o.index, o.error)]
        rejected = ValidationFailed("every notification of the batch was rejected", details)
        return error_response(rejected, **summary)
    return json_response(HTTPStatus.MULTI_STATUS if failed else HTTPStatus.ACCEPTED, summary)


@routes.get(
    "/api/v1/notifications",
    scope="notifications:read",
    ok={200: Page[Notification]},
    summary="List notifications, newest first",
    tags=["notifications"],
)
def list_notifications(
    status: Annotated[Status | None, Query()] = None,
    user_id: Annotated[UUID | None, Query()] = None,
    channel: Annotated[Channel | None, Query()] = None,
    category: Annotated[Slug | None, Query(description="a category key")] = None,
    created_after: Annotated[Instant | None, Query(description="accepted at or after this instant")] = None,
    created_before: Annotated[Instant | None, Query(description="accepted before this instant")] = None,
    q: Annotated[
        Short | None,
        Query(description="a notification, user or message id; else the start of the recipient's address"),
    ] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    page = notifications.list_page(
        principal().tenant_id,
        limit=limit,
        cursor=cursor,
        status=status,
        user_id=user_id,
        channel=channel,
        category=category,
        created_after=created_after,
        created_before=created_before,
        q=q,
    )
    return json_response(200, page)


@routes.get(
    "/api/v1/notifications/<id>",
    scope="notifications:read",
    ok={200: Notification},
    summary="Read a notification",
    tags=["notifications"],
)
def get_notification(id: UUID) -> Response[str]:
    return json_response(200, notifications.get(principal().tenant_id, id))


@routes.post(
    "/api/v1/notifications/<id>/cancel",
    scope="notifications:write",
    ok={200: Notification},
    errors={409: None},
    summary="Cancel while not yet sending",
    tags=["notifications"],
)
def cancel_notification(id: UUID) -> Response[str]:
    return json_response(200, notifications.cancel(principal().tenant_id, id, _actor()))


@routes.get(
    "/api/v1/notifications/<id>/attempts",
    scope="notifications:read",
    ok={200: AttemptList},
    summary="Delivery attempts",
    tags=["notifications"],
)
def list_attempts(id: UUID) -> Response[str]:
    rows = notifications.attempts(principal().tenant_id, id)
    return json_response(200, AttemptList(data=rows))


@routes.get(
    "/api/v1/notifications/<id>/timeline",
    scope="notifications:read",
    ok={200: timeline.Timeline},
    summary="Everything about one notification in order: created, queued, held, attempts, provider events,"
    " dead letters, webhook deliveries, audit; with its rendered content",
    tags=["notifications"],
)
def get_timeline(id: UUID) -> Response[str]:
    return json_response(200, timeline.timeline(principal().tenant_id, id))


# ------------------------------------------------------------------ dead letters


@routes.get(
    "/api/v1/dlq",
    scope="dlq:read",
    ok={200: Page[dlq.DeadLetter]},
    summary="Dead letters, newest first",
    tags=["dlq"],
)
def list_dead_letters(
    reason: Annotated[dlq.DeadLetterReason | None, Query()] = None,
    channel: Annotated[Channel | None, Query()] = None,
    provider: Annotated[ProviderName | None, Query()] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    where = dlq.DeadLetterFilter(reason=reason, channel=channel, provider=provider)
    return json_response(200, dlq.list_page(principal().tenant_id, limit=limit, cursor=cursor, where=where))


@routes.get(
    "/api/v1/dlq/stats",
    scope="dlq:read",
    ok={200: DeadLetterStats},
    summary="Dead letters by reason, channel and provider",
    tags=["dlq"],
)
def dead_letter_stats() -> Response[str]:
    return json_response(200, dlq.stats(principal().tenant_id))


@routes.post(
    "/api/v1/dlq/<id>/replay",
    scope="dlq:write",
    ok={202: Replayed},
    errors={409: None},
    summary="Send again with a fresh attempt budget",
    tags=["dlq"],
)
def replay_dead_letter(id: UUID) -> Response[str]:
    return json_response(HTTPStatus.ACCEPTED, dlq.replay(principal().tenant_id, id, _actor()))


@routes.post(
    "/api/v1/dlq/replay",
    scope="dlq:write",
    ok={200: dlq.BulkReplayed},
    summary="Replay the open dead letters matching a filter (or the ids given), at most limit per call",
    tags=["dlq"],
)
def replay_dead_letters(body: Annotated[dlq.BulkReplay, Body()]) -> Response[str]:
    return json_response(200, dlq.replay_many(principal().tenant_id, body, _actor()))


@routes.delete(
    "/api/v1/dlq/<id>", scope="dlq:write", ok={204: None}, summary="Discard a dead letter", tags=["dlq"]
)
def delete_dead_letter(id: UUID) -> Response[str]:
    dlq.delete(principal().tenant_id, id, _actor())
    return no_content()


# ------------------------------------------------------------------ audience (issue 10)
# Templates, categories, preferences, messages, suppressions and one-click unsubscribe; the domain
# is notify_core.audience (and notify_core.suppressions).

from notify_core import suppressions  # noqa: E402
from notify_core.audience import categories, messages, preferences, templates, unsubscribe  # noqa: E402
from notify_core.audience.models import (  # noqa: E402
    UNSUBSCRIBE_ERRORS,
    UNSUBSCRIBE_OK,
    Suppression,
    SuppressionCreate,
    SuppressionReason,
    TemplateKey,
)


def _created(route: str, key: str | None, body: BaseModel, create: Any) -> Response[str]:
    """Run a create once per Idempotency-Key (200 with the first reply on a replay)."""
    created = create_once(
        tenant_id=principal().tenant_id,
        route=route,
        key=key,
        body=body.model_dump(mode="json"),
        create=lambda: Created(HTTPStatus.CREATED, create().model_dump(mode="json")),
    )
    return json_response(created.status, created.body)


@routes.post(
    "/api/v1/templates",
    scope="templates:write",
    ok={201: templates.Template, 200: templates.Template},
    errors={409: None},
    summary="Create a template (version 1); Liquid syntax errors are a 422 with line and column",
    tags=["templates"],
)
def create_template(
    body: Annotated[templates.TemplateCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    return _created(
        "POST /api/v1/templates",
        idempotency_key,
        body,
        lambda: templates.create(principal().tenant_id, body, _actor()),
    )


@routes.get(
    "/api/v1/templates",
    scope="templates:read",
    ok={200: Page[templates.Template]},
    summary="List templates (latest versions), newest first",
    tags=["templates"],
)
def list_templates(
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    return json_response(200, templates.list_page(principal().tenant_id, limit=limit, cursor=cursor))


@routes.get(
    "/api/v1/templates/<key>",
    scope="templates:read",
    ok={200: templates.Template},
    summary="Read a template: the latest version, or ?version=N",
    tags=["templates"],
)
def get_template(
    key: TemplateKey, version: Annotated[QueryInt | None, Query(ge=1, le=1_000_000)] = None
) -> Response[str]:
    return json_response(200, templates.get(principal().tenant_id, key, version))


@routes.put(
    "/api/v1/templates/<key>",
    scope="templates:write",
    ok={200: templates.Template},
    summary="A new version of a template (earlier versions stay readable; restores an archived one)",
    tags=["templates"],
)
def update_template(key: TemplateKey, body: Annotated[templates.TemplateUpdate, Body()]) -> Response[str]:
    return json_response(200, templates.update(principal().tenant_id, key, body, _actor()))


@routes.delete(
    "/api/v1/templates/<key>",
    scope="templates:write",
    ok={204: None},
    summary="Archive a template (sent notifications keep their rendered content)",
    tags=["templates"],
)
def archive_template(key: TemplateKey) -> Response[str]:
    templates.archive(principal().tenant_id, key, _actor())
    return no_content()


@routes.post(
    "/api/v1/templates/<key>/preview",
    scope="templates:read",
    ok={200: templates.Preview},
    summary="Render a template with data, locale and channel; nothing is sent",
    tags=["templates"],
)
def preview_template(key: TemplateKey, body: Annotated[templates.PreviewRequest, Body()]) -> Response[str]:
    return json_response(200, templates.preview(principal().tenant_id, key, body))


@routes.post(
    "/api/v1/categories",
    scope="preferences:write",
    ok={201: categories.Category, 200: categories.Category},
    errors={409: None},
    summary="Create a category (critical ones bypass preferences and quiet hours)",
    tags=["preferences"],
)
def create_category(
    body: Annotated[categories.CategoryCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    return _created(
        "POST /api/v1/categories",
        idempotency_key,
        body,
        lambda: categories.create(principal().tenant_id, body, _actor()),
    )


@routes.get(
    "/api/v1/categories",
    scope="preferences:read",
    ok={200: Page[categories.Category]},
    summary="List categories, newest first",
    tags=["preferences"],
)
def list_categories(
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    return json_response(200, categories.list_page(principal().tenant_id, limit=limit, cursor=cursor))


@routes.get(
    "/api/v1/users/<id>/preferences",
    scope="preferences:read",
    ok={200: preferences.UserPreferences},
    summary="A user's preferences and quiet hours",
    tags=["preferences"],
)
def get_preferences(id: UUID) -> Response[str]:
    return json_response(200, preferences.get(principal().tenant_id, id))


@routes.put(
    "/api/v1/users/<id>/preferences",
    scope="preferences:write",
    ok={200: preferences.UserPreferences},
    summary="Replace a user's preferences (unknown categories are a 422)",
    tags=["preferences"],
)
def put_preferences(id: UUID, body: Annotated[preferences.Preferences, Body()]) -> Response[str]:
    data = body.model_dump(mode="json", exclude_none=True)
    return json_response(200, preferences.replace(principal().tenant_id, id, data, _actor()))


@routes.patch(
    "/api/v1/users/<id>/preferences",
    scope="preferences:write",
    ok={200: preferences.UserPreferences},
    summary="Merge into a user's preferences (JSON Merge Patch: null removes a setting)",
    tags=["preferences"],
)
def patch_preferences(id: UUID, body: Annotated[preferences.PreferencesPatch, Body()]) -> Response[str]:
    data = body.model_dump(mode="json", exclude_unset=True)
    return json_response(200, preferences.replace(principal().tenant_id, id, data, _actor(), patch=True))


@routes.post(
    "/api/v1/messages",
    scope="messages:write",
    ok={202: messages.MessageCreated, 200: messages.MessageCreated},
    errors={409: None},
    summary="Reach up to 100 users through their channels with a template (what is skipped says why)",
    tags=["messages"],
)
def create_message(
    body: Annotated[messages.MessageCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    created = messages.create(principal().tenant_id, body, idempotency_key)
    metrics.add_metric(name="MessagesAccepted", unit="Count", value=0 if created.replayed else 1)
    return json_response(created.status, created.body)


@routes.get(
    "/api/v1/messages/<id>",
    scope="notifications:read",
    ok={200: messages.Message},
    summary="A message and the current status of each of its notifications",
    tags=["messages"],
)
def get_message(id: UUID) -> Response[str]:
    return json_response(200, messages.get(principal().tenant_id, id))


@routes.get(
    "/api/v1/suppressions",
    scope="suppressions:read",
    ok={200: Page[Suppression]},
    summary="Suppressed addresses, newest first; filters channel, reason, address",
    tags=["suppressions"],
)
def list_suppressions(
    channel: Annotated[Channel | None, Query()] = None,
    reason: Annotated[SuppressionReason | None, Query()] = None,
    address: Annotated[Short | None, Query(max_length=4096)] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    rows, next_cursor = suppressions.list_page(
        principal().tenant_id, limit=limit, cursor=cursor, channel=channel, reason=reason, address=address
    )
    return json_response(
        200, Page[Suppression](data=[Suppression.model_validate(r) for r in rows], next_cursor=next_cursor)
    )


@routes.post(
    "/api/v1/suppressions",
    scope="suppressions:write",
    ok={201: Suppression, 200: Suppression},
    errors={409: None},
    summary="Suppress an address (409 if it already is, for this reason)",
    tags=["suppressions"],
)
def create_suppression(
    body: Annotated[SuppressionCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    def create() -> Suppression:
        row = suppressions.create(
            principal().tenant_id, body.channel, body.address, body.reason, _actor(), body.note
        )
        return Suppression.model_validate(row)

    return _created("POST /api/v1/suppressions", idempotency_key, body, create)


@routes.delete(
    "/api/v1/suppressions/<id>",
    scope="suppressions:write",
    ok={204: None},
    summary="Lift a suppression",
    tags=["suppressions"],
)
def delete_suppression(id: UUID) -> Response[str]:
    suppressions.lift(principal().tenant_id, id, _actor())
    return no_content()


def _wants_html() -> bool:
    accept = (app.current_event.headers.get("accept") or "").lower()
    return "text/html" in accept


def _page_reply(status: int, page: str) -> Response[str]:
    return Response(
        status,
        "text/html; charset=utf-8",
        page,
        headers={"Content-Security-Policy": unsubscribe.POLICY, "X-Frame-Options": "DENY"},
    )


def _unsubscribe(token: str, apply: bool) -> Response[str]:
    key = get_settings().unsubscribe_key()
    try:
        claims = unsubscribe.verify(token, key)
        info = unsubscribe.apply(claims) if apply else unsubscribe.describe(claims, done=False)
    except unsubscribe.InvalidToken as exc:
        if _wants_html():
            return _page_reply(404, unsubscribe.page("Link not valid", exc.message, form=False))
        raise
    if _wants_html():
        return _page_reply(200, unsubscribe.confirmation_page(info))
    return json_response(200, info)


@routes.get(
    "/u/<token>",
    scope=None,
    ok={200: UNSUBSCRIBE_OK},
    errors={404: UNSUBSCRIBE_ERRORS},
    summary="One-click unsubscribe: what the link does (an HTML page with its form for browsers)",
    description=(
        "The List-Unsubscribe link of an email (RFC 8058); no API key: the signed token is the authority."
        " With `Accept: text/html` a minimal page (no external assets, a strict Content-Security-Policy)"
        " with the one-click form; otherwise JSON. A forged, damaged or expired token: 404."
    ),
    tags=["unsubscribe"],
)
def get_unsubscribe(token: str) -> Response[str]:
    return _unsubscribe(token, apply=False)


@routes.post(
    "/u/<token>",
    scope=None,
    ok={200: UNSUBSCRIBE_OK},
    errors={404: UNSUBSCRIBE_ERRORS},
    summary="One-click unsubscribe (RFC 8058): turns the email's category off for its user",
    description=(
        "Mail clients POST `List-Unsubscribe=One-Click` (application/x-www-form-urlencoded or"
        " multipart/form-data); the body is not needed. Without a category or a user, the address is"
        " suppressed (reason unsubscribe). Idempotent. A forged, damaged or expired token: 404."
    ),
    tags=["unsubscribe"],
    media_types=("application/json", "application/x-www-form-urlencoded", "multipart/form-data"),
)
def post_unsubscribe(token: str) -> Response[str]:
    return _unsubscribe(token, apply=True)


# ------------------------------------------------------------------ feedback: provider callbacks, events, webhooks
# Provider callbacks are public (scope=None): the provider's signature authenticates them and the
# tenant comes from what was verified. Verification and parsing live on the provider side
# (notify_core.providers.sendgrid_events / twilio_status); storing and effects in
# notify_core.integrations.callbacks.

FORM = "application/x-www-form-urlencoded"
CALLBACK_ERRORS: dict[int, Any] = {400: None, 401: None, 413: None, 415: None, 503: None}


def _request_headers() -> dict[str, str]:
    return {k: v for k, v in (app.current_event.get("headers") or {}).items() if v is not None}


@routes.post(
    "/callbacks/sendgrid",
    scope=None,
    ok={200: callbacks.CallbackResult},
    errors=CALLBACK_ERRORS,
    summary="SendGrid Event Webhook: a JSON array of events, ECDSA-signed (timestamp within 5 minutes)",
    tags=["callbacks"],
)
def sendgrid_callback() -> Response[str]:
    result = callbacks.receive_sendgrid(_request_headers(), raw_body(app.current_event.raw_event))
    return json_response(200, result)


@routes.post(
    "/callbacks/twilio",
    scope=None,
    ok={200: callbacks.CallbackResult},
    errors=CALLBACK_ERRORS,
    summary="Twilio message status callback (form-encoded), X-Twilio-Signature verified against the public URL",
    tags=["callbacks"],
    media_types=(FORM,),
    max_body_bytes=65_536,
)
def twilio_callback() -> Response[str]:
    query = {k: v for k, v in (app.current_event.query_string_parameters or {}).items() if v is not None}
    result = callbacks.receive_twilio(query, _request_headers(), raw_body(app.current_event.raw_event))
    return json_response(200, result)


@routes.get(
    "/api/v1/notifications/<id>/events",
    scope="notifications:read",
    ok={200: Page[callbacks.DeliveryEvent]},
    summary="What providers reported: delivered, bounced, dropped, deferred, opened, clicked, complained, undelivered",
    tags=["notifications"],
)
def list_notification_events(
    id: UUID,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    return json_response(200, callbacks.list_page(principal().tenant_id, id, limit=limit, cursor=cursor))


@routes.post(
    "/api/v1/webhooks",
    scope="webhooks:write",
    ok={200: webhooks.WebhookCreated, 201: webhooks.WebhookCreated},
    errors={409: None},
    summary="Register an endpoint; the reply shows its signing secret once",
    tags=["webhooks"],
)
def create_webhook(
    body: Annotated[webhooks.WebhookCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    tenant_id = principal().tenant_id
    created = create_once(
        tenant_id=tenant_id,
        route="POST /api/v1/webhooks",
        key=idempotency_key,
        body=body.model_dump(mode="json"),
        create=lambda: Created(
            HTTPStatus.CREATED, webhooks.create(tenant_id, body, _actor()).model_dump(mode="json")
        ),
    )
    return json_response(created.status, created.body)


@routes.get(
    "/api/v1/webhooks",
    scope="webhooks:read",
    ok={200: Page[webhooks.Webhook]},
    summary="List endpoints, newest first",
    tags=["webhooks"],
)
def list_webhooks(
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    return json_response(200, webhooks.list_page(principal().tenant_id, limit=limit, cursor=cursor))


@routes.get(
    "/api/v1/webhooks/<id>",
    scope="webhooks:read",
    ok={200: webhooks.Webhook},
    summary="Read an endpoint",
    tags=["webhooks"],
)
def get_webhook(id: UUID) -> Response[str]:
    return json_response(200, webhooks.get(principal().tenant_id, id))


@routes.patch(
    "/api/v1/webhooks/<id>",
    scope="webhooks:write",
    ok={200: webhooks.Webhook},
    summary="Change an endpoint (active: true re-enables one the system disabled)",
    tags=["webhooks"],
)
def patch_webhook(id: UUID, body: Annotated[webhooks.WebhookPatch, Body()]) -> Response[str]:
    return json_response(200, webhooks.update(principal().tenant_id, id, body, _actor()))


@routes.delete(
    "/api/v1/webhooks/<id>",
    scope="webhooks:write",
    ok={204: None},
    summary="Delete an endpoint",
    tags=["webhooks"],
)
def delete_webhook(id: UUID) -> Response[str]:
    webhooks.delete(principal().tenant_id, id, _actor())
    return no_content()


@routes.post(
    "/api/v1/webhooks/<id>/rotate-secret",
    scope="webhooks:write",
    ok={200: webhooks.SecretRotated, 201: webhooks.SecretRotated},
    errors={409: None},
    summary="A new secret, shown once; the old one also signs for 24 h",
    tags=["webhooks"],
)
def rotate_webhook_secret(id: UUID, idempotency_key: IdempotencyHeader = None) -> Response[str]:
    tenant_id = principal().tenant_id
    created = create_once(
        tenant_id=tenant_id,
        route=f"POST /api/v1/webhooks/{id}/rotate-secret",
        key=idempotency_key,
        body={},
        create=lambda: Created(
            HTTPStatus.CREATED, webhooks.rotate_secret(tenant_id, id, _actor()).model_dump(mode="json")
        ),
    )
    return json_response(created.status, created.body)


@routes.post(
    "/api/v1/webhooks/<id>/test",
    scope="webhooks:write",
    ok={200: webhooks.WebhookDelivery, 202: webhooks.WebhookDelivery},
    errors={409: None},
    summary="Send a webhook.test event to this endpoint",
    tags=["webhooks"],
)
def send_test_webhook(id: UUID, idempotency_key: IdempotencyHeader = None) -> Response[str]:
    tenant_id = principal().tenant_id
    created = create_once(
        tenant_id=tenant_id,
        route=f"POST /api/v1/webhooks/{id}/test",
        key=idempotency_key,
        body={},
        create=lambda: Created(
            HTTPStatus.ACCEPTED, webhooks.send_test(tenant_id, id, _actor()).model_dump(mode="json")
        ),
    )
    return json_response(created.status, created.body)


@routes.get(
    "/api/v1/webhooks/<id>/deliveries",
    scope="webhooks:read",
    ok={200: Page[webhooks.WebhookDelivery]},
    summary="Deliveries, newest first, each with its attempts: status code, duration, error, next retry",
    tags=["webhooks"],
)
def list_webhook_deliveries(
    id: UUID,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    page = webhooks.list_deliveries(principal().tenant_id, id, limit=limit, cursor=cursor, status=status)
    return json_response(200, page)


@routes.post(
    "/api/v1/webhooks/<id>/deliveries/<delivery_id>/redeliver",
    scope="webhooks:write",
    ok={200: webhooks.WebhookDelivery, 202: webhooks.WebhookDelivery},
    errors={409: None},
    summary="Send a delivery's event again (same webhook-id)",
    tags=["webhooks"],
)
def redeliver_webhook(
    id: UUID, delivery_id: UUID, idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    tenant_id = principal().tenant_id
    created = create_once(
        tenant_id=tenant_id,
        route=f"POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        key=idempotency_key,
        body={},
        create=lambda: Created(
            HTTPStatus.ACCEPTED,
            webhooks.redeliver(tenant_id, id, delivery_id, _actor()).model_dump(mode="json"),
        ),
    )
    return json_response(created.status, created.body)


# ------------------------------------------------------------------ operating: provider configs, API keys,
# audit log, metrics (issue 12)


@routes.post(
    "/api/v1/provider-configs",
    scope="providers:admin",
    ok={200: provider_configs.ProviderConfig, 201: provider_configs.ProviderConfig},
    errors={409: None},
    summary="Add a provider to one of the tenant's channel routes (credentials are write-only)",
    tags=["providers"],
)
def create_provider_config(
    body: Annotated[provider_configs.ProviderConfigCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    tenant_id = principal().tenant_id
    who = _actor()
    raw = dict(app.context.get("body") or {})
    raw["credentials"] = sorted(raw.get("credentials") or {})  # the replay check never sees credentials
    created = create_once(
        tenant_id=tenant_id,
        route="provider-configs",
        key=idempotency_key,
        body=raw,
        create=lambda: Created(
            HTTPStatus.CREATED, provider_configs.create(tenant_id, body, who).model_dump(mode="json")
        ),
    )
    return json_response(created.status, created.body)


@routes.get(
    "/api/v1/provider-configs",
    scope="providers:admin",
    ok={200: Page[provider_configs.ProviderConfig]},
    summary="The tenant's provider configs (never their credentials), newest first",
    tags=["providers"],
)
def list_provider_configs(
    channel: Annotated[Channel | None, Query()] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    page = provider_configs.list_page(principal().tenant_id, limit=limit, cursor=cursor, channel=channel)
    return json_response(200, page)


@routes.get(
    "/api/v1/provider-configs/<id>",
    scope="providers:admin",
    ok={200: provider_configs.ProviderConfig},
    summary="Read a provider config (never its credentials)",
    tags=["providers"],
)
def get_provider_config(id: UUID) -> Response[str]:
    return json_response(200, provider_configs.get(principal().tenant_id, id))


@routes.patch(
    "/api/v1/provider-configs/<id>",
    scope="providers:admin",
    ok={200: provider_configs.ProviderConfig},
    errors={409: None},
    summary="Change a provider config's priority, settings, credentials or active flag",
    tags=["providers"],
)
def patch_provider_config(
    id: UUID, body: Annotated[provider_configs.ProviderConfigPatch, Body()]
) -> Response[str]:
    return json_response(200, provider_configs.update(principal().tenant_id, id, body, _actor()))


@routes.delete(
    "/api/v1/provider-configs/<id>",
    scope="providers:admin",
    ok={204: None},
    summary="Remove a provider config and its credentials",
    tags=["providers"],
)
def delete_provider_config(id: UUID) -> Response[str]:
    provider_configs.delete(principal().tenant_id, id, _actor())
    return no_content()


@routes.post(
    "/api/v1/api-keys",
    scope="keys:admin",
    ok={200: api_keys.ApiKeyCreated, 201: api_keys.ApiKeyCreated},
    errors={409: None},
    summary="Create an API key with some of this key's scopes; the key is shown once",
    tags=["api keys"],
)
def create_api_key(
    body: Annotated[api_keys.ApiKeyCreate, Body()], idempotency_key: IdempotencyHeader = None
) -> Response[str]:
    caller, who = principal(), _actor()
    issued: dict[str, str] = {}

    def create() -> Created:
        record, issued["key"] = api_keys.create(caller, body, who)
        return Created(HTTPStatus.CREATED, record.model_dump(mode="json"))  # stored for replays: no key

    created = create_once(
        tenant_id=caller.tenant_id,
        route="api-keys",
        key=idempotency_key,
        body=app.context.get("body"),
        create=create,
    )
    return json_response(
        created.status, {**created.body, "key": None if created.replayed else issued.get("key")}
    )


@routes.get(
    "/api/v1/api-keys",
    scope="keys:admin",
    ok={200: Page[api_keys.ApiKey]},
    summary="The tenant's API keys (prefixes, scopes, last use), newest first",
    tags=["api keys"],
)
def list_api_keys(
    revoked: Annotated[Literal["true", "false"] | None, Query(description="include revoked keys")] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    page = api_keys.list_page(principal().tenant_id, limit=limit, cursor=cursor, revoked=revoked == "true")
    return json_response(200, page)


@routes.delete(
    "/api/v1/api-keys/<id>",
    scope="keys:admin",
    ok={204: None},
    summary="Revoke an API key (effective within API_KEY_CACHE_SECONDS)",
    tags=["api keys"],
)
def revoke_api_key(id: UUID) -> Response[str]:
    api_keys.revoke(principal().tenant_id, id, _actor())
    return no_content()


@routes.get(
    "/api/v1/whoami",
    scope=ANY_SCOPE,
    ok={200: api_keys.WhoAmI},
    errors={404: None},
    summary="The calling key: its tenant, prefix, scopes and rate limit (any valid key may ask)",
    tags=["api keys"],
)
def get_whoami() -> Response[str]:
    return json_response(200, api_keys.whoami(principal()))


@routes.get(
    "/api/v1/audit-events",
    scope="audit:read",
    ok={200: Page[audit.AuditEvent]},
    summary="Who changed what, newest first",
    tags=["audit"],
)
def list_audit_events(
    action: Annotated[Slug | None, Query(description="e.g. api_key.revoke")] = None,
    target_type: Annotated[Slug | None, Query(description="e.g. provider_config")] = None,
    target_id: Annotated[Short | None, Query()] = None,
    actor: Annotated[Slug | None, Query(description="an API key prefix, cli or system")] = None,
    limit: Annotated[QueryInt, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Cursor | None, Query()] = None,
) -> Response[str]:
    page = audit.list_page(
        principal().tenant_id,
        limit=limit,
        cursor=cursor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        actor=actor,
    )
    return json_response(200, page)


@routes.get(
    "/api/v1/metrics",
    scope="metrics:read",
    ok={200: metrics_rollup.MetricsReport},
    summary="Notifications per hour or day, by channel/provider/status/category, with accepted→sent percentiles",
    tags=["metrics"],
)
def get_metrics(
    from_: Annotated[Instant | None, Query(alias="from", description="default: 24 hours before to")] = None,
    to: Annotated[Instant | None, Query(description="default: now")] = None,
    granularity: Annotated[metrics_rollup.Granularity, Query()] = "hour",
    group_by: Annotated[
        metrics_rollup.GroupBy | None, Query(description="comma-separated dimensions")
    ] = None,
) -> Response[str]:
    report = metrics_rollup.query(principal().tenant_id, from_, to, granularity, group_by)
    return json_response(200, report)


# ------------------------------------------------------------------ entry point


def _admitted(found: Principal) -> None:
    app.append_context(principal=found)
    logger.append_keys(api_key=found.key_prefix, tenant_id=str(found.tenant_id))


def _finish(result: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    multi = result.setdefault("multiValueHeaders", {})
    for name, value in {**extra, **SECURITY_HEADERS}.items():
        multi[name] = [value]
    return result


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    app.clear_context()
    route = routes.match(str(event.get("httpMethod", "")), str(event.get("path", "")))
    if route is not None:
        app.append_context(route=f"{route.method} {route.path}")
    try:
        admitted = gate(event, route.gate if route else None, on_admitted=_admitted)
    except DomainError as exc:
        app.clear_context()
        return _finish(proxy_result(error_response(exc)), {})
    app.append_context(body=admitted.body)
    return _finish(app.resolve(event, context), admitted.headers)
