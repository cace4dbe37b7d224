"""SMS through Twilio's Messages API, with the ``twilio`` SDK (imported when first built).

The SDK sends through ``twilio.http.http_client.TwilioHttpClient`` (requests). This module gives the
client its own subclass of it, which

* moves every request to ``TWILIO_BASE_URL`` when that is set (scheme, host and port replaced, the
  path kept), so the real SDK can talk to a local stub; edge/region host rewriting is undone too;
* applies the connect and read timeouts (``PROVIDER_CONNECT_TIMEOUT_SECONDS``, ``TWILIO_TIMEOUT_SECONDS``
  or ``PROVIDER_TIMEOUT_SECONDS``);
* keeps the last response's headers per thread, because ``TwilioRestException`` drops them and a
  429's ``Retry-After`` lives there.
"""

from __future__ import annotations

import functools
import threading
from typing import Annotated, Any, ClassVar, Self
from urllib.parse import SplitResult, urlsplit, urlunsplit

from pydantic import BaseModel, StringConstraints, model_validator

from ..config import get_settings
from ..fields import Phone
from ..models import SmsPayload, Strict
from .base import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderError,
    ProviderSettings,
    Receipt,
    Secret,
    classify_http_status,
    classify_requests_error,
    classify_transport_error,
    header,
    not_configured,
    parse_retry_after,
    unexpected_error,
)
from .twilio_status import status_callback_url

NAME = "twilio"


class TwilioCredentials(Strict):
    """What a tenant's Twilio config must give (kept in Secrets Manager)."""

    account_sid: Annotated[str, StringConstraints(pattern=r"^AC[0-9a-fA-F]{32}$")]
    auth_token: Secret


class TwilioOptions(Strict):
    """A sender: a number or a messaging service (a payload's own 'from' still wins)."""

    from_number: Phone | None = None
    messaging_service_sid: Annotated[str, StringConstraints(pattern=r"^MG[0-9a-fA-F]{32}$")] | None = None

    @model_validator(mode="after")
    def _a_sender(self) -> Self:
        if not (self.from_number or self.messaging_service_sid):
            raise ValueError("give from_number or messaging_service_sid: an SMS needs a sender")
        return self


# Twilio error codes that say the recipient number itself is unusable: sending again cannot help.
# 21211 invalid 'To' number, 21214 'To' number cannot be reached, 21217 number does not appear valid,
# 21401 invalid phone number, 21407 not a mobile number, 21421 PhoneNumber is invalid,
# 21610 recipient unsubscribed (replied STOP), 21612 cannot route to this number,
# 21614 'To' is not a valid mobile number.
INVALID_NUMBER_CODES = frozenset({21211, 21214, 21217, 21401, 21407, 21421, 21610, 21612, 21614})
# 20003 authentication failed, 20005 account not active.
AUTH_CODES = frozenset({20003, 20005})


def classify_twilio_error(
    status: int, code: int | str | None, message: str, retry_after: str | None = None
) -> ProviderError:
    """A non-2xx reply of the Messages API -> the typed error (pure; see base for the rules)."""
    try:
        twilio_code = int(code) if code is not None else None
    except (TypeError, ValueError):
        twilio_code = None
    provider_code = str(twilio_code) if twilio_code is not None else None
    text = (
        f"Twilio answered HTTP {status}" + (f" (error {twilio_code})" if twilio_code else "") + f": {message}"
    )
    if twilio_code in INVALID_NUMBER_CODES:
        return PermanentProviderError(
            text, "invalid_number", provider=NAME, status=status, provider_code=provider_code
        )
    if twilio_code in AUTH_CODES and status < 500:
        return PermanentProviderError(text, "auth", provider=NAME, status=status, provider_code=provider_code)
    return classify_http_status(
        status,
        text,
        provider=NAME,
        retry_after=parse_retry_after(retry_after),
        provider_code=provider_code,
    )


def rebase_url(url: str, base: SplitResult) -> str:
    """``https://api.twilio.com/2010-04-01/...`` -> ``<base>/2010-04-01/...``."""
    parts = urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + parts.path, parts.query, ""))


@functools.cache
def _http_client_class() -> type:
    """The SDK's HTTP client with a base URL, a timeout and per-thread response headers."""
    from twilio.http.http_client import TwilioHttpClient

    class NotifyTwilioHttpClient(TwilioHttpClient):
        def __init__(self, base_url: str, timeout: tuple[float, float]) -> None:
            super().__init__(pool_connections=True)
            # (connect, read) for requests; the SDK's own check only accepts a number, so it is set
            # after its constructor and used by request() whenever no timeout is passed.
            self.timeout = timeout
            if self.session is not None:  # keep a connection per concurrent send (at most 100)
                import requests

                for prefix in ("https://", "http://"):
                    self.session.mount(prefix, requests.adapters.HTTPAdapter(pool_maxsize=100))
            self._base = urlsplit(base_url) if base_url else None
            self._local = threading.local()

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self._local.headers = None
            if self._base is not None:
                url = rebase_url(url, self._base)
            response = super().request(method, url, *args, **kwargs)
            self._local.headers = response.headers
            return response

        def last_headers(self) -> Any:
            return getattr(self._local, "headers", None)

    return NotifyTwilioHttpClient


class TwilioProvider:
    name: ClassVar[str] = NAME
    channels: ClassVar[frozenset[str]] = frozenset({"sms"})
    credentials_model: ClassVar[type[BaseModel]] = TwilioCredentials
    options_model: ClassVar[type[BaseModel]] = TwilioOptions

    def __init__(self, settings: ProviderSettings) -> None:
        from twilio.base.exceptions import TwilioRestException, TwilioServiceException
        from twilio.rest import Client

        self._rest_errors: tuple[type[Exception], ...] = (TwilioRestException, TwilioServiceException)
        timeout = (settings.provider_connect_timeout_seconds, settings.read_timeout(NAME))
        self.max_send_seconds = sum(timeout)
        self._from_number = settings.twilio_from_number
        self._service_sid = settings.twilio_messaging_service_sid
        self._client: Any = None
        self._http: Any = None
        sid, token = settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()
        self._problem = (
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set"
            if not (sid or token)
            else "TWILIO_ACCOUNT_SID is not set"
            if not sid
            else "TWILIO_AUTH_TOKEN is not set"
            if not token
            else ""
        )
        if not self._problem:
            self._http = _http_client_class()(settings.twilio_base_url, timeout)
            self._client = Client(username=sid, password=token, account_sid=sid, http_client=self._http)
            if settings.twilio_base_url:
                # TWILIO_EDGE / TWILIO_REGION from the environment would rename the host; the base URL
                # replaces the host anyway, but keep the URL the SDK logs honest.
                self._client.edge = None
                self._client.region = None

    def _sender(self, payload: SmsPayload) -> dict[str, str]:
        if payload.from_:
            return {"from_": payload.from_}
        if self._service_sid:
            return {"messaging_service_sid": self._service_sid}
        if self._from_number:
            return {"from_": self._from_number}
        raise not_configured(
            NAME,
            "the payload has no 'from' and neither TWILIO_MESSAGING_SERVICE_SID nor TWILIO_FROM_NUMBER is set",
        )

    def send(self, message: OutgoingMessage) -> Receipt:
        if self._client is None:
            raise not_configured(NAME, self._problem)
        payload = message.payload
        assert isinstance(payload, SmsPayload), "the twilio provider serves the sms channel only"
        if not payload.to:
            raise PermanentProviderError("sms payload has no 'to'", "invalid_payload", provider=NAME)
        kwargs = {"to": payload.to, "body": payload.body, **self._sender(payload)}
        # feedback: Twilio reports delivery to PUBLIC_BASE_URL/callbacks/twilio (twilio_status)
        kwargs["status_callback"] = status_callback_url(
            get_settings().public_base_url, message.notification_id, message.tenant_id
        )
        try:
            reply = self._client.messages.create_with_http_info(**kwargs)
        except self._rest_errors as exc:
            raise classify_twilio_error(
                int(getattr(exc, "status", 0) or 0),
                getattr(exc, "code", None),
                str(getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")),
                header(self._http.last_headers(), "Retry-After"),
            ) from exc
        except Exception as exc:  # every other exception is mapped explicitly here
            raise (
                classify_requests_error(exc, provider=NAME)
                or classify_transport_error(exc, provider=NAME)
                or unexpected_error(exc, provider=NAME)
            ) from exc
        instance = reply.data
        sid = getattr(instance, "sid", None)
        return Receipt(
            provider_message_id=sid,
            response={
                "provider": NAME,
                "status_code": int(reply.status_code),
                "sid": sid,
                "status": str(getattr(instance, "status", "") or "") or None,
            },
        )
