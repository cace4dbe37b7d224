"""The provider stub's callbacks: after a send it accepted, the stub reports delivery back as the
real providers do, so tests and `make dev` exercise the whole loop.

* SendGrid: an Event Webhook POST (a JSON array: `processed`, then the outcome) to the configured
  URL, signed with ECDSA P-256 / SHA-256 over timestamp + body by a key pair made per process;
  its public key (base64 DER, the form SendGrid shows) is `SENDGRID_WEBHOOK_PUBLIC_KEY` in the
  stub's env. The message's custom_args are copied onto every event, as SendGrid does.
* Twilio: a form POST per status (`sent`, then the outcome) to the message's own StatusCallback,
  signed with the account's auth token (X-Twilio-Signature: HMAC-SHA1 over the URL and the sorted
  parameters). Twilio has no account-wide URL: no StatusCallback, no callback.

The signing is written here from the providers' documented algorithms, not with their SDKs, so the
platform's verification (which uses the SDK helpers) is checked against an independent signer.

Outcomes: per provider by `configure(...)` (`delivered` by default, `none` turns callbacks off),
and for SendGrid by the recipient's local part too: `bounce…@` bounces, `blocked…@` is blocked,
`drop…@` is dropped, `spam…@` / `complaint…@` is a spam report, `defer…@` is deferred.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

SENDGRID_OUTCOMES = (
    "delivered",
    "bounce",
    "blocked",
    "dropped",
    "spamreport",
    "deferred",
    "open",
    "click",
    "none",
)
TWILIO_OUTCOMES = ("delivered", "undelivered", "failed", "stop", "none")
_MAGIC = (
    ("bounce", "bounce"),
    ("blocked", "blocked"),
    ("drop", "dropped"),
    ("spam", "spamreport"),
    ("complaint", "spamreport"),
    ("defer", "deferred"),
)


@functools.cache
def _ecdsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def sendgrid_public_key() -> str:
    """The verification key, base64 DER (SubjectPublicKeyInfo), as SendGrid's settings show it."""
    from cryptography.hazmat.primitives import serialization

    der = (
        _ecdsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def sign_sendgrid(body: str, timestamp: str) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = _ecdsa_key().sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


def sign_twilio(url: str, params: dict[str, str], auth_token: str) -> str:
    data = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def sendgrid_request(
    events: list[dict[str, Any]], timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """A signed Event Webhook request: (body, headers)."""
    body = json.dumps(events)
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return body.encode(), {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": sign_sendgrid(body, stamp),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "User-Agent": "SendGrid Event API (notify-local stub)",
    }


def twilio_request(url: str, params: dict[str, str], auth_token: str) -> tuple[bytes, dict[str, str]]:
    return urlencode(params).encode(), {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": sign_twilio(url, params, auth_token),
        "User-Agent": "TwilioProxy/1.1 (notify-local stub)",
    }


def sendgrid_events(
    mail: dict[str, Any], message_id: str, outcome: str, now: int | None = None
) -> list[dict[str, Any]]:
    """The events SendGrid would report for `mail`: processed, then `outcome`, per recipient."""
    now = int(time.time()) if now is None else now
    args = {**(mail.get("custom_args") or {})}
    events: list[dict[str, Any]] = []
    for personalization in mail.get("personalizations") or []:
        custom = {**args, **(personalization.get("custom_args") or {})}
        for recipient in personalization.get("to") or []:
            email = str(recipient.get("email", ""))
            kind = outcome
            for prefix, magic in _MAGIC:
                if email.lower().startswith(prefix):
                    kind = magic
            base = {"email": email, "timestamp": now, "sg_message_id": f"{message_id}.filter0001", **custom}
            events.append({**base, "event": "processed", "sg_event_id": secrets.token_urlsafe(16)})
            event: dict[str, Any] = {**base, "sg_event_id": secrets.token_urlsafe(16)}
            if kind == "bounce":
                event |= {
                    "event": "bounce",
                    "type": "bounce",
                    "status": "5.1.1",
                    "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                }
            elif kind == "blocked":
                event |= {
                    "event": "bounce",
                    "type": "blocked",
                    "status": "4.0.0",
                    "reason": "421 4.7.0 Try again later, closing connection.",
                }
            elif kind == "dropped":
                event |= {"event": "dropped", "reason": "Bounced Address"}
            elif kind == "deferred":
                event |= {"event": "deferred", "attempt": "1", "response": "400 Try again later"}
            elif kind == "spamreport":
                event |= {"event": "spamreport"}
            elif kind in ("open", "click"):
                events.append(
                    {
                        **base,
                        "event": "delivered",
                        "sg_event_id": secrets.token_urlsafe(16),
                        "response": "250 OK",
                    }
                )
                event |= {"event": kind} | ({"url": "https://example.com/"} if kind == "click" else {})
            else:
                event |= {"event": "delivered", "response": "250 OK"}
            events.append(event)
    return events


def twilio_statuses(form: dict[str, Any], reply: dict[str, Any], outcome: str) -> list[dict[str, str]]:
    """The status callbacks Twilio would send for a message: sent, then `outcome`."""
    common = {
        "AccountSid": str(reply.get("account_sid", "")),
        "MessageSid": str(reply.get("sid", "")),
        "SmsSid": str(reply.get("sid", "")),
        "To": str(form.get("To", "")),
        "From": str(form.get("From", "") or ""),
        "ApiVersion": "2010-04-01",
    }
    final: dict[str, str]
    if outcome == "delivered":
        final = {"MessageStatus": "delivered", "SmsStatus": "delivered"}
    elif outcome == "stop":
        final = {"MessageStatus": "undelivered", "SmsStatus": "undelivered", "ErrorCode": "21610"}
    elif outcome == "failed":
        final = {"MessageStatus": "failed", "SmsStatus": "failed", "ErrorCode": "30008"}
    else:
        final = {"MessageStatus": "undelivered", "SmsStatus": "undelivered", "ErrorCode": "30003"}
    return [{**common, "MessageStatus": "sent", "SmsStatus": "sent"}, {**common, **final}]


@dataclass
class SentCallback:
    provider: str
    url: str
    body: str
    status: int | None
    error: str | None
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CallbackConfig:
    sendgrid_url: str = ""  # the account's Event Webhook URL (empty: SendGrid reports nothing)
    sendgrid: str = "delivered"
    twilio: str = "delivered"
    delay_ms: int = 200  # after the send's reply

    def __post_init__(self) -> None:
        if self.sendgrid not in SENDGRID_OUTCOMES:
            raise ValueError(f"sendgrid must be one of {', '.join(SENDGRID_OUTCOMES)}")
        if self.twilio not in TWILIO_OUTCOMES:
            raise ValueError(f"twilio must be one of {', '.join(TWILIO_OUTCOMES)}")
        if self.delay_ms < 0:
            raise ValueError("delay_ms must be >= 0")
        if self.sendgrid_url and not self.sendgrid_url.startswith(("http://", "https://")):
            raise ValueError("sendgrid_url must be an http(s) URL")


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    run: Callable[[], None] = field(compare=False)


class Emitter:
    """Sends callbacks at their due time from a few threads of its own (never from a request's)."""

    def __init__(self, workers: int = 4) -> None:
        self._lock = threading.Condition()
        self._jobs: list[_Job] = []
        self._seq = itertools.count()
        self._stopped = False
        self.sent: list[SentCallback] = []
        self._threads = [
            threading.Thread(target=self._loop, daemon=True, name=f"stub-callbacks-{i}")
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def later(self, delay_s: float, run: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._jobs, _Job(time.monotonic() + delay_s, next(self._seq), run))
            self._lock.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and (not self._jobs or self._jobs[0].due > time.monotonic()):
                    self._lock.wait(timeout=None if not self._jobs else self._jobs[0].due - time.monotonic())
                if self._stopped:
                    return
                job = heapq.heappop(self._jobs)
            job.run()

    def post(self, provider: str, url: str, body: bytes, headers: dict[str, str]) -> None:
        status: int | None = None
        error: str | None = None
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) checked
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
                status = reply.status
                reply.read()
        except urllib.error.HTTPError as exc:
            status, error = exc.code, exc.read()[:500].decode("utf-8", "replace")
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.sent.append(
                SentCallback(provider, url, body.decode("utf-8", "replace"), status, error, time.time())
            )

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self._jobs.clear()


def is_http_url(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")
