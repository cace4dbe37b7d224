"""A local stand-in for SendGrid, Twilio and FCM that the REAL provider SDKs talk to.

It speaks enough of each API for ``notify_core.providers`` (real SDK clients, base URLs pointed
here) to send, and to fail in every way the classification must handle:

* SendGrid v3   ``POST /v3/mail/send``                               -> 202, ``X-Message-Id``
* Twilio        ``POST /2010-04-01/Accounts/{sid}/Messages.json``    -> 201 message JSON (form body)
* FCM HTTP v1   ``POST /v1/projects/{project}/messages:send``        -> 200 ``{"name": ...}``
* OAuth 2.0     ``POST /token`` (service-account JWT bearer grant)   -> an access token for FCM

Each request is recorded (provider, method, path, headers, parsed JSON or form body, time, the
status answered). Per provider (``sendgrid``, ``twilio``, ``fcm``, ``oauth``) it can be told to answer
slowly and/or to fail: the next N requests (deterministic) or a fraction of them, with a 5xx, a 429
(+ ``Retry-After``), a permanent error (SendGrid 400 validation, Twilio 400 error 21211 invalid number,
FCM 404 UNREGISTERED), a validation error (400, FCM INVALID_ARGUMENT) or an auth error (401/403).
A ``mix`` of faults draws per request one of several failure kinds, or ``slow`` (the normal answer,
but after ``slow_ms``: past the client's timeout, the provider has accepted a message whose answer
is lost), each with its own probability.
Replies are shaped like the real ones (Twilio ``{code, message, more_info, status}``, Google
``{"error": {code, message, status, details: [{"@type": ...FcmError, errorCode}]}}``), so the SDKs
raise the same exceptions they raise in production.

Python::

    with ProviderStub() as stub:
        os.environ.update(stub.env())           # all three providers -> the stub
        stub.configure("twilio", fail_next=2, failure="5xx")
        ...
        stub.requests("twilio")

HTTP control, for another process (the local runtime, benchmarks; see ``RemoteStub``):
``GET /_stub/requests[?provider=x][&summary=1]`` (summary: a few fields per request, for large
runs), ``GET /_stub/stats`` (per provider: received, answered, in flight), ``POST /_stub/config``
(JSON: provider + the keyword arguments of ``configure``), ``POST /_stub/reset``, ``GET /_stub/env``,
``GET /_stub/health``.

After a send it accepted, the stub can report delivery back as the providers do (signed SendGrid
Event Webhook batches to a configured URL, Twilio status callbacks to each message's
StatusCallback): ``configure_callbacks(...)`` / ``POST /_stub/callbacks``, ``--callbacks-to URL``;
see ``provider_callbacks``.

CLI: ``python -m notify_local.provider_stub --port 8025 [--print-env] [--callbacks-to URL]``. Binds
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import functools
import json
import random
import re
import secrets
import shlex
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, cast
from urllib.parse import parse_qs, urlsplit

from . import provider_callbacks

LOOPBACK = "127.0.0.1"
PROVIDERS = ("sendgrid", "twilio", "fcm", "oauth")
Failure = Literal["5xx", "429", "permanent", "validation", "auth"]
FAILURES: tuple[str, ...] = ("5xx", "429", "permanent", "validation", "auth")

STUB_SENDGRID_API_KEY = "SG.stub-api-key"
STUB_SENDGRID_FROM = "notifications@example.com"
STUB_TWILIO_SID = "AC" + "0123456789abcdef" * 2
STUB_TWILIO_TOKEN = "stub-auth-token"  # noqa: S105 - a stub credential
STUB_TWILIO_FROM = "+15005550006"
STUB_FCM_PROJECT = "stub-project"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

_TWILIO_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_FCM_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


# ---------------------------------------------------------------- records and behaviour


@dataclass
class RecordedRequest:
    provider: str  # sendgrid | twilio | fcm | oauth | unknown
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any  # parsed JSON, the form as {name: value} (a list when repeated), text, or None
    time: float  # epoch seconds when the request arrived
    status: int | None = None  # what the stub answered (None while it is still delaying)
    failed: bool = False  # True when the answer was an injected failure
    slow: bool = False  # True when the answer was held back for ``slow_ms`` (a ``mix`` draw)
    answered_at: float | None = None  # epoch seconds when the answer was ready (None while delaying)
    response_headers: dict[str, str] = field(default_factory=dict)  # what the stub answered
    response: Any = None  # the JSON body the stub answered, if any

    def header(self, name: str) -> str | None:
        lower = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lower), None)

    @property
    def bearer(self) -> str | None:
        value = self.header("Authorization") or ""
        return value[7:] if value.startswith("Bearer ") else None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        value = self.header("Authorization") or ""
        if not value.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password

    @property
    def notification_id(self) -> str | None:
        """The notification a SendGrid mail is about (``custom_args.notification_id``), if any."""
        args = self.body.get("custom_args") if isinstance(self.body, dict) else None
        value = args.get("notification_id") if isinstance(args, dict) else None
        return str(value) if value is not None else None

    def summary(self) -> RequestSummary:
        return RequestSummary(
            self.provider,
            self.time,
            self.answered_at,
            self.status,
            self.failed,
            self.slow,
            self.notification_id,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordedRequest:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What a large run needs of a recorded request (``GET /_stub/requests?summary=1``)."""

    provider: str
    time: float
    answered_at: float | None
    status: int | None
    failed: bool
    slow: bool
    notification_id: str | None

    @property
    def accepted(self) -> bool:
        """The provider took the message (a 2xx), whether or not the client saw the answer."""
        return self.status is not None and 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestSummary:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


MIX_KINDS: tuple[str, ...] = (*FAILURES, "slow")


@dataclass
class Behaviour:
    delay_ms: int = 0
    fail_next: int = 0
    fail_rate: float = 0.0
    failure: str = "5xx"
    retry_after: float | None = None
    status: int | None = None  # the 5xx status to answer (default 503)
    seed: int | None = None
    # Instead of fail_rate/failure: per request one draw picks a kind of MIX_KINDS with its
    # probability (the rest answer normally); "slow" answers normally after slow_ms.
    mix: dict[str, float] = field(default_factory=dict)
    slow_ms: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.failure not in FAILURES:
            raise ValueError(f"failure must be one of {', '.join(FAILURES)}")
        if self.delay_ms < 0 or self.fail_next < 0:
            raise ValueError("delay_ms and fail_next must be >= 0")
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError("fail_rate must be between 0 and 1")
        if self.status is not None and not 500 <= self.status <= 599:
            raise ValueError("status must be a 5xx status")
        unknown = sorted(set(self.mix) - set(MIX_KINDS))
        if unknown:
            raise ValueError(f"mix kinds must be among {', '.join(MIX_KINDS)}, not {', '.join(unknown)}")
        if any(rate < 0 for rate in self.mix.values()) or sum(self.mix.values()) > 1.0 + 1e-9:
            raise ValueError("mix rates must be >= 0 and sum to at most 1")
        if self.slow_ms < 0:
            raise ValueError("slow_ms must be >= 0")
        if self.seed is not None:
            self.rng = random.Random(self.seed)

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "rng"}

    def should_fail(self) -> bool:
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return self.fail_rate > 0 and self.rng.random() < self.fail_rate

    def decide(self) -> tuple[str | None, bool]:
        """For the next request: (the failure kind to answer, or None; whether to answer slowly)."""
        if self.mix and self.fail_next == 0:
            draw = self.rng.random()
            for kind, rate in self.mix.items():
                if draw < rate:
                    return (None, True) if kind == "slow" else (kind, False)
                draw -= rate
            return None, False
        return (self.failure if self.should_fail() else None), False


Reply = tuple[int, dict[str, str], bytes]


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(data).encode()


# ---------------------------------------------------------------- service account for FCM


@functools.cache
def _rsa_private_key_pem() -> str:
    """One 2048-bit key per process: generating one costs ~0.1 s."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def make_service_account(token_uri: str, project_id: str = STUB_FCM_PROJECT) -> dict[str, str]:
    """A Google service-account key file (as a dict) whose token exchange goes to ``token_uri``."""
    email = f"notify-stub@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": "stubkey" + "0" * 33,
        "private_key": _rsa_private_key_pem(),
        "client_email": email,
        "client_id": "100000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }


def _b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def _verify_jwt(assertion: str) -> tuple[bool, str, dict[str, Any]]:
    """(ok, reason, claims). RS256 signatures made with this process's stub key are verified."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return False, "assertion is not a JWT", {}
    try:
        head, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except (ValueError, binascii.Error):
        return False, "assertion is not a JWT", {}
    if not isinstance(claims, dict) or not isinstance(head, dict):
        return False, "assertion is not a JWT", {}
    if head.get("alg") != "RS256":
        return False, "alg must be RS256", claims
    if str(head.get("kid", "")).startswith("stubkey"):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        key = serialization.load_pem_private_key(_rsa_private_key_pem().encode(), password=None)
        public = cast(rsa.RSAPrivateKey, key).public_key()
        try:
            public.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return False, "Invalid JWT Signature.", claims
    if float(claims.get("exp", 0)) < time.time():
        return False, "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.", claims
    return True, "", claims


# ---------------------------------------------------------------- the provider replies


def _sendgrid_error(status: int, message: str, field_name: str | None = None) -> Reply:
    return _json(status, {"errors": [{"message": message, "field": field_name, "help": None}]})


def _twilio_error(status: int, code: int, message: str) -> Reply:
    return _json(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def _google_error(status: int, google_status: str, message: str, fcm_code: str | None = None) -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if fcm_code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": fcm_code}]
    return _json(status, {"error": error})


def failure_reply(provider: str, behaviour: Behaviour, body: Any, kind: str | None = None) -> Reply:
    """The injected failure ``kind`` (default ``behaviour.failure``) in ``provider``'s own error shape."""
    kind = kind or behaviour.failure
    status = behaviour.status or 503
    retry = {} if behaviour.retry_after is None else {"Retry-After": f"{behaviour.retry_after:g}"}
    form = body if isinstance(body, dict) else {}
    if provider == "sendgrid":
        if kind == "5xx":
            status, headers, data = _sendgrid_error(status, "Service Unavailable")
            return status, {**headers, **retry}, data
        if kind == "429":
            status, headers, data = _sendgrid_error(429, "too many requests")
            return status, {**headers, **retry}, data
        if kind == "auth":
            return _sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")
        return _sendgrid_error(
            400, "Does not contain a valid address.", "personalizations.0.to.0.email"
        )  # permanent and validation
    if provider == "twilio":
        if kind == "5xx":
            status, headers, data = _twilio_error(status, 20500, "An internal server error has occurred")
            return status, {**headers, **retry}, data
        if kind == "429":
            status, headers, data = _twilio_error(429, 20429, "Too Many Requests")
            return status, {**headers, **retry}, data
        if kind == "auth":
            return _twilio_error(401, 20003, "Authenticate")
        if kind == "validation":
            return _twilio_error(400, 21602, "Message body is required.")
        return _twilio_error(400, 21211, f"The 'To' number {form.get('To', '')} is not a valid phone number.")
    if provider == "fcm":
        if kind == "5xx":
            google_status = "INTERNAL" if status == 500 else "UNAVAILABLE"
            status, headers, data = _google_error(
                status, google_status, "The service is currently unavailable.", google_status
            )
            return status, {**headers, **retry}, data
        if kind == "429":
            status, headers, data = _google_error(
                429, "RESOURCE_EXHAUSTED", "Quota exceeded for sending messages.", "QUOTA_EXCEEDED"
            )
            return status, {**headers, **retry}, data
        if kind == "auth":
            return _google_error(403, "PERMISSION_DENIED", "The caller does not have permission")
        if kind == "validation":
            return _google_error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
            )
        return _google_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
    # oauth
    if kind == "5xx":
        status, headers, data = _json(
            status, {"error": "internal_failure", "error_description": "Backend Error"}
        )
        return status, {**headers, **retry}, data
    if kind == "429":
        status, headers, data = _json(429, {"error": "rate_limit_exceeded"})
        return status, {**headers, **retry}, data
    return _json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})


# ---------------------------------------------------------------- the stub


class ProviderStub:
    """The stub server: ``ThreadingHTTPServer`` on 127.0.0.1 in a daemon thread (port 0 = free port)."""

    def __init__(self, port: int = 0, max_records: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)  # oldest dropped (benchmarks)
        self._behaviour: dict[str, Behaviour] = {p: Behaviour() for p in PROVIDERS}
        self._received: dict[str, int] = {}
        self._answered: dict[str, int] = {}
        self._tokens: set[str] = set()
        self._server = _Server((LOOPBACK, port), _Handler)
        self._server.stub = self
        self._thread: threading.Thread | None = None
        self.port = int(self._server.server_address[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.token_uri = f"{self.url}/token"
        # feedback: delivery callbacks after accepted sends (provider_callbacks)
        self._callbacks = provider_callbacks.CallbackConfig()
        self._emitter: provider_callbacks.Emitter | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> ProviderStub:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                daemon=True,
                name=f"provider-stub-{self.port}",
            )
            self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # wakes delayed replies
        if self._emitter is not None:
            self._emitter.stop()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ProviderStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ control

    def configure(
        self,
        provider: str,
        *,
        delay_ms: int = 0,
        fail_next: int = 0,
        fail_rate: float = 0.0,
        failure: Failure | str = "5xx",
        retry_after: float | None = None,
        status: int | None = None,
        seed: int | None = None,
        mix: dict[str, float] | None = None,
        slow_ms: int = 0,
    ) -> dict[str, Any]:
        """Set ``provider``'s whole behaviour (what is not given goes back to its default, so
        ``configure(provider)`` recovers). ``fail_next`` failures come first, then ``fail_rate`` —
        or, when given, the ``mix`` ({kind: probability}, kinds: the failures and ``slow``)."""
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}")
        behaviour = Behaviour(
            delay_ms=int(delay_ms),
            fail_next=int(fail_next),
            fail_rate=float(fail_rate),
            failure=str(failure),
            retry_after=None if retry_after is None else float(retry_after),
            status=None if status is None else int(status),
            seed=seed,
            mix={str(k): float(v) for k, v in (mix or {}).items()},
            slow_ms=int(slow_ms),
        )
        with self._lock:
            self._behaviour[provider] = behaviour
        return behaviour.public()

    def config(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {p: b.public() for p, b in self._behaviour.items()}

    def requests(self, provider: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                dataclasses.replace(r) for r in self._records if provider is None or r.provider == provider
            ]

    def summaries(self, provider: str | None = None) -> list[RequestSummary]:
        with self._lock:
            return [r.summary() for r in self._records if provider is None or r.provider == provider]

    def stats(self) -> dict[str, dict[str, int]]:
        """Per provider: requests received, answered, and in flight (received, not answered yet)."""
        with self._lock:
            return {
                p: {
                    "received": self._received.get(p, 0),
                    "answered": self._answered.get(p, 0),
                    "in_flight": self._received.get(p, 0) - self._answered.get(p, 0),
                }
                for p in sorted(set(self._received) | set(PROVIDERS))
            }

    def reset(self) -> None:
        """Forget recorded requests, counters, behaviours and callback outcomes (issued tokens and the
        callback URL stay)."""
        with self._lock:
            self._records.clear()
            self._received.clear()
            self._answered.clear()
            self._behaviour = {p: Behaviour() for p in PROVIDERS}
            self._callbacks = provider_callbacks.CallbackConfig(sendgrid_url=self._callbacks.sendgrid_url)
            if self._emitter is not None:
                self._emitter.reset()

    # ------------------------------------------------------------ feedback: delivery callbacks

    def configure_callbacks(
        self,
        *,
        sendgrid_url: str | None = None,
        sendgrid: str = "delivered",
        twilio: str = "delivered",
        delay_ms: int = 200,
    ) -> dict[str, Any]:
        """What the stub reports after an accepted send (see provider_callbacks): the SendGrid
        Event Webhook URL (None keeps the current one, "" turns SendGrid's off), each provider's
        outcome (`none` reports nothing) and the delay after the send's reply."""
        config = provider_callbacks.CallbackConfig(
            sendgrid_url=self._callbacks.sendgrid_url if sendgrid_url is None else sendgrid_url,
            sendgrid=sendgrid,
            twilio=twilio,
            delay_ms=int(delay_ms),
        )
        with self._lock:
            self._callbacks = config
        return dataclasses.asdict(config)

    def callbacks(self, provider: str | None = None) -> list[provider_callbacks.SentCallback]:
        """The callbacks the stub has sent (with the status each got)."""
        emitter = self._emitter
        if emitter is None:
            return []
        with self._lock:
            return [c for c in list(emitter.sent) if provider is None or c.provider == provider]

    def _after_send(self, provider: str, record: RecordedRequest, reply: Reply) -> None:
        config = self._callbacks
        delay = config.delay_ms / 1000
        if provider == "sendgrid" and reply[0] == 202 and config.sendgrid_url and config.sendgrid != "none":
            events = provider_callbacks.sendgrid_events(
                record.body, reply[1].get("X-Message-Id", ""), config.sendgrid
            )
            url = config.sendgrid_url
            self._emit(
                delay,
                lambda: self._emitter_post("sendgrid", url, *provider_callbacks.sendgrid_request(events)),
            )
        elif provider == "twilio" and reply[0] == 201 and config.twilio != "none":
            form = record.body if isinstance(record.body, dict) else {}
            url = str(form.get("StatusCallback") or "")
            token = (record.basic_auth or ("", ""))[1]
            if not provider_callbacks.is_http_url(url):
                return
            for i, params in enumerate(
                provider_callbacks.twilio_statuses(form, json.loads(reply[2]), config.twilio)
            ):
                body, headers = provider_callbacks.twilio_request(url, params, token)
                self._emit(
                    delay * (i + 1), functools.partial(self._emitter_post, "twilio", url, body, headers)
                )

    def _emit(self, delay_s: float, run: Any) -> None:
        with self._lock:
            if self._emitter is None:
                self._emitter = provider_callbacks.Emitter()
            emitter = self._emitter
        emitter.later(delay_s, run)

    def _emitter_post(self, provider: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        if self._emitter is not None:
            self._emitter.post(provider, url, body, headers)

    def issued_tokens(self) -> set[str]:
        with self._lock:
            return set(self._tokens)

    def service_account(self, project_id: str = STUB_FCM_PROJECT) -> dict[str, str]:
        return make_service_account(self.token_uri, project_id)

    def env(self) -> dict[str, str]:
        """Environment variables that point every provider at this stub."""
        return {
            "SENDGRID_API_KEY": STUB_SENDGRID_API_KEY,
            "SENDGRID_BASE_URL": self.url,
            "SENDGRID_DEFAULT_FROM": STUB_SENDGRID_FROM,
            "TWILIO_ACCOUNT_SID": STUB_TWILIO_SID,
            "TWILIO_AUTH_TOKEN": STUB_TWILIO_TOKEN,
            "TWILIO_FROM_NUMBER": STUB_TWILIO_FROM,
            "TWILIO_BASE_URL": self.url,
            "FCM_SERVICE_ACCOUNT_JSON": json.dumps(self.service_account()),
            "FCM_PROJECT_ID": STUB_FCM_PROJECT,
            "FCM_BASE_URL": self.url,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": provider_callbacks.sendgrid_public_key(),
        }

    # ------------------------------------------------------------ request handling (handler threads)

    def _handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: Any
    ) -> Reply:
        provider, route = self._route(method, path)
        record = RecordedRequest(provider, method, path, query, headers, body, time.time())
        with self._lock:
            self._records.append(record)
            self._received[provider] = self._received.get(provider, 0) + 1
            behaviour = self._behaviour.get(provider)
            failure, slow = behaviour.decide() if behaviour else (None, False)
            delay = (behaviour.slow_ms if slow else behaviour.delay_ms) / 1000 if behaviour else 0.0
        if delay:
            self._stopping.wait(delay)
        if failure is not None and behaviour is not None:
            reply = failure_reply(provider, behaviour, body, failure)
        elif route is None:
            reply = _json(404, {"error": f"the provider stub has no route {method} {path}"})
        else:
            reply = route(record)
        with self._lock:
            record.status, record.failed, record.response_headers = (
                reply[0],
                failure is not None,
                dict(reply[1]),
            )
            record.slow, record.answered_at = slow, time.time()
            record.response = json.loads(reply[2]) if reply[2] else None
            self._answered[provider] = self._answered.get(provider, 0) + 1
        if failure is None:
            self._after_send(provider, record, reply)
        return reply

    def _route(self, method: str, path: str) -> tuple[str, Any]:
        if path == "/v3/mail/send":
            return "sendgrid", self._sendgrid if method == "POST" else self._not_allowed
        if match := _TWILIO_PATH.match(path):
            return "twilio", (
                lambda r: self._twilio(r, match["sid"])
            ) if method == "POST" else self._not_allowed
        if match := _FCM_PATH.match(path):
            return "fcm", (
                lambda r: self._fcm(r, match["project"])
            ) if method == "POST" else self._not_allowed
        if path == "/token":
            return "oauth", self._token if method == "POST" else self._not_allowed
        return "unknown", None

    @staticmethod
    def _not_allowed(record: RecordedRequest) -> Reply:
        return _json(405, {"error": f"{record.method} not allowed"})

    def _sendgrid(self, record: RecordedRequest) -> Reply:
        if not (record.bearer or "").strip():
            return _sendgrid_error(401, "The provided authorization grant is invalid, expired, or revoked")
        mail = record.body
        if not isinstance(mail, dict):
            return _sendgrid_error(400, "Bad Request", None)
        personalizations = mail.get("personalizations")
        if not isinstance(personalizations, list) or not personalizations:
            return _sendgrid_error(400, "The personalizations field is required.", "personalizations")
        for i, p in enumerate(personalizations):
            if not isinstance(p, dict) or not p.get("to"):
                return _sendgrid_error(400, "The to array is required.", f"personalizations.{i}.to")
        if not isinstance(mail.get("from"), dict) or not mail["from"].get("email"):
            return _sendgrid_error(400, "The from object must be provided.", "from.email")
        if not mail.get("template_id"):
            if not mail.get("subject") and not all(p.get("subject") for p in personalizations):
                return _sendgrid_error(400, "The subject is required.", "subject")
            if not mail.get("content"):
                return _sendgrid_error(400, "The content value must be a string.", "content")
        message_id = secrets.token_urlsafe(16)[:22]
        return 202, {"X-Message-Id": message_id}, b""

    def _twilio(self, record: RecordedRequest, sid: str) -> Reply:
        auth = record.basic_auth
        if auth is None or auth[0] != sid or not auth[1]:
            return _twilio_error(401, 20003, "Authenticate")
        form = record.body if isinstance(record.body, dict) else {}
        to, sender, service = form.get("To"), form.get("From"), form.get("MessagingServiceSid")
        if not to:
            return _twilio_error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _twilio_error(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body") and not form.get("MediaUrl") and not form.get("ContentSid"):
            return _twilio_error(400, 21602, "Message body is required.")
        if not _E164.fullmatch(str(to)):
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        message_sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        body = str(form.get("Body", ""))
        return _json(
            201,
            {
                "account_sid": sid,
                "api_version": "2010-04-01",
                "body": body,
                "date_created": now,
                "date_sent": None,
                "date_updated": now,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": sender,
                "messaging_service_sid": service,
                "num_media": "0",
                "num_segments": str(max(1, -(-len(body) // 160))),
                "price": None,
                "price_unit": "USD",
                "sid": message_sid,
                "status": "queued" if sender else "accepted",
                "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}/Media.json"
                },
                "to": to,
                "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json",
            },
        )

    def _fcm(self, record: RecordedRequest, project: str) -> Reply:
        token = record.bearer
        with self._lock:
            known = token in self._tokens
        if not known:
            return _google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            )
        message = record.body.get("message") if isinstance(record.body, dict) else None
        if not isinstance(message, dict):
            return _google_error(
                400, "INVALID_ARGUMENT", "Invalid JSON payload received.", "INVALID_ARGUMENT"
            )
        targets = [k for k in ("token", "fid", "topic", "condition") if message.get(k)]
        if len(targets) != 1:
            return _google_error(
                400,
                "INVALID_ARGUMENT",
                "Exactly one of token, fid, topic or condition must be specified.",
                "INVALID_ARGUMENT",
            )
        return _json(200, {"name": f"projects/{project}/messages/0:{time.time_ns()}%{secrets.token_hex(8)}"})

    def _token(self, record: RecordedRequest) -> Reply:
        form = record.body if isinstance(record.body, dict) else {}
        if form.get("grant_type") != JWT_BEARER:
            return _json(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        ok, reason, _claims = _verify_jwt(str(form.get("assertion", "")))
        if not ok:
            return _json(400, {"error": "invalid_grant", "error_description": reason})
        token = "ya29.stub-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
        return _json(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    # ------------------------------------------------------------ HTTP control (handler threads)

    def _control(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        if method == "GET" and path == "/_stub/requests":
            provider = query["provider"][0] if query.get("provider") else None
            if query.get("summary", ["0"])[0] not in ("", "0"):
                return _json(200, {"requests": [r.to_dict() for r in self.summaries(provider)]})
            return _json(200, {"requests": [r.to_dict() for r in self.requests(provider)]})
        if method == "GET" and path == "/_stub/stats":
            return _json(200, self.stats())
        if method == "GET" and path == "/_stub/config":
            return _json(200, self.config())
        if method == "POST" and path == "/_stub/config":
            if not isinstance(body, dict) or "provider" not in body:
                return _json(400, {"error": "expected a JSON object with 'provider'"})
            options = {k: v for k, v in body.items() if k != "provider"}
            try:
                config = self.configure(str(body["provider"]), **options)
            except (TypeError, ValueError) as exc:
                return _json(400, {"error": str(exc)})
            return _json(200, {"ok": True, "provider": body["provider"], "config": config})
        if method == "POST" and path == "/_stub/reset":
            self.reset()
            return _json(200, {"ok": True})
        if method == "POST" and path == "/_stub/callbacks":
            options = body if isinstance(body, dict) else {}
            try:
                return _json(200, {"ok": True, "callbacks": self.configure_callbacks(**options)})
            except (TypeError, ValueError) as exc:
                return _json(400, {"error": str(exc)})
        if method == "GET" and path == "/_stub/callbacks":
            return _json(200, {"callbacks": [c.to_dict() for c in self.callbacks()]})
        if method == "GET" and path == "/_stub/env":
            return _json(200, self.env())
        if method == "GET" and path == "/_stub/health":
            return _json(200, {"ok": True, "url": self.url})
        return _json(404, {"error": f"no control route {method} {path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default (5) refuses bursts of concurrent sends
    stub: ProviderStub


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    # Headers and body go out as two writes: without TCP_NODELAY, Nagle + the client's delayed ACK
    # add ~40 ms to every reply, which would distort every latency measured against the stub.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the record is the log

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse(self, raw: bytes) -> Any:
        if not raw:
            return None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        text = raw.decode("utf-8", "replace")
        if content_type == "application/json" or (not content_type and text[:1] in "{["):
            try:
                return json.loads(text)
            except ValueError:
                return text
        if content_type == "application/x-www-form-urlencoded":
            parsed = parse_qs(text, keep_blank_values=True)
            return {k: v[0] if len(v) == 1 else v for k, v in parsed.items()}
        return text

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        body = self._parse(self._read_body())
        stub = self.server.stub
        if parts.path.startswith("/_stub/"):
            status, headers, data = stub._control(self.command, parts.path, query, body)
        else:
            status, headers, data = stub._handle(
                self.command, parts.path, query, dict(self.headers.items()), body
            )
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch


# ---------------------------------------------------------------- a client for another process


class RemoteStub:
    """The HTTP control API of a stub running elsewhere (``python -m notify_local.provider_stub``)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the stub URL must be http(s)")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, data: Any = None) -> Any:
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            self.url + path, data=body, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310 - http(s) only
            return json.loads(reply.read() or b"null")

    def configure(self, provider: str, **options: Any) -> dict[str, Any]:
        reply = self._call("POST", "/_stub/config", {"provider": provider, **options})
        return cast(dict[str, Any], reply["config"])

    def requests(self, provider: str | None = None) -> list[RecordedRequest]:
        path = "/_stub/requests" + (f"?provider={provider}" if provider else "")
        return [RecordedRequest.from_dict(r) for r in self._call("GET", path)["requests"]]

    def summaries(self, provider: str | None = None) -> list[RequestSummary]:
        path = "/_stub/requests?summary=1" + (f"&provider={provider}" if provider else "")
        return [RequestSummary.from_dict(r) for r in self._call("GET", path)["requests"]]

    def stats(self) -> dict[str, dict[str, int]]:
        return cast(dict[str, dict[str, int]], self._call("GET", "/_stub/stats"))

    def reset(self) -> None:
        self._call("POST", "/_stub/reset", {})

    def configure_callbacks(self, **options: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("POST", "/_stub/callbacks", options)["callbacks"])

    def env(self) -> dict[str, str]:
        return cast(dict[str, str], self._call("GET", "/_stub/env"))


def iter_env_lines(env: dict[str, str]) -> Iterator[str]:
    for key, value in env.items():
        yield f"export {key}={shlex.quote(value)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m notify_local.provider_stub", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--port", type=int, default=8025, help="port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--print-env", action="store_true", help="print `export` lines for the providers")
    parser.add_argument(
        "--callbacks-to",
        metavar="URL",
        default="",
        help="the platform's public URL (e.g. http://127.0.0.1:3000): report deliveries to its "
        "/callbacks/sendgrid (Twilio reports to each message's StatusCallback anyway)",
    )
    args = parser.parse_args(argv)
    stub = ProviderStub(args.port).start()
    if args.callbacks_to:
        stub.configure_callbacks(sendgrid_url=args.callbacks_to.rstrip("/") + "/callbacks/sendgrid")
    print(f"provider stub listening on {stub.url}", flush=True)
    if args.print_env:
        for line in iter_env_lines(stub.env()):
            print(line, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stub.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
