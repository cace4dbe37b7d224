"""Push through Firebase Cloud Messaging (HTTP v1), with ``firebase-admin`` (imported when first built).

Each provider instance initialises its own Firebase app (a unique name), from the service-account
JSON; google-auth exchanges a signed JWT for an access token at the account's ``token_uri``.

Per app instance, never globally, the messaging service is adjusted after creation:

* ``FCM_BASE_URL`` replaces the scheme/host of the service's ``_fcm_url`` (firebase-admin builds it
  from the class constant ``_MessagingService.FCM_URL`` in ``__init__``);
* the SDK's own retries (urllib3 ``Retry``: 4 retries of 500/503 with backoff, plus one read retry,
  which doubles a timeout) are switched off for the FCM origin: one HTTP attempt per ``send()``,
  because retry policy belongs to the delivery engine, with its bounded attempts and backoff.

Errors arrive as ``firebase_admin.exceptions.FirebaseError`` subclasses carrying the HTTP response
(FCM's ``details[].errorCode`` is read from its body), or, when the token exchange fails, as
``google.auth.exceptions.RefreshError`` / ``TransportError``.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, SecretStr, StringConstraints, field_validator

from ..models import PushPayload, Strict
from .base import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderError,
    ProviderSettings,
    Receipt,
    Secret,
    TransientProviderError,
    classify_http_status,
    classify_requests_error,
    classify_transport_error,
    header,
    invalid_payload,
    json_or_none,
    not_configured,
    parse_retry_after,
    unexpected_error,
)

NAME = "fcm"
POOL_SIZE = 100  # connections kept for concurrent sends (SEND_CONCURRENCY is at most 100)
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

# FCM errorCode / google.rpc status -> permanent reason. Anything transient keeps http_<status>.
_PERMANENT_FCM_CODES = {
    "UNREGISTERED": "unregistered",
    "INVALID_ARGUMENT": "invalid_argument",
    "SENDER_ID_MISMATCH": "sender_id_mismatch",
    "THIRD_PARTY_AUTH_ERROR": "third_party_auth",
    "APNS_AUTH_ERROR": "third_party_auth",
}
_TRANSIENT_FCM_CODES = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
# Codes that say the registration token itself is dead: the token leaves the user and is suppressed
# (invalid_token) in the transaction that records the failure.
INVALID_TOKEN_CODES = frozenset({"unregistered"})


def is_token_invalid(code: str | None) -> bool:
    """Whether a send that failed with `code` proves the push token dead."""
    return code in INVALID_TOKEN_CODES


def _json_text(value: Any) -> Any:
    """A service account given as a JSON object is kept as its JSON text."""
    return json.dumps(value) if isinstance(value, dict) else value


SERVICE_ACCOUNT_FIELDS = ("type", "project_id", "private_key", "client_email", "token_uri")


class FcmCredentials(Strict):
    """What a tenant's FCM config must give (kept in Secrets Manager): a service account key."""

    service_account_json: Annotated[Secret, BeforeValidator(_json_text)]

    @field_validator("service_account_json")
    @classmethod
    def _service_account(cls, value: SecretStr) -> SecretStr:
        try:
            info = json.loads(value.get_secret_value())
        except ValueError:
            raise ValueError("must be a service account key: a JSON object") from None
        if not isinstance(info, dict):
            raise ValueError("must be a service account key: a JSON object")
        missing = [
            name for name in SERVICE_ACCOUNT_FIELDS if not isinstance(info.get(name), str) or not info[name]
        ]
        if missing:
            raise ValueError(f"is not a service account key: {', '.join(missing)} missing")
        if info["type"] != "service_account":
            raise ValueError("is not a service account key: type must be service_account")
        if "PRIVATE KEY" not in info["private_key"]:
            raise ValueError("is not a service account key: private_key is not a PEM key")
        token_uri = str(info["token_uri"])
        if not (token_uri.startswith("https://") and _is_google_host(token_uri)):
            # the sender posts a signed assertion there: only Google's own token endpoint
            raise ValueError("is not a service account key: token_uri must be https://*.googleapis.com")
        return value


class FcmOptions(Strict):
    project_id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")] | None = None


def parse_fcm_error_body(body: bytes | str | None) -> tuple[str | None, str | None, str]:
    """(google status, FCM errorCode, message) from a Google-shaped error body."""
    data = json_or_none(body)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None, ""
    fcm_code = None
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            fcm_code = detail.get("errorCode")
            break
    status = error.get("status")
    return (
        str(status) if status else None,
        str(fcm_code) if fcm_code else None,
        str(error.get("message") or ""),
    )


def classify_fcm_error(
    status: int,
    google_status: str | None,
    fcm_code: str | None,
    message: str,
    retry_after: str | None = None,
) -> ProviderError:
    """A non-2xx reply of ``messages:send`` -> the typed error (pure; see base for the rules)."""
    code = fcm_code or google_status
    text = (
        f"FCM answered HTTP {status}" + (f" ({code})" if code else "") + (f": {message}" if message else "")
    )
    if fcm_code in _PERMANENT_FCM_CODES:
        return PermanentProviderError(
            text, _PERMANENT_FCM_CODES[fcm_code], provider=NAME, status=status, provider_code=fcm_code
        )
    if fcm_code in _TRANSIENT_FCM_CODES or status == 429 or status >= 500:
        return TransientProviderError(
            text,
            f"http_{status}",
            retry_after=parse_retry_after(retry_after),
            provider=NAME,
            status=status,
            provider_code=code,
        )
    if google_status == "INVALID_ARGUMENT":
        return PermanentProviderError(
            text, "invalid_argument", provider=NAME, status=status, provider_code=code
        )
    if google_status in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return PermanentProviderError(text, "auth", provider=NAME, status=status, provider_code=code)
    return classify_http_status(
        status, text, provider=NAME, retry_after=parse_retry_after(retry_after), provider_code=code
    )


def _is_google_host(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def _skip_regional_access_boundary(google_credential: Any) -> None:
    """Recent google-auth versions, after each token refresh, look up the service account's
    "Regional Access Boundary" at https://iamcredentials.googleapis.com in a background thread. Against
    a non-Google FCM or token endpoint (the local stub) that lookup is useless and would leave the
    machine, so it is switched off for this one credential object; against Google it stays as is."""
    if hasattr(google_credential, "_is_regional_access_boundary_lookup_required"):
        google_credential._is_regional_access_boundary_lookup_required = lambda: False


class FcmProvider:
    name: ClassVar[str] = NAME
    channels: ClassVar[frozenset[str]] = frozenset({"push"})
    credentials_model: ClassVar[type[BaseModel]] = FcmCredentials
    options_model: ClassVar[type[BaseModel]] = FcmOptions

    def __init__(self, settings: ProviderSettings) -> None:
        import firebase_admin
        import requests
        from firebase_admin import credentials, messaging
        from firebase_admin import exceptions as fb_exceptions
        from google.auth import exceptions as auth_exceptions

        self._messaging = messaging
        self._firebase_error: type[Exception] = fb_exceptions.FirebaseError
        self._refresh_error: type[Exception] = auth_exceptions.RefreshError
        self._auth_transport_error: type[Exception] = auth_exceptions.TransportError
        self._auth_error: type[Exception] = auth_exceptions.GoogleAuthError
        # urllib3 applies httpTimeout to connecting and to each read; a send may first refresh the
        # access token (one more request).
        self.max_send_seconds = 4 * settings.read_timeout(NAME)
        self._app: Any = None
        self._problem = ""

        raw = settings.fcm_service_account_json.get_secret_value().strip()
        if not raw:
            self._problem = "FCM_SERVICE_ACCOUNT_JSON is not set"
            return
        try:
            info = json.loads(raw)
        except ValueError:
            self._problem = "FCM_SERVICE_ACCOUNT_JSON is not valid JSON"
            return
        if not isinstance(info, dict):
            self._problem = "FCM_SERVICE_ACCOUNT_JSON is not a JSON object"
            return
        project_id = settings.fcm_project_id or str(info.get("project_id") or "")
        if not project_id:
            self._problem = "FCM_PROJECT_ID is not set and the service account has no project_id"
            return
        try:
            credential = credentials.Certificate(info)
        except ValueError as exc:
            self._problem = f"FCM_SERVICE_ACCOUNT_JSON is not a usable service account: {exc}"
            return

        if settings.fcm_base_url or not _is_google_host(str(info.get("token_uri") or "")):
            _skip_regional_access_boundary(credential.get_credential())
        self._app = firebase_admin.initialize_app(
            credential,
            options={"projectId": project_id, "httpTimeout": settings.read_timeout(NAME)},
            name=f"notify-fcm-{uuid.uuid4().hex}",
        )
        base_url = settings.fcm_base_url or DEFAULT_BASE_URL
        service = messaging._get_messaging_service(self._app)
        if not hasattr(service, "_fcm_url") or not hasattr(service, "_client"):
            self.close()
            raise PermanentProviderError(
                "this firebase-admin version has no _MessagingService._fcm_url/_client: "
                "FCM_BASE_URL and retry settings cannot be applied",
                "not_configured",
                provider=NAME,
            )
        service._fcm_url = f"{base_url}/v1/projects/{project_id}/messages:send"
        service._client.session.mount(
            base_url, requests.adapters.HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=POOL_SIZE)
        )
        self.project_id = project_id
        self.fcm_url = service._fcm_url

    def close(self) -> None:
        """Delete this provider's Firebase app (reset_providers calls it)."""
        if self._app is not None:
            import firebase_admin

            # delete_app unregisters the app, then closes the SDK's async client with asyncio.run,
            # which raises RuntimeError inside a running event loop (a caller's own loop): the app
            # is unregistered by then, and its async client was never opened by the sync sends.
            with contextlib.suppress(RuntimeError):
                firebase_admin.delete_app(self._app)
            self._app = None

    def _build(self, message: OutgoingMessage) -> Any:
        payload = message.payload
        assert isinstance(payload, PushPayload), "the fcm provider serves the push channel only"
        token, topic = payload.token, payload.topic
        if bool(token) == bool(topic):
            raise PermanentProviderError(
                "push payload needs exactly one of 'token' and 'topic'", "invalid_payload", provider=NAME
            )
        data = payload.data
        try:
            fcm_message = self._messaging.Message(
                topic=topic or None,
                notification=self._messaging.Notification(title=payload.title, body=payload.body),
                data={str(k): str(v) for k, v in data.items()} if data else None,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise invalid_payload(NAME, exc) from exc
        if token:
            # firebase-admin 7 deprecates Message(token=...) in favour of ``fid`` (an installation ID,
            # a different thing); the v1 API's ``message.token`` is still the registration token we
            # hold. Setting the attribute sends the same field without the per-call warning (and
            # without warnings.catch_warnings, which is not thread-safe).
            fcm_message.token = token
        return fcm_message

    def _classify(self, exc: Exception) -> ProviderError:
        if isinstance(exc, self._firebase_error):
            response = getattr(exc, "http_response", None)
            if response is not None:
                google_status, fcm_code, text = parse_fcm_error_body(response.content)
                return classify_fcm_error(
                    int(response.status_code),
                    google_status or getattr(exc, "code", None),
                    fcm_code,
                    text or str(exc),
                    header(response.headers, "Retry-After"),
                )
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                transport = classify_requests_error(cause, provider=NAME)
                if transport is not None:
                    return transport
            return unexpected_error(exc, provider=NAME)
        if isinstance(exc, self._auth_transport_error):
            # The token request failed: no push was sent, whatever happened to it.
            return TransientProviderError(f"token request failed: {exc}", "token_unavailable", provider=NAME)
        if isinstance(exc, self._refresh_error):  # the token endpoint answered with an error
            if getattr(exc, "retryable", False):
                return TransientProviderError(
                    f"token refresh failed: {exc}", "token_unavailable", provider=NAME
                )
            return PermanentProviderError(f"token refresh refused: {exc}", "auth", provider=NAME)
        if isinstance(
            exc, self._auth_error
        ):  # e.g. a malformed token response: nothing we can fix by waiting
            return PermanentProviderError(f"google-auth failed: {exc}", "auth", provider=NAME)
        transport = classify_requests_error(exc, provider=NAME)
        if transport is not None:
            return transport
        if isinstance(exc, ValueError):  # the SDK validates the message before sending it
            return invalid_payload(NAME, exc)
        return classify_transport_error(exc, provider=NAME) or unexpected_error(exc, provider=NAME)

    def send(self, message: OutgoingMessage) -> Receipt:
        if self._app is None:
            raise not_configured(NAME, self._problem or "the provider was closed")
        fcm_message = self._build(message)
        try:
            name = self._messaging.send(fcm_message, app=self._app)
        except Exception as exc:  # every exception is mapped explicitly by _classify
            raise self._classify(exc) from exc
        return Receipt(
            provider_message_id=str(name), response={"provider": NAME, "status_code": 200, "name": name}
        )
