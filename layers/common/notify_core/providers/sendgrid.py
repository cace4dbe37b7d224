"""Email through SendGrid's v3 mail send API, with the ``sendgrid`` SDK (imported when first built).

The SDK talks through ``python_http_client``, which builds urllib requests and opens them with
``urllib.build_opener()``: here that is `KeepAliveOpener` (kept connections, urllib's error
contract). HTTP errors arrive as
``python_http_client.exceptions.HTTPError`` (status, body, headers); timeouts and refused
connections as the standard library's ``TimeoutError`` / ``urllib.error.URLError``.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from pydantic import BaseModel

from ..fields import Email
from ..models import EmailPayload, Strict
from .base import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderError,
    ProviderSettings,
    Receipt,
    Secret,
    classify_http_status,
    classify_transport_error,
    error_text,
    header,
    invalid_payload,
    json_or_none,
    not_configured,
    parse_retry_after,
    unexpected_error,
)

NAME = "sendgrid"


class SendGridCredentials(Strict):
    """What a tenant's SendGrid config must give (kept in Secrets Manager)."""

    api_key: Secret


class SendGridOptions(Strict):
    default_from: Email | None = None  # for payloads without 'from'


def classify_sendgrid_error(status: int, body: bytes | str | None, retry_after: str | None) -> ProviderError:
    """A non-2xx reply of ``POST /v3/mail/send`` -> the typed error (pure; see base for the rules)."""
    data = json_or_none(body)
    messages: list[str] = []
    if isinstance(data, dict):
        for item in data.get("errors") or []:
            if isinstance(item, dict) and item.get("message"):
                field = f" ({item['field']})" if item.get("field") else ""
                messages.append(f"{item['message']}{field}")
    detail = "; ".join(messages) or error_text(body) or "no body"
    return classify_http_status(
        status,
        f"SendGrid answered HTTP {status}: {detail}",
        provider=NAME,
        retry_after=parse_retry_after(retry_after),
    )


def build_mail_body(message: OutgoingMessage, default_from: str, mail_module: Any) -> dict[str, Any]:
    """The v3 mail/send request body, built with the SDK's ``helpers.mail`` classes."""
    payload = message.payload
    assert isinstance(payload, EmailPayload), "the sendgrid provider serves the email channel only"
    sender = payload.from_ or default_from
    if not sender:
        raise not_configured(NAME, "the payload has no 'from' and SENDGRID_DEFAULT_FROM is not set")
    if not payload.to:
        raise PermanentProviderError("email payload has no 'to'", "invalid_payload", provider=NAME)
    try:
        mail = mail_module.Mail(
            from_email=sender,
            to_emails=payload.to,
            subject=payload.subject,
            plain_text_content=payload.body,
            html_content=payload.html or None,
        )
        if payload.reply_to:
            mail.reply_to = mail_module.ReplyTo(payload.reply_to)
        for name, value in message.headers.items():
            mail.header = mail_module.Header(name, value)
        # Come back on SendGrid's event webhook, so delivery events find their notification.
        mail.custom_arg = [
            mail_module.CustomArg("notification_id", str(message.notification_id)),
            mail_module.CustomArg("tenant_id", str(message.tenant_id)),
        ]
        body: dict[str, Any] = mail.get()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise invalid_payload(NAME, exc) from exc
    return body


class KeepAliveOpener:
    """What python_http_client's ``urllib.build_opener()`` returns here: an opener that keeps one
    HTTP/1.1 connection per thread and host, so a sender's send threads reuse their connections (and
    TLS sessions) across sends and invocations instead of connecting, handshaking and closing for
    every mail as urllib does. It keeps urllib's contract, which the error classification relies on:
    what fails while connecting or sending the request is a ``URLError`` (nothing reached SendGrid),
    what fails while waiting for or reading the answer comes out unwrapped (ambiguous), and an
    answer outside 2xx is an ``HTTPError`` carrying status, headers and body.

    A kept connection the server has closed meanwhile (its idle timeout) is noticed before reuse (the
    socket is readable: end of stream) and replaced, so it never turns into a lost answer. With a
    proxy configured in the environment, or a scheme other than http(s), urllib's own opener serves."""

    def __init__(self) -> None:
        import ssl
        import urllib.request

        self._context = ssl.create_default_context()  # urllib's default: verified, hostname checked
        self._context.set_alpn_protocols(["http/1.1"])
        self._urllib = urllib.request.build_opener()
        self._proxied = bool(urllib.request.getproxies())
        self._local = threading.local()

    def open(self, request: Any, timeout: float | None = None) -> Any:
        import io
        import urllib.error

        scheme, host = request.type, request.host
        if self._proxied or scheme not in ("http", "https"):
            return self._urllib.open(request, timeout=timeout)
        connection = self._connection(scheme, host, timeout)
        headers = {name.title(): value for name, value in request.header_items()}
        if request.data is not None:
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            connection.request(request.get_method(), request.selector, request.data, headers)
        except OSError as exc:  # connecting or sending: SendGrid has not got the request
            connection.close()
            raise urllib.error.URLError(exc) from exc
        except BaseException:
            connection.close()
            raise
        try:
            response = connection.getresponse()
            body = response.read()
        except BaseException:  # the request went out: what failed here is ambiguous, left unwrapped
            connection.close()
            raise
        answer = _Answer(response.status, response.reason, response.msg, body, request.full_url)
        if not 200 <= answer.status < 300:
            raise urllib.error.HTTPError(
                request.full_url, answer.status, answer.reason, answer.headers, io.BytesIO(body)
            )
        return answer

    def _connection(self, scheme: str, host: str, timeout: float | None) -> Any:
        import http.client
        import select

        connections: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "connections", {}
        )
        connection = connections.get((scheme, host))
        if connection is not None and connection.sock is not None:
            readable, _, _ = select.select([connection.sock], [], [], 0)
            if readable:  # closed by the server (or talking out of turn): start afresh
                connection.close()
        if connection is None:
            if scheme == "https":
                connection = http.client.HTTPSConnection(host, timeout=timeout, context=self._context)
            else:
                connection = http.client.HTTPConnection(host, timeout=timeout)
            connections[(scheme, host)] = connection
        connection.timeout = timeout  # a new socket takes it; a kept one is set here
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection


class _Answer:
    """The part of urllib's response python_http_client reads: ``getcode()``, ``read()``, ``info()``."""

    def __init__(self, status: int, reason: str, headers: Any, body: bytes, url: str) -> None:
        self.status, self.reason, self.headers, self.body, self.url = status, reason, headers, body, url

    def getcode(self) -> int:
        return self.status

    def read(self) -> bytes:
        return self.body

    def info(self) -> Any:
        return self.headers


_opener: KeepAliveOpener | None = None
_opener_lock = threading.Lock()


def _shared_opener(*handlers: Any) -> Any:
    """python_http_client calls urllib's build_opener() for every request: a new opener, and for
    HTTPS a new context loading the CA bundle (~20 ms of CPU per send, holding the GIL), then a new
    connection per mail. One keep-alive opener for the process serves every send instead; a cold
    sender pays for the CA bundle once, not once per send thread."""
    import urllib.request

    global _opener
    if handlers:
        return urllib.request.build_opener(*handlers)
    if _opener is None:
        with _opener_lock:
            if _opener is None:
                _opener = KeepAliveOpener()
    return _opener


class SendGridProvider:
    name: ClassVar[str] = NAME
    channels: ClassVar[frozenset[str]] = frozenset({"email"})
    credentials_model: ClassVar[type[BaseModel]] = SendGridCredentials
    options_model: ClassVar[type[BaseModel]] = SendGridOptions

    def __init__(self, settings: ProviderSettings) -> None:
        import types

        import python_http_client.client as http_client
        from python_http_client.exceptions import HTTPError
        from sendgrid import SendGridAPIClient
        from sendgrid.helpers import mail

        if getattr(http_client.urllib, "build_opener", None) is not _shared_opener:
            patched = types.SimpleNamespace(**vars(http_client.urllib))
            patched.build_opener = _shared_opener
            http_client.urllib = patched

        _shared_opener()  # the CA bundle loaded once, here, rather than in the first sends
        self._mail = mail
        self._http_error: type[Exception] = HTTPError
        self._default_from = settings.sendgrid_default_from
        self._api_key = settings.sendgrid_api_key.get_secret_value()
        self._client: Any = None
        # urllib applies the one timeout to connecting and to each read
        self.max_send_seconds = 2 * settings.read_timeout(NAME)
        if self._api_key:
            self._client = SendGridAPIClient(api_key=self._api_key, host=settings.sendgrid_base_url)
            # Every request built from this client inherits the timeout (python_http_client copies it
            # into each child client); urllib applies it to connect and to each socket read.
            self._client.client.timeout = settings.read_timeout(NAME)

    def send(self, message: OutgoingMessage) -> Receipt:
        if self._client is None:
            raise not_configured(NAME, "SENDGRID_API_KEY is not set")
        body = build_mail_body(message, self._default_from, self._mail)
        try:
            response = self._client.send(body)
        except self._http_error as exc:
            raise classify_sendgrid_error(
                int(getattr(exc, "status_code", 0) or 0),
                getattr(exc, "body", None),
                header(getattr(exc, "headers", None), "Retry-After"),
            ) from exc
        except Exception as exc:  # every other exception is mapped explicitly here
            raise (
                classify_transport_error(exc, provider=NAME) or unexpected_error(exc, provider=NAME)
            ) from exc
        status = int(response.status_code)
        if not 200 <= status < 300:
            raise classify_sendgrid_error(status, response.body, header(response.headers, "Retry-After"))
        message_id = header(response.headers, "X-Message-Id")
        return Receipt(
            provider_message_id=message_id,
            response={"provider": NAME, "status_code": status, "message_id": message_id},
        )
