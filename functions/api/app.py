"""API function: API Gateway REST proxy → Powertools resolver → notify_core. Routes stay thin."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from notify_core import dlq, health, notifications, users
from notify_core.config import get_settings
from notify_core.errors import DomainError
from notify_core.http import JSON, RateLimitExceeded, admit, check_body, error_body
from notify_core.models import (
    BatchCreate,
    Channel,
    NotificationCreate,
    Status,
    UserCreate,
    UserPatch,
    field_path,
)
from notify_core.observability import logger, metrics, tracer

PUBLIC_PATHS = frozenset({"/health", "/swagger"})

get_settings()  # a wrong setting fails the cold start

app = APIGatewayRestResolver(enable_validation=True)
_swagger_enabled = False


def _enable_swagger() -> None:
    """Register /swagger on its first request. Powertools' OpenAPI models take ~140 ms to import;
    a cold start that serves anything else should not pay for them."""
    global _swagger_enabled
    if _swagger_enabled:
        return
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

    app.enable_swagger(
        path="/swagger",
        title="Notification platform API",
        version="1.0.0",
        description="Send email, SMS and push notifications reliably. Authenticate with an API key.",
        security_schemes={
            "bearer": HTTPBearer(description="Authorization: Bearer <api key>"),
            "apiKey": APIKey(name="X-Api-Key", in_=APIKeyIn.header),
        },
        security=[{"bearer": []}, {"apiKey": []}],
    )
    _swagger_enabled = True


def json_response(status: int, content: Any) -> Response[str]:
    body = content.model_dump_json() if isinstance(content, BaseModel) else json.dumps(content, default=str)
    return Response(status_code=status, content_type=JSON, body=body)


def caller(scope: str) -> Any:
    principal = app.context["principal"]
    principal.require(scope)
    return principal


# ------------------------------------------------------------------ errors, in one place


@app.exception_handler(DomainError)
def domain_error(exc: DomainError) -> Response[str]:
    headers = exc.headers if isinstance(exc, RateLimitExceeded) else exc.reply_headers()
    return Response(exc.status, JSON, error_body(exc.code, exc.message, exc.details), headers=headers)


@app.exception_handler(RequestValidationError)
def request_invalid(exc: RequestValidationError) -> Response[str]:
    details = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = loc[0] if loc and loc[0] in ("body", "query", "path", "header") else "body"
        if err.get("type") == "json_invalid":
            return Response(400, JSON, error_body("validation_error", "the request body is not valid JSON"))
        message = "unknown field" if err.get("type") == "extra_forbidden" else str(err.get("msg", "invalid"))
        details.append(
            {
                "field": field_path(loc[1:] if loc and loc[0] == where else loc) or where,
                "in": where,
                "message": message.removeprefix("Value error, "),
            }
        )
    return Response(422, JSON, error_body("validation_error", "the request failed validation", details))


@app.exception_handler(Exception)
def unexpected(exc: Exception) -> Response[str]:
    logger.exception("unhandled error")
    metrics.add_metric(name="UnhandledErrors", unit="Count", value=1)
    return Response(500, JSON, error_body("internal_error", "an internal error occurred; it has been logged"))


@app.not_found
def not_found(exc: Exception) -> Response[str]:
    return Response(404, JSON, error_body("not_found", f"no route for {app.current_event.path}"))


# ------------------------------------------------------------------ routes


@app.get("/health", summary="Liveness; with deep=1 also PostgreSQL, Redis and SQS reachability")
def get_health(deep: Annotated[str | None, Query()] = None) -> Response[str]:
    report = health.check(deep=deep in ("1", "true"))
    return json_response(200 if report["status"] == "ok" else 503, report)


@app.post("/api/v1/users", summary="Create a recipient", tags=["users"])
def create_user(body: Annotated[UserCreate, Body()]) -> Response[str]:
    principal = caller("users:write")
    return json_response(HTTPStatus.CREATED, users.create_user(principal.tenant_id, body))


@app.get("/api/v1/users/<id>", summary="Read a recipient", tags=["users"])
def get_user(id: UUID) -> Response[str]:
    principal = caller("users:read")
    return json_response(200, users.get_user(principal.tenant_id, id))


@app.patch("/api/v1/users/<id>", summary="Change a recipient", tags=["users"])
def patch_user(id: UUID, body: Annotated[UserPatch, Body()]) -> Response[str]:
    principal = caller("users:write")
    return json_response(200, users.update_user(principal.tenant_id, id, body))


@app.delete("/api/v1/users/<id>", summary="Delete a recipient", tags=["users"])
def delete_user(id: UUID) -> Response[str]:
    principal = caller("users:write")
    users.delete_user(principal.tenant_id, id)
    return Response(HTTPStatus.NO_CONTENT, JSON, "")


def _idempotency_header() -> str | None:
    value = app.current_event.headers.get("Idempotency-Key") or app.current_event.headers.get(
        "idempotency-key"
    )
    return value.strip() or None if value else None


@app.post("/api/v1/notifications", summary="Create a notification", tags=["notifications"])
def create_notification(body: Annotated[NotificationCreate, Body()]) -> Response[str]:
    principal = caller("notifications:write")
    (outcome,) = notifications.create(principal.tenant_id, [body], _idempotency_header())
    if outcome.error is not None:
        raise outcome.error
    metrics.add_metric(name="NotificationsAccepted", unit="Count", value=0 if outcome.replayed else 1)
    return json_response(200 if outcome.replayed else HTTPStatus.ACCEPTED, outcome.notification)


@app.post("/api/v1/notifications/batch", summary="Create up to 100 notifications", tags=["notifications"])
def create_batch(body: Annotated[BatchCreate, Body()]) -> Response[str]:
    principal = caller("notifications:write")
    outcomes = notifications.create(
        principal.tenant_id, body.notifications, _idempotency_header(), batch=True
    )
    results = [o.as_batch_item() for o in outcomes]
    failed = sum(1 for o in outcomes if o.error is not None)
    metrics.add_metric(name="NotificationsAccepted", unit="Count", value=len(outcomes) - failed)
    status = HTTPStatus.ACCEPTED if failed == 0 else HTTPStatus.MULTI_STATUS
    if failed == len(outcomes):
        status = HTTPStatus.UNPROCESSABLE_ENTITY
    return json_response(status, {"results": results, "accepted": len(outcomes) - failed, "rejected": failed})


@app.get("/api/v1/notifications", summary="List notifications, newest first", tags=["notifications"])
def list_notifications(
    status: Annotated[Status | None, Query()] = None,
    user_id: Annotated[UUID | None, Query()] = None,
    channel: Annotated[Channel | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response[str]:
    principal = caller("notifications:read")
    page = notifications.list_page(
        principal.tenant_id, limit=limit, cursor=cursor, status=status, user_id=user_id, channel=channel
    )
    return json_response(200, page)


@app.get("/api/v1/notifications/<id>", summary="Read a notification", tags=["notifications"])
def get_notification(id: UUID) -> Response[str]:
    principal = caller("notifications:read")
    return json_response(200, notifications.get(principal.tenant_id, id))


@app.post("/api/v1/notifications/<id>/cancel", summary="Cancel while not yet sending", tags=["notifications"])
def cancel_notification(id: UUID) -> Response[str]:
    principal = caller("notifications:write")
    return json_response(200, notifications.cancel(principal.tenant_id, id))


@app.get("/api/v1/notifications/<id>/attempts", summary="Delivery attempts", tags=["notifications"])
def list_attempts(id: UUID) -> Response[str]:
    principal = caller("notifications:read")
    rows = notifications.attempts(principal.tenant_id, id)
    return json_response(200, {"data": [a.model_dump(mode="json") for a in rows]})


@app.get("/api/v1/dlq", summary="Dead letters, newest first", tags=["dlq"])
def list_dead_letters(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response[str]:
    principal = caller("dlq:read")
    return json_response(200, dlq.list_page(principal.tenant_id, limit=limit, cursor=cursor))


@app.get("/api/v1/dlq/stats", summary="Dead letters by reason, channel and provider", tags=["dlq"])
def dead_letter_stats() -> Response[str]:
    principal = caller("dlq:read")
    return json_response(200, dlq.stats(principal.tenant_id))


@app.post("/api/v1/dlq/<id>/replay", summary="Send again with a fresh attempt budget", tags=["dlq"])
def replay_dead_letter(id: UUID) -> Response[str]:
    principal = caller("dlq:write")
    return json_response(HTTPStatus.ACCEPTED, dlq.replay(principal.tenant_id, id))


@app.delete("/api/v1/dlq/<id>", summary="Discard a dead letter", tags=["dlq"])
def delete_dead_letter(id: UUID) -> Response[str]:
    principal = caller("dlq:write")
    dlq.delete(principal.tenant_id, id)
    return Response(HTTPStatus.NO_CONTENT, JSON, "")


# ------------------------------------------------------------------ entry point


def _gate(event: dict[str, Any]) -> dict[str, str]:
    """Size, media type, API key and rate limit — before any parsing, so that neither an anonymous
    caller nor a flood of invalid requests gets past it. Returns the headers to add to the reply."""
    headers = {k: v for k, v in (event.get("headers") or {}).items() if v is not None}
    lowered = {k.lower(): v for k, v in headers.items()}
    check_body(event.get("body"), bool(event.get("isBase64Encoded")), lowered.get("content-type"))
    if event.get("path", "") in PUBLIC_PATHS:
        if event.get("path") == "/swagger":
            _enable_swagger()
        return {}
    admission = admit(headers)
    app.append_context(principal=admission.principal)
    logger.append_keys(api_key=admission.principal.key_prefix, tenant_id=str(admission.principal.tenant_id))
    return admission.headers


def _with_headers(response: dict[str, Any], extra: dict[str, str]) -> dict[str, Any]:
    if extra:
        multi = response.setdefault("multiValueHeaders", {})
        for name, value in extra.items():
            multi[name] = [value]
    return response


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@metrics.log_metrics(raise_on_empty_metrics=False)
@tracer.capture_lambda_handler(capture_response=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    app.clear_context()
    try:
        extra = _gate(event)
    except DomainError as exc:
        app.append_context(principal=None)
        return _with_headers(
            {
                "statusCode": exc.status,
                "multiValueHeaders": {"Content-Type": [JSON]},
                "body": error_body(exc.code, exc.message, exc.details),
                "isBase64Encoded": False,
            },
            exc.headers if isinstance(exc, RateLimitExceeded) else exc.reply_headers(),
        )
    return _with_headers(app.resolve(event, context), extra)
