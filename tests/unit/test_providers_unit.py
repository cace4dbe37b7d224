"""Provider layer without network: lazy SDK imports, the console provider, the registry, settings
and every classification helper as a pure function."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.error
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from notify_core.config import get_settings
from notify_core.providers import (
    OutgoingMessage,
    PermanentProviderError,
    ProviderError,
    ProviderSettings,
    Receipt,
    TransientProviderError,
    get_provider,
    reset_providers,
)
from notify_core.providers.base import (
    ENV_NAMES,
    ProviderSettingsError,
    classify_http_status,
    classify_requests_error,
    classify_transport_error,
    forget_secrets,
    load_secret,
    parse_retry_after,
    unexpected_error,
)
from notify_core.providers.console import ConsoleProvider
from notify_core.providers.fcm import classify_fcm_error, parse_fcm_error_body
from notify_core.providers.sendgrid import classify_sendgrid_error
from notify_core.providers.twilio import classify_twilio_error, rebase_url

SDK_MODULES = (
    "sendgrid",
    "python_http_client",
    "twilio",
    "firebase_admin",
    "google.auth",
    "requests",
    "httpx",
)
PROVIDER_ENV = ENV_NAMES


@pytest.fixture(autouse=True)
def clean_providers(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)
    reset_providers()
    yield
    reset_providers()


def message(
    channel: str = "email", provider: str = "console", payload: dict[str, Any] | None = None
) -> OutgoingMessage:
    return OutgoingMessage.build(
        notification_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        channel=channel,
        provider=provider,
        payload=payload or {"to": "ada@example.com", "subject": "Hi", "body": "Hello"},
        attempt=1,
    )


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PROVIDER_ENV}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------- lazy SDK imports


def test_importing_the_package_imports_no_provider_sdk() -> None:
    # Given a fresh interpreter, When the package is imported and the console provider used
    code = (
        "import sys, uuid\n"
        "import notify_core.providers as p\n"
        f"sdks = {SDK_MODULES!r}\n"
        "loaded = [m for m in sdks if m in sys.modules]\n"
        "assert not loaded, f'imported at package import: {loaded}'\n"
        "p.get_provider('console').send(p.OutgoingMessage.build(uuid.uuid4(), uuid.uuid4(), 'sms', 'console',"
        " {'to': '+14155550100', 'body': 'x'}, 1))\n"
        "loaded = [m for m in sdks if m in sys.modules]\n"
        "assert not loaded, f'imported by the console provider: {loaded}'\n"
    )
    result = run_python(code, POWERTOOLS_LOG_LEVEL="WARNING")
    # Then no provider SDK was imported
    assert result.returncode == 0, result.stderr


def test_each_sdk_is_imported_only_when_its_provider_is_built() -> None:
    code = (
        "import sys\n"
        "from notify_core.providers import get_provider\n"
        "get_provider('sendgrid')\n"
        "assert 'sendgrid' in sys.modules\n"
        "assert 'twilio' not in sys.modules and 'firebase_admin' not in sys.modules, sorted(sys.modules)\n"
        "get_provider('twilio')\n"
        "assert 'twilio' in sys.modules and 'firebase_admin' not in sys.modules\n"
    )
    result = run_python(code, SENDGRID_API_KEY="SG.x", TWILIO_ACCOUNT_SID="AC1", TWILIO_AUTH_TOKEN="t")
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- console provider and registry


class FakeLog:
    def __init__(self) -> None:
        self.entries: list[tuple[str, dict[str, Any]]] = []

    def info(self, msg: str, extra: dict[str, Any]) -> None:
        self.entries.append((msg, extra))


def test_console_is_a_provider_built_by_the_registry() -> None:
    assert isinstance(get_provider("console"), ConsoleProvider)
    assert get_provider("console").name == "console"


def test_console_provider_logs_and_returns_a_receipt() -> None:
    log = FakeLog()
    msg = message()

    receipt = ConsoleProvider(log=log).send(msg)

    assert isinstance(receipt, Receipt)
    assert receipt.provider_message_id and receipt.provider_message_id.startswith("console-")
    assert receipt.response == {
        "provider": "console",
        "channel": "email",
        "message_id": receipt.provider_message_id,
    }
    json.dumps(receipt.response)
    ((_, extra),) = log.entries
    assert extra["provider_message_id"] == receipt.provider_message_id
    assert extra["notification_id"] == str(msg.notification_id)
    assert extra["tenant_id"] == str(msg.tenant_id)
    assert extra["payload"] == msg.payload.model_dump(by_alias=True, exclude_none=True)
    json.dumps(extra)


def test_console_provider_shortens_long_bodies() -> None:
    log = FakeLog()
    ConsoleProvider(log=log).send(
        message(payload={"to": "a@example.com", "subject": "s", "body": "x" * 5000})
    )
    ((_, extra),) = log.entries
    assert len(extra["payload"]["body"]) < 1100


def test_providers_are_cached_until_reset() -> None:
    first = get_provider("console")
    assert get_provider("console") is first
    reset_providers()
    assert get_provider("console") is not first


def test_first_use_from_many_threads_builds_one_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.x")
    barrier = threading.Barrier(16)
    seen: list[int] = []

    def worker() -> None:
        barrier.wait()
        seen.append(id(get_provider("sendgrid")))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 16 and len(set(seen)) == 1


def test_unknown_provider_is_permanent() -> None:
    with pytest.raises(PermanentProviderError) as caught:
        get_provider("pigeon")
    assert caught.value.code == "unknown_provider"


def test_malformed_settings_are_permanent_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVIDER_TIMEOUT_SECONDS", "soon")
    with pytest.raises(PermanentProviderError) as caught:
        get_provider("twilio")
    assert caught.value.code == "not_configured"
    assert "PROVIDER_TIMEOUT_SECONDS" in caught.value.message


@pytest.mark.parametrize(
    ("provider", "channel", "payload"),
    [
        ("sendgrid", "email", {"to": "a@example.com", "subject": "s", "body": "b"}),
        ("twilio", "sms", {"to": "+14155550100", "body": "b"}),
        ("fcm", "push", {"token": "t", "title": "t", "body": "b"}),
    ],
)
def test_missing_credentials_fail_at_send_not_at_build(
    provider: str, channel: str, payload: dict[str, Any]
) -> None:
    built = get_provider(provider)  # no credentials: still builds
    with pytest.raises(PermanentProviderError) as caught:
        built.send(message(channel, provider, payload))
    assert caught.value.code == "not_configured"


# ---------------------------------------------------------------- settings


def test_settings_defaults() -> None:
    s = ProviderSettings.from_env({})
    assert s.sendgrid_base_url == "https://api.sendgrid.com"
    assert s.provider_timeout_seconds == 5.0
    assert s.provider_connect_timeout_seconds == 2.0
    assert s.read_timeout("sendgrid") == 5.0
    assert s.twilio_base_url == s.fcm_base_url == ""
    assert s.sendgrid_api_key.get_secret_value() == ""


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ProviderSettingsError, match="PROVIDER_TIMEOUT_SECONDS"):
        ProviderSettings.from_env({"PROVIDER_TIMEOUT_SECONDS": "0"})
    with pytest.raises(ProviderSettingsError, match="TWILIO_BASE_URL"):
        ProviderSettings.from_env({"TWILIO_BASE_URL": "localhost:8025"})
    assert (
        ProviderSettings.from_env({"FCM_BASE_URL": "http://127.0.0.1:1/"}).fcm_base_url
        == "http://127.0.0.1:1"
    )


def test_secrets_fill_what_the_environment_leaves_empty() -> None:
    arns: list[str] = []

    def loader(arn: str) -> dict[str, Any]:
        arns.append(arn)
        return {
            "SENDGRID_API_KEY": "SG.from-secret",
            "TWILIO_AUTH_TOKEN": "from-secret",
            "FCM_SERVICE_ACCOUNT_JSON": {"type": "service_account"},
        }

    s = ProviderSettings.from_env(
        {"PROVIDER_SECRETS_ARN": "arn:secret", "TWILIO_AUTH_TOKEN": "from-env"}, secret_loader=loader
    )
    assert arns == ["arn:secret"]
    assert s.sendgrid_api_key.get_secret_value() == "SG.from-secret"
    assert s.twilio_auth_token.get_secret_value() == "from-env"  # the environment wins
    assert json.loads(s.fcm_service_account_json.get_secret_value()) == {"type": "service_account"}
    assert "SG.from-secret" not in repr(s)


def test_secret_is_fetched_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given Secrets Manager (notify_core.aws's wire replaced) holding the provider secret
    from notify_core import aws

    stored = {"SENDGRID_API_KEY": "SG.s"}
    calls: list[dict[str, Any]] = []

    def wire(self: aws.AwsClient, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body)
        calls.append(request)
        if request["SecretId"].endswith("missing"):
            return 400, {}, b'{"__type": "ResourceNotFoundException", "Message": "not found"}'
        return 200, {}, json.dumps({"ARN": request["SecretId"], "SecretString": json.dumps(stored)}).encode()

    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setattr(aws.AwsClient, "_send", wire)
    forget_secrets()
    arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:providers"
    # Then it is read once, cached for the process, read again after forget_secrets
    assert load_secret(arn) == {"SENDGRID_API_KEY": "SG.s"}
    stored["SENDGRID_API_KEY"] = "SG.changed"
    assert load_secret(arn) == {"SENDGRID_API_KEY": "SG.s"}
    assert len(calls) == 1
    forget_secrets()
    assert load_secret(arn) == {"SENDGRID_API_KEY": "SG.changed"}
    # And a secret that does not exist is a permanent "not configured"
    with pytest.raises(PermanentProviderError) as caught:
        load_secret(arn + "-missing")
    assert caught.value.code == "not_configured"
    forget_secrets()
    get_settings.cache_clear()


# ---------------------------------------------------------------- generic classification


@pytest.mark.parametrize(
    ("status", "error_class", "code"),
    [
        (500, TransientProviderError, "http_500"),
        (502, TransientProviderError, "http_502"),
        (503, TransientProviderError, "http_503"),
        (504, TransientProviderError, "http_504"),
        (429, TransientProviderError, "http_429"),
        (408, TransientProviderError, "http_408"),
        (400, PermanentProviderError, "http_400"),
        (404, PermanentProviderError, "http_404"),
        (413, PermanentProviderError, "http_413"),
        (422, PermanentProviderError, "http_422"),
        (401, PermanentProviderError, "auth"),
        (403, PermanentProviderError, "auth"),
    ],
)
def test_http_status_classification(status: int, error_class: type[ProviderError], code: str) -> None:
    error = classify_http_status(status, "boom", provider="x", retry_after=3.0)
    assert type(error) is error_class
    assert (error.code, error.status, error.provider, error.message) == (code, status, "x", "boom")
    if isinstance(error, TransientProviderError):
        assert error.retry_after == 3.0


def test_retry_after_parsing() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 2.5 ") == 2.5
    assert parse_retry_after(4) == 4.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0.0
    for unreadable in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(unreadable) is None


@pytest.mark.parametrize(
    ("exc", "code", "ambiguous"),
    [
        # the answer did not come back: the provider may have accepted the message
        (TimeoutError("timed out"), "timeout", True),
        (ConnectionResetError(104, "reset"), "connection_lost", True),
        (http.client.RemoteDisconnected("closed"), "connection_lost", True),
        (http.client.IncompleteRead(b"x"), "connection_lost", True),
        # urllib wraps what fails while connecting and sending: nothing reached the provider
        (urllib.error.URLError(TimeoutError("timed out")), "connect_timeout", False),
        (urllib.error.URLError("timed out"), "connect_timeout", False),
        (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "connection", False),
        (urllib.error.URLError(OSError(-2, "Name or service not known")), "connection", False),
    ],
)
def test_transport_errors_are_transient(exc: BaseException, code: str, ambiguous: bool) -> None:
    error = classify_transport_error(exc, provider="p")
    assert isinstance(error, TransientProviderError)
    assert (error.code, error.ambiguous) == (code, ambiguous)


def test_requests_errors_say_whether_the_request_was_sent() -> None:
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

    refused = requests.exceptions.ConnectionError(
        MaxRetryError(None, "/", NewConnectionError(None, "refused"))  # type: ignore[arg-type]
    )
    aborted = requests.exceptions.ConnectionError(ProtocolError("Connection aborted."))
    cases = {
        "connect timeout": (requests.exceptions.ConnectTimeout(), ("connect_timeout", False)),
        "read timeout": (requests.exceptions.ReadTimeout(), ("timeout", True)),
        "refused": (refused, ("connection", False)),
        "aborted after sending": (aborted, ("connection_lost", True)),
    }
    for name, (exc, expected) in cases.items():
        error = classify_requests_error(exc, provider="p")
        assert error is not None, name
        assert (error.code, error.ambiguous) == expected, name
    assert classify_requests_error(ValueError("x"), provider="p") is None


def test_non_transport_errors_are_not_claimed_by_the_transport_helper() -> None:
    assert classify_transport_error(ValueError("x"), provider="p") is None
    assert classify_transport_error(KeyError("x"), provider="p") is None
    http_error = urllib.error.HTTPError("http://x", 500, "boom", {}, None)  # type: ignore[arg-type]
    assert classify_transport_error(http_error, provider="p") is None


def test_unknown_sdk_exceptions_are_transient() -> None:
    error = unexpected_error(RuntimeError("weird"), provider="twilio")
    assert isinstance(error, TransientProviderError)
    assert error.code == "unexpected"
    assert "RuntimeError" in error.message


def test_error_to_dict_is_json() -> None:
    error = TransientProviderError(
        "m", "http_429", retry_after=2.0, provider="fcm", status=429, provider_code="Q"
    )
    assert json.loads(json.dumps(error.to_dict())) == {
        "code": "http_429",
        "message": "m",
        "transient": True,
        "fault": "provider",
        "provider": "fcm",
        "status": 429,
        "provider_code": "Q",
        "retry_after": 2.0,
    }
    assert str(error) == "http_429: m"


# ---------------------------------------------------------------- provider-specific classification


def test_sendgrid_classification_reads_the_error_body() -> None:
    body = json.dumps({"errors": [{"message": "Does not contain a valid address.", "field": "to"}]}).encode()
    error = classify_sendgrid_error(400, body, None)
    assert (type(error), error.code) == (PermanentProviderError, "http_400")
    assert "Does not contain a valid address. (to)" in error.message

    throttled = classify_sendgrid_error(429, b"not json", "12")
    assert isinstance(throttled, TransientProviderError)
    assert (throttled.code, throttled.retry_after) == ("http_429", 12.0)
    assert classify_sendgrid_error(401, b"", None).code == "auth"
    assert classify_sendgrid_error(502, None, None).code == "http_502"


@pytest.mark.parametrize(
    ("status", "code", "error_class", "expected"),
    [
        (400, 21211, PermanentProviderError, "invalid_number"),
        (400, 21614, PermanentProviderError, "invalid_number"),
        (400, 21610, PermanentProviderError, "invalid_number"),
        (400, 21612, PermanentProviderError, "invalid_number"),
        (400, "21408", PermanentProviderError, "http_400"),
        (400, 21602, PermanentProviderError, "http_400"),
        (401, 20003, PermanentProviderError, "auth"),
        (403, None, PermanentProviderError, "auth"),
        (404, 20404, PermanentProviderError, "http_404"),
        (429, 20429, TransientProviderError, "http_429"),
        (500, 20500, TransientProviderError, "http_500"),
        (503, None, TransientProviderError, "http_503"),
    ],
)
def test_twilio_classification(
    status: int, code: int | str | None, error_class: type[ProviderError], expected: str
) -> None:
    error = classify_twilio_error(status, code, "msg", "5")
    assert type(error) is error_class
    assert error.code == expected
    assert error.provider_code == (str(code) if code is not None else None)
    if isinstance(error, TransientProviderError):
        assert error.retry_after == 5.0


def test_twilio_base_url_rebasing() -> None:
    base = urlsplit("http://127.0.0.1:8025")
    assert (
        rebase_url("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json", base)
        == "http://127.0.0.1:8025/2010-04-01/Accounts/AC1/Messages.json"
    )
    prefixed = urlsplit("http://127.0.0.1:8025/twilio/")
    assert (
        rebase_url("https://api.dublin.ie1.twilio.com/2010-04-01/x.json?a=1", prefixed)
        == "http://127.0.0.1:8025/twilio/2010-04-01/x.json?a=1"
    )


def fcm_body(status: str, message: str, fcm_code: str | None = None) -> bytes:
    error: dict[str, Any] = {"code": 0, "message": message, "status": status}
    if fcm_code:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []},
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code},
        ]
    return json.dumps({"error": error}).encode()


def test_fcm_error_body_parsing() -> None:
    assert parse_fcm_error_body(fcm_body("NOT_FOUND", "gone", "UNREGISTERED")) == (
        "NOT_FOUND",
        "UNREGISTERED",
        "gone",
    )
    assert parse_fcm_error_body(fcm_body("UNAVAILABLE", "later")) == ("UNAVAILABLE", None, "later")
    assert parse_fcm_error_body(b"<html>") == (None, None, "")
    assert parse_fcm_error_body(None) == (None, None, "")


@pytest.mark.parametrize(
    ("status", "google_status", "fcm_code", "error_class", "expected"),
    [
        (404, "NOT_FOUND", "UNREGISTERED", PermanentProviderError, "unregistered"),
        (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", PermanentProviderError, "invalid_argument"),
        (400, "INVALID_ARGUMENT", None, PermanentProviderError, "invalid_argument"),
        (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", PermanentProviderError, "sender_id_mismatch"),
        (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", PermanentProviderError, "third_party_auth"),
        (403, "PERMISSION_DENIED", None, PermanentProviderError, "auth"),
        (401, "UNAUTHENTICATED", None, PermanentProviderError, "auth"),
        (404, "NOT_FOUND", None, PermanentProviderError, "http_404"),
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", TransientProviderError, "http_429"),
        (503, "UNAVAILABLE", "UNAVAILABLE", TransientProviderError, "http_503"),
        (500, "INTERNAL", "INTERNAL", TransientProviderError, "http_500"),
        (502, None, None, TransientProviderError, "http_502"),
    ],
)
def test_fcm_classification(
    status: int,
    google_status: str | None,
    fcm_code: str | None,
    error_class: type[ProviderError],
    expected: str,
) -> None:
    error = classify_fcm_error(status, google_status, fcm_code, "msg", "30")
    assert type(error) is error_class
    assert error.code == expected
    assert error.status == status
    if isinstance(error, TransientProviderError):
        assert error.retry_after == 30.0


# ---------------------------------------------------------------- SDK exceptions the stub cannot produce


@pytest.fixture
def fcm_provider(monkeypatch: pytest.MonkeyPatch) -> Any:
    from notify_local.provider_stub import make_service_account

    monkeypatch.setenv(
        "FCM_SERVICE_ACCOUNT_JSON", json.dumps(make_service_account("http://127.0.0.1:9/token"))
    )
    monkeypatch.setenv("FCM_BASE_URL", "http://127.0.0.1:9")
    return get_provider("fcm")


def test_fcm_maps_sdk_and_google_auth_exceptions(fcm_provider: Any) -> None:
    import requests
    from firebase_admin import exceptions as fb
    from google.auth import exceptions as ga

    def classify(exc: Exception) -> ProviderError:
        return fcm_provider._classify(exc)

    slow = classify(fb.DeadlineExceededError("slow", cause=requests.exceptions.ReadTimeout()))
    assert (slow.code, getattr(slow, "ambiguous", None)) == ("timeout", True)
    refused = classify(fb.UnavailableError("down", cause=requests.exceptions.ConnectTimeout()))
    assert (refused.code, getattr(refused, "ambiguous", None)) == ("connect_timeout", False)
    unknown = classify(fb.UnknownError("?", cause=RuntimeError("?")))
    assert (type(unknown), unknown.code) == (TransientProviderError, "unexpected")

    # a failed token request means no push was sent
    transport = ga.TransportError("token request failed")
    transport.__cause__ = requests.exceptions.ReadTimeout()
    token = classify(transport)
    assert (token.code, getattr(token, "ambiguous", None)) == ("token_unavailable", False)
    retryable = classify(ga.RefreshError("503", retryable=True))
    assert (type(retryable), retryable.code) == (TransientProviderError, "token_unavailable")
    denied = classify(ga.RefreshError("invalid_grant"))
    assert (type(denied), denied.code) == (PermanentProviderError, "auth")
    assert classify(ValueError("Message.data must not contain non-string values.")).code == "invalid_payload"
    assert classify(RuntimeError("?")).code == "unexpected"


def test_fcm_points_the_sdk_at_the_base_url(fcm_provider: Any) -> None:
    assert fcm_provider.fcm_url == "http://127.0.0.1:9/v1/projects/stub-project/messages:send"


def test_fcm_payload_needs_exactly_one_target(fcm_provider: Any) -> None:
    for payload in ({"title": "t", "body": "b"}, {"token": "a", "topic": "b", "title": "t", "body": "b"}):
        with pytest.raises(PermanentProviderError) as caught:
            fcm_provider.send(message("push", "fcm", payload))
        assert caught.value.code == "invalid_payload"
