"""The providers through their REAL SDK clients against the local provider stub.

No database, Redis or SQS: these tests use none of the service fixtures, only the stub (a loopback
HTTP server in this process). Every assertion on a request is on what the stub received.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from notify_core.config import get_settings
from notify_core.providers import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
    get_provider,
    reset_providers,
)
from notify_core.providers.base import ENV_NAMES
from notify_local.provider_stub import (
    STUB_FCM_PROJECT,
    STUB_SENDGRID_API_KEY,
    STUB_SENDGRID_FROM,
    STUB_TWILIO_FROM,
    STUB_TWILIO_SID,
    STUB_TWILIO_TOKEN,
    ProviderStub,
    RemoteStub,
)

pytestmark = pytest.mark.integration

PROVIDER_ENV = (*ENV_NAMES, "TWILIO_EDGE", "TWILIO_REGION")  # the Twilio SDK reads these two itself

EMAIL = {"to": "ada@example.com", "subject": "Your code", "body": "It is 123456."}
SMS = {"to": "+14155550100", "body": "Your code is 123456."}
PUSH = {"token": "device-token-1", "title": "Hello", "body": "You have mail", "data": {"k": "v"}}
PAYLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "sendgrid": ("email", EMAIL),
    "twilio": ("sms", SMS),
    "fcm": ("push", PUSH),
}


@pytest.fixture(scope="module")
def stub() -> Iterator[ProviderStub]:
    with ProviderStub() as server:
        yield server


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail (and remember) any name lookup of a host other than loopback: nothing here may leave
    the machine, not even an SDK's background thread (google-auth's access-boundary lookup)."""
    attempts: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in ("127.0.0.1", "localhost", "::1"):
            attempts.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"provider tests resolve loopback only, not {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield attempts
    assert attempts == [], f"tried to reach {attempts}"


@pytest.fixture(autouse=True)
def stub_env(stub: ProviderStub, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Every provider pointed at the stub; fresh providers and a clean stub for each test."""
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    env = stub.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    stub.reset()
    reset_providers()
    yield env
    reset_providers()


def message(provider: str, payload: dict[str, Any] | None = None, attempt: int = 1) -> OutgoingMessage:
    channel, default = PAYLOADS[provider]
    return OutgoingMessage.build(
        notification_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        channel=channel,
        provider=provider,
        payload=default if payload is None else payload,
        attempt=attempt,
    )


def send(provider: str, payload: dict[str, Any] | None = None) -> Any:
    return get_provider(provider).send(message(provider, payload))


def send_error(provider: str, payload: dict[str, Any] | None = None) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        send(provider, payload)
    return caught.value


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jwt_claims(assertion: str) -> dict[str, Any]:
    segment = assertion.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


# ---------------------------------------------------------------- what each SDK sends


def test_sendgrid_request_carries_the_mail_and_the_receipt_the_message_id(stub: ProviderStub) -> None:
    # Given an email with every optional field
    msg = message(
        "sendgrid",
        {
            **EMAIL,
            "from": "team@example.org",
            "html": "<p>It is <b>123456</b>.</p>",
            "reply_to": "help@example.org",
        },
    )

    # When it is sent
    receipt = get_provider("sendgrid").send(msg)

    # Then SendGrid got one v3 mail send with the API key as bearer token
    (req,) = stub.requests("sendgrid")
    assert (req.method, req.path, req.status) == ("POST", "/v3/mail/send", 202)
    assert req.header("Authorization") == f"Bearer {STUB_SENDGRID_API_KEY}"
    body = req.body
    assert body["personalizations"] == [{"to": [{"email": "ada@example.com"}]}]
    assert body["from"] == {"email": "team@example.org"}
    assert body["subject"] == "Your code"
    assert body["content"] == [
        {"type": "text/plain", "value": "It is 123456."},
        {"type": "text/html", "value": "<p>It is <b>123456</b>.</p>"},
    ]
    assert body["reply_to"] == {"email": "help@example.org"}
    assert body["custom_args"] == {
        "notification_id": str(msg.notification_id),
        "tenant_id": str(msg.tenant_id),
    }
    # and the receipt carries X-Message-Id
    assert receipt.provider_message_id == req.response_headers["X-Message-Id"]
    assert receipt.response == {
        "provider": "sendgrid",
        "status_code": 202,
        "message_id": receipt.provider_message_id,
    }
    json.dumps(receipt.response)


def test_sendgrid_uses_the_default_sender_and_plain_text_only(stub: ProviderStub) -> None:
    send("sendgrid")
    (req,) = stub.requests("sendgrid")
    assert req.body["from"] == {"email": STUB_SENDGRID_FROM}
    assert req.body["content"] == [{"type": "text/plain", "value": "It is 123456."}]
    assert "reply_to" not in req.body


def test_twilio_request_carries_to_from_body_and_basic_auth(stub: ProviderStub) -> None:
    receipt = send("twilio")

    (req,) = stub.requests("twilio")
    assert (req.method, req.path, req.status) == (
        "POST",
        f"/2010-04-01/Accounts/{STUB_TWILIO_SID}/Messages.json",
        201,
    )
    assert req.header("Content-Type") == "application/x-www-form-urlencoded"
    callback = req.body.pop("StatusCallback")  # feedback: delivery reports come back (twilio_status)
    assert callback.startswith(get_settings().public_base_url + "/callbacks/twilio?notification_id=")
    assert req.body == {"To": "+14155550100", "From": STUB_TWILIO_FROM, "Body": "Your code is 123456."}
    assert req.basic_auth == (STUB_TWILIO_SID, STUB_TWILIO_TOKEN)
    assert receipt.provider_message_id == req.response["sid"]
    assert receipt.provider_message_id.startswith("SM")
    assert receipt.response == {
        "provider": "twilio",
        "status_code": 201,
        "sid": receipt.provider_message_id,
        "status": "queued",
    }


def test_twilio_uses_the_messaging_service_when_configured(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_MESSAGING_SERVICE_SID", "MG" + "1" * 32)
    reset_providers()

    send("twilio")

    (req,) = stub.requests("twilio")
    assert req.body.pop("StatusCallback")  # feedback
    assert req.body == {
        "To": "+14155550100",
        "MessagingServiceSid": "MG" + "1" * 32,
        "Body": "Your code is 123456.",
    }


def test_twilio_sender_from_the_payload_wins(stub: ProviderStub) -> None:
    send("twilio", {**SMS, "from": "+14155550199"})
    (req,) = stub.requests("twilio")
    assert req.body["From"] == "+14155550199"


def test_fcm_gets_a_token_from_the_stub_and_sends_the_message(
    stub: ProviderStub, stub_env: dict[str, str]
) -> None:
    receipt = send("fcm")

    # Then the service account's JWT went to the stub's token endpoint ...
    (token_req,) = stub.requests("oauth")
    assert (token_req.path, token_req.status) == ("/token", 200)
    assert token_req.body["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    account = json.loads(stub_env["FCM_SERVICE_ACCOUNT_JSON"])
    claims = jwt_claims(token_req.body["assertion"])
    assert claims["iss"] == account["client_email"]
    assert claims["aud"] == "https://oauth2.googleapis.com/token"  # google-auth's fixed audience
    assert "https://www.googleapis.com/auth/cloud-platform" in claims["scope"].split()
    # ... and the message was sent with the token it returned
    (req,) = stub.requests("fcm")
    assert (req.path, req.status) == (f"/v1/projects/{STUB_FCM_PROJECT}/messages:send", 200)
    assert req.bearer == token_req.response["access_token"]
    assert req.body == {
        "message": {
            "token": "device-token-1",
            "notification": {"title": "Hello", "body": "You have mail"},
            "data": {"k": "v"},
        }
    }
    assert receipt.provider_message_id == req.response["name"]
    assert receipt.provider_message_id.startswith(f"projects/{STUB_FCM_PROJECT}/messages/")


def test_fcm_topic_and_the_token_is_reused(stub: ProviderStub) -> None:
    send("fcm", {"topic": "news", "title": "Hello", "body": "Breaking"})
    send("fcm", {"topic": "news", "title": "Hello", "body": "Again"})

    assert len(stub.requests("oauth")) == 1
    first, second = stub.requests("fcm")
    assert first.body == {
        "message": {"topic": "news", "notification": {"title": "Hello", "body": "Breaking"}}
    }
    assert first.bearer == second.bearer


def test_fcm_project_id_from_the_environment_wins(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FCM_PROJECT_ID", "other-project")
    reset_providers()
    receipt = send("fcm")
    (req,) = stub.requests("fcm")
    assert req.path == "/v1/projects/other-project/messages:send"
    assert receipt.provider_message_id and receipt.provider_message_id.startswith("projects/other-project/")


# ---------------------------------------------------------------- failures and their classification

FAILURE_CASES = [
    # provider, failure, status, error class, code, provider_code
    ("sendgrid", "5xx", None, TransientProviderError, "http_503", None),
    ("sendgrid", "5xx", 500, TransientProviderError, "http_500", None),
    ("sendgrid", "429", None, TransientProviderError, "http_429", None),
    ("sendgrid", "permanent", None, PermanentProviderError, "http_400", None),
    ("sendgrid", "auth", None, PermanentProviderError, "auth", None),
    ("twilio", "5xx", None, TransientProviderError, "http_503", "20500"),
    ("twilio", "429", None, TransientProviderError, "http_429", "20429"),
    ("twilio", "permanent", None, PermanentProviderError, "invalid_number", "21211"),
    ("twilio", "validation", None, PermanentProviderError, "http_400", "21602"),
    ("twilio", "auth", None, PermanentProviderError, "auth", "20003"),
    ("fcm", "5xx", None, TransientProviderError, "http_503", "UNAVAILABLE"),
    ("fcm", "5xx", 500, TransientProviderError, "http_500", "INTERNAL"),
    ("fcm", "429", None, TransientProviderError, "http_429", "QUOTA_EXCEEDED"),
    ("fcm", "permanent", None, PermanentProviderError, "unregistered", "UNREGISTERED"),
    ("fcm", "validation", None, PermanentProviderError, "invalid_argument", "INVALID_ARGUMENT"),
    ("fcm", "auth", None, PermanentProviderError, "auth", "PERMISSION_DENIED"),
]


@pytest.mark.parametrize(
    ("provider", "failure", "status", "error_class", "code", "provider_code"),
    FAILURE_CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2] or 'default'}" for c in FAILURE_CASES],
)
def test_each_failure_maps_to_its_error_class_and_code(
    stub: ProviderStub,
    provider: str,
    failure: str,
    status: int | None,
    error_class: type[ProviderError],
    code: str,
    provider_code: str | None,
) -> None:
    # Given the provider answers the next request with the failure
    stub.configure(provider, fail_next=1, failure=failure, status=status)

    # When a message is sent
    error = send_error(provider)

    # Then the SDK's exception became exactly this typed error, after one HTTP attempt
    assert type(error) is error_class
    assert error.code == code
    assert error.provider == provider
    assert error.provider_code == provider_code
    assert error.status == stub.requests(provider)[-1].status
    assert len(stub.requests(provider)) == 1  # the SDKs' own retries are off: retry policy is ours


@pytest.mark.parametrize("provider", ["sendgrid", "twilio", "fcm"])
def test_429_retry_after_reaches_the_error(stub: ProviderStub, provider: str) -> None:
    stub.configure(provider, fail_next=1, failure="429", retry_after=7)
    error = send_error(provider)
    assert isinstance(error, TransientProviderError)
    assert (error.code, error.retry_after) == ("http_429", 7.0)


@pytest.mark.parametrize("provider", ["sendgrid", "twilio", "fcm"])
def test_503_with_retry_after_and_429_without(stub: ProviderStub, provider: str) -> None:
    stub.configure(provider, fail_next=1, failure="5xx", retry_after=2.5)
    error = send_error(provider)
    assert isinstance(error, TransientProviderError)
    assert (error.code, error.retry_after) == ("http_503", 2.5)

    stub.configure(provider, fail_next=1, failure="429")
    error = send_error(provider)
    assert isinstance(error, TransientProviderError)
    assert (error.code, error.retry_after) == ("http_429", None)


@pytest.mark.parametrize("provider", ["sendgrid", "twilio", "fcm"])
def test_fail_next_n_then_recover(stub: ProviderStub, provider: str) -> None:
    stub.configure(provider, fail_next=2, failure="5xx")

    outcomes = []
    for _ in range(3):
        try:
            send(provider)
            outcomes.append("sent")
        except TransientProviderError as exc:
            outcomes.append(exc.code)

    assert outcomes == ["http_503", "http_503", "sent"]
    assert [r.failed for r in stub.requests(provider)] == [True, True, False]


@pytest.mark.parametrize("provider", ["sendgrid", "twilio", "fcm"])
def test_slow_provider_beyond_the_timeout_is_a_transient_timeout(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    monkeypatch.setenv("PROVIDER_TIMEOUT_SECONDS", "0.3")
    reset_providers()
    stub.configure(provider, delay_ms=1500)

    error = send_error(provider)

    assert isinstance(error, TransientProviderError)
    assert (error.code, error.ambiguous) == ("timeout", True)  # the request went out: it may be sent
    assert len(stub.requests(provider)) == 1  # one attempt: no read retry doubled the wait


def test_slow_provider_within_the_timeout_succeeds(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVIDER_TIMEOUT_SECONDS", "5")
    reset_providers()
    stub.configure("twilio", delay_ms=200)
    assert send("twilio").provider_message_id


@pytest.mark.parametrize("provider", ["sendgrid", "twilio", "fcm"])
def test_closed_port_is_a_transient_connection_error(
    monkeypatch: pytest.MonkeyPatch, stub_env: dict[str, str], provider: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for key in ("SENDGRID_BASE_URL", "TWILIO_BASE_URL", "FCM_BASE_URL"):
        monkeypatch.setenv(key, dead)
    reset_providers()

    error = send_error(provider)

    assert isinstance(error, TransientProviderError)
    assert (error.code, error.ambiguous) == ("connection", False)  # nothing reached the provider


class KeepAliveServer:
    """A loopback HTTP/1.1 server answering 202 to every request, counting the connections it
    accepted; with ``close_after_answer`` it closes each connection after its answer (without saying
    so in a header), as a server ending an idle keep-alive connection does."""

    def __init__(self, close_after_answer: bool = False) -> None:
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests = 0
        self.ended = threading.Semaphore(0)  # released when a connection has been closed
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._answer(conn)
        finally:
            conn.close()
            self.ended.release()

    def _answer(self, conn: socket.socket) -> None:
        with conn.makefile("rb") as reader:
            while True:
                head = [line for line in iter(reader.readline, b"\r\n") if line]
                if not head:
                    return
                length = next(
                    (int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length")), 0
                )
                reader.read(length)
                self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 202 Accepted\r\nX-Message-Id: m%d\r\nContent-Length: 0\r\n\r\n" % self.requests
                )
                if self.close_after_answer:
                    return

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("close_after_answer", [False, True])
def test_sendgrid_keeps_its_connection_and_replaces_one_the_server_closed(
    monkeypatch: pytest.MonkeyPatch, close_after_answer: bool
) -> None:
    server = KeepAliveServer(close_after_answer)
    monkeypatch.setenv("SENDGRID_BASE_URL", server.url)
    reset_providers()
    receipts = []
    try:
        for _ in range(3):
            receipts.append(send("sendgrid"))
            # closed by the server: the next send starts after the close (not racing it)
            assert not close_after_answer or server.ended.acquire(timeout=5)
    finally:
        server.close()
    assert [r.provider_message_id for r in receipts] == ["m1", "m2", "m3"]
    assert server.requests == 3
    # kept: one connection for the three sends; closed by the server: a new one each time, and the
    # closed one is never mistaken for a lost answer
    assert server.connections == (3 if close_after_answer else 1)


def test_fcm_token_endpoint_unreachable_is_transient_and_sends_nothing(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = stub.service_account()
    account["token_uri"] = f"http://127.0.0.1:{free_port()}/token"
    monkeypatch.setenv("FCM_SERVICE_ACCOUNT_JSON", json.dumps(account))
    reset_providers()

    error = send_error("fcm")

    assert isinstance(error, TransientProviderError)
    assert (error.code, error.ambiguous) == ("token_unavailable", False)
    assert stub.requests("fcm") == []


def test_fcm_token_refused_is_a_permanent_auth_error(stub: ProviderStub) -> None:
    stub.configure("oauth", fail_next=1, failure="auth")
    error = send_error("fcm")
    assert isinstance(error, PermanentProviderError)
    assert error.code == "auth"
    assert stub.requests("fcm") == []


def test_fcm_token_signed_with_another_key_is_refused(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stub verifies the JWT signature against its key: a tampered key file fails like Google does.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    account = stub.service_account()
    account["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    monkeypatch.setenv("FCM_SERVICE_ACCOUNT_JSON", json.dumps(account))
    reset_providers()

    error = send_error("fcm")

    assert (type(error), error.code) == (PermanentProviderError, "auth")
    assert stub.requests("oauth")[0].response["error"] == "invalid_grant"


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("provider", "unset", "mentions"),
    [
        ("sendgrid", ["SENDGRID_API_KEY"], "SENDGRID_API_KEY"),
        ("sendgrid", ["SENDGRID_DEFAULT_FROM"], "SENDGRID_DEFAULT_FROM"),
        ("twilio", ["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"], "TWILIO_ACCOUNT_SID"),
        ("twilio", ["TWILIO_AUTH_TOKEN"], "TWILIO_AUTH_TOKEN"),
        ("twilio", ["TWILIO_FROM_NUMBER"], "TWILIO_FROM_NUMBER"),
        ("fcm", ["FCM_SERVICE_ACCOUNT_JSON"], "FCM_SERVICE_ACCOUNT_JSON"),
    ],
)
def test_missing_credentials_are_permanent_not_configured(
    stub: ProviderStub, monkeypatch: pytest.MonkeyPatch, provider: str, unset: list[str], mentions: str
) -> None:
    for name in unset:
        monkeypatch.delenv(name)
    reset_providers()

    error = send_error(provider)

    assert isinstance(error, PermanentProviderError)
    assert error.code == "not_configured"
    assert mentions in error.message
    assert stub.requests() == []


def test_malformed_service_account_is_permanent_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCM_SERVICE_ACCOUNT_JSON", '{"type": "service_account"}')
    reset_providers()
    error = send_error("fcm")
    assert (type(error), error.code) == (PermanentProviderError, "not_configured")


def test_concurrent_first_use_builds_one_provider_and_sends_in_parallel(stub: ProviderStub) -> None:
    barrier = threading.Barrier(12)
    providers: list[object] = []
    receipts: list[str | None] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        provider = get_provider("twilio")
        receipt = provider.send(message("twilio"))
        with lock:
            providers.append(provider)
            receipts.append(receipt.provider_message_id)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len({id(p) for p in providers}) == 1
    assert len(set(receipts)) == 12
    assert sorted(r.response["sid"] for r in stub.requests("twilio")) == sorted(receipts)  # type: ignore[type-var]


# ---------------------------------------------------------------- the stub's control API and CLI


def test_http_control_endpoints_drive_the_stub(stub: ProviderStub) -> None:
    remote = RemoteStub(stub.url)

    config = remote.configure("twilio", fail_next=1, failure="429", retry_after=3)
    assert config["fail_next"] == 1
    error = send_error("twilio")
    assert isinstance(error, TransientProviderError) and error.retry_after == 3.0
    send("twilio")

    recorded = remote.requests("twilio")
    assert [r.status for r in recorded] == [429, 201]
    assert recorded[1].body["To"] == SMS["to"]
    assert remote.env()["TWILIO_BASE_URL"] == stub.url

    remote.reset()
    assert remote.requests() == []
    with pytest.raises(Exception, match="400"):
        remote.configure("twilio", failure="nonsense")


def test_seeded_fail_rate_is_deterministic(stub: ProviderStub) -> None:
    stub.configure("sendgrid", fail_rate=0.5, seed=42, failure="5xx")
    expected_rng = random.Random(42)
    expected = [expected_rng.random() < 0.5 for _ in range(12)]

    failed = []
    for _ in range(12):
        try:
            send("sendgrid")
            failed.append(False)
        except TransientProviderError:
            failed.append(True)

    assert failed == expected
    assert sum(failed) == 7  # seed 42 fails seven of the twelve: the 2nd to 4th and the 8th to 11th


def test_a_seeded_mix_draws_each_fault_kind_and_slow_answers(stub: ProviderStub) -> None:
    # Given a mix of faults, slow answers (the normal reply, held back) among them
    mix = {"5xx": 0.2, "429": 0.2, "permanent": 0.2, "slow": 0.2}
    RemoteStub(stub.url).configure("sendgrid", mix=mix, slow_ms=1, retry_after=2, seed=7)
    expected_rng = random.Random(7)
    expected = []
    for _ in range(30):
        draw, kind = expected_rng.random(), None
        for name, rate in mix.items():
            if draw < rate:
                kind = name
                break
            draw -= rate
        expected.append(kind)
    # When 30 mails are sent
    for _ in range(30):
        with contextlib.suppress(ProviderError):
            send("sendgrid")
    # Then each request got the answer its draw picked, and the summary keys it by notification
    summaries = RemoteStub(stub.url).summaries("sendgrid")
    got = [
        ("slow" if s.slow else None) or {503: "5xx", 429: "429", 400: "permanent"}.get(s.status or 0)
        for s in summaries
    ]
    assert got == expected
    assert {k for k in expected if k} == set(mix)
    assert all(s.accepted == (k in (None, "slow")) for s, k in zip(summaries, expected, strict=True))
    assert all(s.answered_at is not None and s.answered_at >= s.time for s in summaries)
    assert [s.notification_id for s in summaries] == [r.notification_id for r in stub.requests("sendgrid")]
    assert all(s.notification_id for s in summaries)
    assert RemoteStub(stub.url).stats()["sendgrid"] == {"received": 30, "answered": 30, "in_flight": 0}
    with pytest.raises(Exception, match="400"):
        RemoteStub(stub.url).configure("sendgrid", mix={"5xx": 0.7, "slow": 0.5})


def test_standalone_stub_runs_as_a_module() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_local.provider_stub", "--port", "0", "--print-env"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("provider stub listening on http://127.0.0.1:")
        url = first.rsplit(" ", 1)[1]
        exports = [proc.stdout.readline().strip() for _ in range(10)]
        assert f"export SENDGRID_BASE_URL={url}" in exports
        assert RemoteStub(url).requests() == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
