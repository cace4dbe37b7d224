"""Per-container clients, in one place: created lazily on first use, reused for the life of the
container, and forgotten together by `reset()` (tests and the local runtime call it after changing
the environment).

Held here: the PostgreSQL pool (`db`), the SQS client (`queue`), the Redis client (`ratelimit`),
the Secrets Manager client, the provider instances (`providers`) and the sender's thread pool.
Other modules that keep a per-container cache register a forget function with `on_reset`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .config import get_settings

_lock = threading.RLock()
_clients: dict[str, Any] = {}
_closers: dict[str, Callable[[Any], None]] = {}
_resetters: list[Callable[[], None]] = []


def get(name: str, build: Callable[[], Any], close: Callable[[Any], None] | None = None) -> Any:
    """The container's client called `name`, built by `build` on first use (thread-safe)."""
    client = _clients.get(name)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(name)
        if client is None:
            client = build()
            _clients[name] = client
            if close is not None:
                _closers[name] = close
    return client


def put(name: str, client: Any) -> None:
    """Install a client under `name` (a seam for tests and the local runtime)."""
    with _lock:
        _clients[name] = client


def forget(name: str) -> None:
    """Drop (and close) one client: the next `get` builds a new one."""
    with _lock:
        client = _clients.pop(name, None)
        close = _closers.pop(name, None)
    if client is not None and close is not None:
        close(client)


def on_reset(forget_cache: Callable[[], None]) -> None:
    """Register a per-container cache to be cleared by `reset()`."""
    with _lock:
        if forget_cache not in _resetters:
            _resetters.append(forget_cache)


def reset() -> None:
    """Forget every client and cache, so the next use reads the current environment."""
    get_settings.cache_clear()
    with _lock:
        names = list(_clients)
        resetters = list(_resetters)
    for name in names:
        forget(name)
    for forget_cache in resetters:
        forget_cache()


# ---------------------------------------------------------------- AWS


def aws_client(service: str, **config: Any) -> Any:
    """The container's client for an AWS service, with bounded timeouts and the local endpoint when
    configured. SQS and Secrets Manager, which requests and cold starts use, get notify_core.aws
    (boto3's calls and reply shapes; errors `aws.AwsError`) without boto3's ~165 ms import; any other
    service gets boto3, imported on first use. `config`: botocore Config options (boto3 services)."""
    from . import aws

    def endpoint() -> str | None:
        return get_settings().aws_endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None

    if service in aws.SERVICES:
        return get(
            f"aws:{service}",
            lambda: aws.client(service, endpoint(), connect_timeout=2, read_timeout=5, max_attempts=3),
        )

    def build() -> Any:
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {
            "connect_timeout": 2,
            "read_timeout": 5,
            "retries": {"max_attempts": 2, "mode": "standard"},
        }
        options.update(config)
        return boto3.client(  # type: ignore[call-overload]
            service, endpoint_url=endpoint(), config=Config(**options)
        )

    return get(f"aws:{service}", build)


def send_pool() -> ThreadPoolExecutor:
    """The sender's pool: SEND_CONCURRENCY threads, so a batch has that many sends in flight."""
    size = get_settings().send_concurrency
    return get(
        "send-pool",
        lambda: ThreadPoolExecutor(max_workers=size, thread_name_prefix="send"),
        lambda pool: pool.shutdown(wait=False, cancel_futures=True),
    )
