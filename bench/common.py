"""Shared set-up for benchmarks: real services (found or started as the tests do) and a sandbox."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

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


@dataclass(frozen=True)
class LocalRuntime:
    base: str  # http://127.0.0.1:<port>
    key: str  # the development API key it made
    database_url: str  # its own database, dropped at the end
    state: Path  # its state directory (.local/<label>): notify-local.log, env.json
    started_s: float  # from the command to /health answering


@contextmanager
def local_runtime(label: str, port: int, params: list[str]) -> Iterator[LocalRuntime]:
    """`notify-local` as a developer runs it (a subprocess, its log in .local/<label>/notify-local.log)
    on a database of its own, with the template parameters given (NAME=VALUE) on top of an unlimited
    API rate limit and WARNING logs; stopped with Ctrl-C (SIGINT) and its database dropped at the end."""
    state = ROOT / ".local" / label
    state.mkdir(parents=True, exist_ok=True)
    admin = services.ensure_postgres(None, ROOT / ".local")
    name = f"notify_{label.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    database_url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    (state / "dev-api-key.json").unlink(missing_ok=True)
    command = [
        str(ROOT / ".venv/bin/notify-local"),
        "--port", str(port),
        "--state-dir", str(state),
        "--stack-name", f"{label}-{uuid.uuid4().hex[:6]}",
        "--env-json", str(state / "env.json"),
        "--keep-sqs",
        "-p", f"DatabaseUrl={database_url}",
        "-p", "RateLimitRequests=1000000",
        "-p", "LogLevel=WARNING",
    ]  # fmt: skip
    for param in params:
        command += ["-p", param]
    log_path = state / "notify-local.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    print(f"notify-local log: {log_path}")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process, timeout=120)
        started_s = time.perf_counter() - started
        key = json.loads((state / "dev-api-key.json").read_text())["key"]
        yield LocalRuntime(base, key, database_url, state, started_s)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"notify-local exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise SystemExit("the API did not answer in time")
