"""The one HTTP client for customer URLs (webhook endpoints).

Rules, checked when an endpoint is created or changed (`check_url`) and again on every request
(`post`), because what a name resolves to can change in between (DNS rebinding):

* https only, unless WEBHOOK_ALLOW_PRIVATE_TARGETS (local mode) also allows http;
* at most 2,048 characters, a host, no user:password@, a port in range;
* every address the host resolves to must pass `addresses.refusal` (no private, loopback,
  link-local, CGNAT, unique-local, IPv4-mapped or metadata addresses). The request then connects to
  the address that was checked, not to the name: the name is resolved exactly once per request, and
  TLS still verifies the certificate for the name (SNI and Host carry it);
* no redirects are followed (a 3xx is a failed delivery);
* bounded: connect timeout, read timeout per socket read, an overall deadline (a watchdog shuts the
  socket down), and at most WEBHOOK_MAX_RESPONSE_BYTES of the response body are read.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import clients
from ..config import Settings, get_settings
from . import addresses

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 2.0

# host, port -> the addresses it resolves to (a seam for tests: no DNS in unit tests)
Resolver = Callable[[str, int], list[str]]


class TargetRefused(ValueError):
    """The URL may not be a webhook target; `reason` says why (shown to the API caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # the name as given (IDNA-encoded), or the address literal
    port: int
    path: str  # path and query, what the request line carries
    literal: addresses.IPAddress | None  # the host when it is an address literal


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _resolve_pool() -> ThreadPoolExecutor:
    return clients.get(
        "webhook-resolver",
        lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve"),
        lambda pool: pool.shutdown(wait=False),
    )


def parse_url(url: str, allow_private: bool) -> Target:
    """The URL's parts, or TargetRefused for anything but an absolute http(s) URL we may call."""
    if len(url) > MAX_URL_LENGTH:
        raise TargetRefused(f"longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise TargetRefused("contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise TargetRefused("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not carry a user name or password")
    host = parts.hostname or ""
    if not host:
        raise TargetRefused("has no host")
    literal = addresses.parse(host) if (":" in host or host[-1:].isdigit()) else None
    if literal is None:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise TargetRefused("the host is not a valid domain name") from None
        if host.replace(".", "").isdigit():
            raise TargetRefused("the host is not a valid address or domain name")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path, literal)


def resolve_checked(
    target: Target, allow_private: bool, resolver: Resolver | None = None, timeout: float | None = None
) -> str:
    """The address to connect to: the literal, or what the name resolves to. Every resolved address
    must be allowed (a name with one private address among public ones is refused)."""
    if target.literal is not None:
        why = addresses.refusal(target.literal, allow_private)
        if why is not None:
            raise TargetRefused(f"the host is a {why}")
        return str(target.literal)
    resolve = resolver or system_resolver
    try:
        if timeout is None:
            found = resolve(target.host, target.port)
        else:
            found = _resolve_pool().submit(resolve, target.host, target.port).result(timeout=timeout)
    except FutureTimeout:
        raise TargetRefused(f"the host {target.host} did not resolve in time") from None
    except (OSError, UnicodeError):
        raise TargetRefused(f"the host {target.host} does not resolve") from None
    allowed: list[str] = []
    for text in found:
        ip = addresses.parse(text)
        why = "unreadable address" if ip is None else addresses.refusal(ip, allow_private)
        if why is not None:
            raise TargetRefused(f"the host {target.host} resolves to a {why} ({text})")
        allowed.append(text)
    if not allowed:
        raise TargetRefused(f"the host {target.host} does not resolve")
    return allowed[0]


def check_url(url: str, settings: Settings | None = None, resolver: Resolver | None = None) -> str:
    """At creation or change: the URL as stored, or TargetRefused. In local mode host names are not
    resolved here (only at send), so a name that does not resolve yet can still be registered."""
    settings = settings or get_settings()
    allow = settings.webhook_allow_private_targets
    target = parse_url(url, allow)
    if target.literal is not None or not allow:
        resolve_checked(target, allow, resolver, timeout=RESOLVE_TIMEOUT_SECONDS)
    return url


# ---------------------------------------------------------------- sending


@dataclass(frozen=True, slots=True)
class Result:
    status: int | None  # the HTTP status, None when no answer came
    duration_ms: int
    error: str | None  # None on a 2xx

    @property
    def ok(self) -> bool:
        return self.error is None


class _PinnedConnection(http.client.HTTPConnection):
    """Connects to the checked address, not to the name, with a connect and a read timeout."""

    def __init__(self, target: Target, address: str, connect_s: float, read_s: float) -> None:
        super().__init__(target.host, target.port, timeout=connect_s)
        self._address = address
        self._read_s = read_s

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        sock.settimeout(self._read_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


class _PinnedTlsConnection(_PinnedConnection):
    def __init__(
        self, target: Target, address: str, connect_s: float, read_s: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(target, address, connect_s, read_s)
        self._context = context

    def connect(self) -> None:
        super().connect()
        # the certificate is checked for the name (SNI), whatever address we connected to
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def _tls_context() -> ssl.SSLContext:
    return clients.get("webhook-tls", ssl.create_default_context)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    settings: Settings | None = None,
    resolver: Resolver | None = None,
) -> Result:
    """POST `body` to a customer URL under every rule above. Never raises for what the target does:
    the Result says what happened (status, duration, error)."""
    settings = settings or get_settings()
    started = time.perf_counter()
    allow = settings.webhook_allow_private_targets

    def result(status: int | None, error: str | None) -> Result:
        return Result(status, int((time.perf_counter() - started) * 1000), error)

    try:
        target = parse_url(url, allow)
        address = resolve_checked(target, allow, resolver)
    except TargetRefused as exc:
        return result(None, f"refused: {exc.reason}")
    connect_s = settings.webhook_connect_timeout_seconds
    read_s = settings.webhook_read_timeout_seconds
    conn: _PinnedConnection = (
        _PinnedTlsConnection(target, address, connect_s, read_s, _tls_context())
        if target.scheme == "https"
        else _PinnedConnection(target, address, connect_s, read_s)
    )
    watchdog = threading.Timer(connect_s + read_s, _shutdown, args=(conn,))
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.request("POST", target.path, body=body, headers=dict(headers))
        response = conn.getresponse()
        _read_capped(response, settings.webhook_max_response_bytes)
        status = response.status
    except TimeoutError:
        return result(None, "timed out")
    except ssl.SSLError as exc:
        return result(None, f"TLS error: {exc.reason or type(exc).__name__}")
    except ConnectionRefusedError:
        return result(None, "connection refused")
    except (OSError, http.client.HTTPException) as exc:
        error = "timed out" if not watchdog.is_alive() else f"connection failed: {type(exc).__name__}"
        return result(None, error)
    finally:
        watchdog.cancel()
        conn.close()
    if 200 <= status < 300:
        return result(status, None)
    if 300 <= status < 400:
        return result(status, f"HTTP {status}: redirects are not followed")
    return result(status, f"HTTP {status}")


def _shutdown(conn: http.client.HTTPConnection) -> None:
    """The overall deadline passed: unblock whatever read or write is waiting on the socket."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return


def _read_capped(response: http.client.HTTPResponse, limit: int) -> int:
    """Read at most `limit` bytes of the body (the rest is dropped with the connection)."""
    read = 0
    while read < limit:
        chunk = response.read(min(8192, limit - read))
        if not chunk:
            break
        read += len(chunk)
    return read
