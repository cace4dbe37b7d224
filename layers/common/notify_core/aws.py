"""A small AWS client for the calls on the cold-start path: SQS and Secrets Manager over their JSON
protocols, signed with Signature Version 4, on the standard library alone.

Why not boto3: importing boto3 and creating a client costs ~165 ms of CPU (boto3, s3transfer,
botocore, urllib3, the service model and endpoint rules), paid by the first request of every
container that enqueues or reads a secret: more than the whole first request otherwise. The
functions make a handful of simple calls (SendMessageBatch, GetQueueAttributes, GetSecretValue); this
client makes any action of a JSON-protocol service from its name, the way boto3 does:

    sqs = aws.client("sqs")
    sqs.send_message_batch(QueueUrl=url, Entries=[...])      # -> the response as a dict
    aws.client("secretsmanager").get_secret_value(SecretId=arn)

Requests and responses have boto3's shapes for these actions (the JSON protocol carries them as is).
Errors: `AwsServiceError` (AWS answered with an error: `.code`, `.status`; boto3's ClientError) and
`AwsTransportError` (no usable answer: connection, timeout; boto3's BotoCoreError), both `AwsError`.

Credentials: the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), as
Lambda provides them; elsewhere (a laptop with a profile or SSO) botocore's credential chain, imported
only then. Region: AWS_REGION / AWS_DEFAULT_REGION. Endpoint: the `endpoint_url` given, else
AWS_ENDPOINT_URL_<SERVICE> / AWS_ENDPOINT_URL (as boto3 reads them), else the service's regional
endpoint. Connections are kept alive per thread; a request is retried (with jittered backoff, up to
`max_attempts` in all) on connection errors, throttling and 5xx, as botocore's standard mode does.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

__all__ = ["AwsClient", "AwsError", "AwsServiceError", "AwsTransportError", "Credentials", "client"]


@dataclass(frozen=True)
class Service:
    signing_name: str  # SigV4 service name
    endpoint_prefix: str  # <prefix>.<region>.amazonaws.com
    env_name: str  # AWS_ENDPOINT_URL_<env_name>
    json_version: str  # application/x-amz-json-<version>
    target_prefix: str  # X-Amz-Target: <prefix>.<Action>
    extra_headers: tuple[tuple[str, str], ...] = ()
    # Actions whose ClientRequestToken boto3 fills in when the caller does not (one per call, the
    # same for its retries, so that a retried create is not a second one).
    idempotency_tokens: frozenset[str] = frozenset()


SERVICES = {
    # SQS's JSON protocol (AWS JSON 1.0); query-compatible error codes in x-amzn-query-error.
    "sqs": Service("sqs", "sqs", "SQS", "1.0", "AmazonSQS", (("x-amzn-query-mode", "true"),)),
    "secretsmanager": Service(
        "secretsmanager",
        "secretsmanager",
        "SECRETS_MANAGER",
        "1.1",
        "secretsmanager",
        idempotency_tokens=frozenset({"CreateSecret", "PutSecretValue", "UpdateSecret"}),
    ),
}
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)


class AwsError(Exception):
    """Any failure of an AWS call."""


class AwsServiceError(AwsError):
    """AWS answered with an error (boto3's ClientError)."""

    def __init__(self, code: str, message: str, status: int, action: str) -> None:
        super().__init__(f"{action}: {code} ({status}): {message}")
        self.code = code
        self.message = message
        self.status = status
        # boto3's ClientError.response, for code that reads the error code from there
        self.response = {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }


class AwsTransportError(AwsError):
    """No usable answer: the connection failed, timed out or the reply was not JSON."""


# ------------------------------------------------------------------ credentials and signing


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None

    @classmethod
    def resolve(cls) -> Credentials:
        key = os.environ.get("AWS_ACCESS_KEY_ID", "")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if key and secret:
            return cls(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
        # Not Lambda: profiles, SSO, container or instance credentials, as boto3 would find them.
        import botocore.session

        found = botocore.session.get_session().get_credentials()
        if found is None:
            raise AwsTransportError("no AWS credentials (environment, profile or instance role)")
        frozen = found.get_frozen_credentials()
        return cls(str(frozen.access_key), str(frozen.secret_key), frozen.token or None)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """Headers of a request signed with SigV4 (`headers` plus Host, X-Amz-Date, the token and
    Authorization). Every header given is signed."""
    now = now or datetime.now(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port and not (
        (parts.scheme == "https" and parts.port == 443) or (parts.scheme == "http" and parts.port == 80)
    ):
        host = f"{host}:{parts.port}"
    signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = amz_date
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    payload_hash = hashlib.sha256(body).hexdigest()
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,  # the JSON protocol sends none
            "".join(f"{n}:{signed[n]}\n" for n in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{credentials.secret_key}".encode(), day), region), service), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out = {k: v for k, v in headers.items()}
    out["Host"] = host
    out["X-Amz-Date"] = amz_date
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    out["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return out


# ------------------------------------------------------------------ transport

_ssl_context: ssl.SSLContext | None = None
_ssl_lock = threading.Lock()


def _context() -> ssl.SSLContext:
    """One TLS context per process (loading the CA bundle costs ~20 ms)."""
    global _ssl_context
    if _ssl_context is None:
        with _ssl_lock:
            if _ssl_context is None:
                bundle = os.environ.get("AWS_CA_BUNDLE") or None
                _ssl_context = ssl.create_default_context(cafile=bundle)
    return _ssl_context


def region_name() -> str:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise AwsTransportError("no AWS region: set AWS_REGION (Lambda sets it)")
    return region


def endpoint_for(service: Service, region: str, endpoint_url: str | None = None) -> str:
    url = (
        endpoint_url
        or os.environ.get(f"AWS_ENDPOINT_URL_{service.env_name}")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if url:
        return url.rstrip("/")
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{service.endpoint_prefix}.{region}.{suffix}"


class AwsClient:
    """One service's JSON-protocol API; `client.some_action(**params)` calls `SomeAction`."""

    def __init__(
        self,
        service: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.service = SERVICES[service]
        self.region = region or region_name()
        self.endpoint = endpoint_for(self.service, self.region, endpoint_url)
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AwsTransportError(f"not an http(s) endpoint: {self.endpoint}")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = parts.path or "/"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max(1, max_attempts)
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        action = "".join(part.title() for part in name.split("_"))
        return lambda **params: self.call(action, params)

    # ------------------------------------------------------------ one call

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        if action in self.service.idempotency_tokens and "ClientRequestToken" not in params:
            params = {**params, "ClientRequestToken": str(uuid.uuid4())}
        body = json.dumps(params, separators=(",", ":")).encode()
        headers = {
            "Content-Type": f"application/x-amz-json-{self.service.json_version}",
            "X-Amz-Target": f"{self.service.target_prefix}.{action}",
            **dict(self.service.extra_headers),
        }
        for attempt in range(1, self.max_attempts + 1):
            try:
                status, reply_headers, data = self._send(body, headers)
            except AwsTransportError:
                if attempt == self.max_attempts:
                    raise
                self._pause(attempt)
                continue
            if 200 <= status < 300:
                try:
                    return dict(json.loads(data)) if data.strip() else {}
                except ValueError as exc:
                    raise AwsTransportError(f"{action}: the reply is not JSON") from exc
            error = self._error(action, status, reply_headers, data)
            if attempt < self.max_attempts and (status in RETRYABLE_STATUS or error.code in THROTTLING):
                self._pause(attempt)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _pause(attempt: int) -> None:
        time.sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))

    @staticmethod
    def _error(action: str, status: int, headers: dict[str, str], data: bytes) -> AwsServiceError:
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        code = str(payload.get("__type") or payload.get("code") or f"Http{status}")
        code = code.rsplit("#", 1)[-1].split(":", 1)[0]
        query_code = headers.get("x-amzn-query-error", "")
        if query_code:  # SQS: the code its query protocol used, which callers know
            code = query_code.split(";", 1)[0]
        message = str(payload.get("message") or payload.get("Message") or "")
        return AwsServiceError(code, message, status, action)

    # ------------------------------------------------------------ HTTP

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._scheme == "https":
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.connect_timeout, context=_context()
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _send(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        credentials = Credentials.resolve()
        url = f"{self.endpoint}{'' if self._path.endswith('/') else '/'}"
        signed = sign("POST", url, headers, body, credentials, self.region, self.service.signing_name)
        # A kept-alive connection may have been closed by the server while the container was
        # frozen: such a failure before any reply is retried once on a new connection, free.
        for fresh in (False, True):
            conn = self._connection()
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    conn.connect()
                    if conn.sock is not None:
                        conn.sock.settimeout(self.read_timeout)
                conn.request("POST", urlsplit(url).path or "/", body=body, headers=signed)
                reply = conn.getresponse()
                data = reply.read()
                reply_headers = {k.lower(): v for k, v in reply.getheaders()}
                if reply_headers.get("connection", "").lower() == "close":
                    self._drop()
                return reply.status, reply_headers, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if reused and not fresh:
                    continue
                raise AwsTransportError(f"connection to {self.endpoint} failed: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:  # timeouts, refused, TLS, bad replies
                self._drop()
                kind = "timed out" if isinstance(exc, socket.timeout | TimeoutError) else "failed"
                raise AwsTransportError(f"request to {self.endpoint} {kind}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover


def client(service: str, endpoint_url: str | None = None, **options: Any) -> AwsClient:
    """A client for `service` ("sqs", "secretsmanager"); keyword options as AwsClient's."""
    return AwsClient(service, endpoint_url or None, **options)
