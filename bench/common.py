"""Shared set-up for benchmarks: real services (found or started as the tests do) and a sandbox."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from notify_local import services
from notify_local.provider_stub import RemoteStub
from notify_local.sandbox import Sandbox, sandbox
from notify_local.stack import LOCAL_AWS_ENV

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def bench_sandbox(label: str, overrides: dict[str, str] | None = None) -> Iterator[Sandbox]:
    os.environ.update(LOCAL_AWS_ENV)
    os.environ.update(
        POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_NAMESPACE="NotificationPlatformBench",
        POWERTOOLS_METRICS_DISABLED="true",  # no EMF lines on stdout between the figures
    )
    state = ROOT / ".local"
    pg = services.ensure_postgres(os.environ.get("DATABASE_ADMIN_URL"), state)
    redis_url = services.ensure_redis(os.environ.get("REDIS_URL"), state)
    sqs = services.ensure_sqs(os.environ.get("AWS_ENDPOINT_URL"), state)
    print(f"services: postgres {pg} | redis {redis_url} | sqs {sqs.endpoint_url} ({sqs.kind})")
    try:
        with sandbox(
            f"notify_bench_{label}_{uuid.uuid4().hex[:6]}",
            pg,
            redis_url,
            sqs.endpoint_url,
            overrides=overrides,
        ) as box:
            yield box
    finally:
        if sqs.kind in ("moto", "localstack"):
            sqs.stop()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def describe(values_ms: list[float]) -> str:
    return (
        f"p50 {percentile(values_ms, 50):.2f} ms, p99 {percentile(values_ms, 99):.2f} ms, "
        f"mean {statistics.fmean(values_ms):.2f} ms"
    )


def spread(values: list[float], unit: str = "", digits: int = 2) -> str:
    """'median (min-max over n)': the range over runs, not the best one."""
    med = statistics.median(values)
    return (
        f"{med:.{digits}f}{unit} (range {min(values):.{digits}f}-{max(values):.{digits}f}, n={len(values)})"
    )


@contextmanager
def stub_process() -> Iterator[RemoteStub]:
    """The provider stub in a process of its own, as a real provider is: its work does not share
    this process's interpreter lock with the code being measured."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "notify_local.provider_stub", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.strip().rsplit(" ", 1)[-1]
        if not url.startswith("http://"):
            raise RuntimeError(f"the provider stub did not start: {line!r}")
        yield RemoteStub(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
