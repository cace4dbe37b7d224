"""Running the scenarios: the suite's own PostgreSQL and Redis, the provider stub in its own process
and, per scenario, a fresh database, a flushed Redis, a reset stub, its own queues (a stack name of
its own on the shared LocalStack, deleted afterwards) and its own `notify-local`."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config

from bench.common import stub_process
from notify_local import services
from notify_local.provider_stub import RemoteStub
from notify_local.stack import LOCAL_AWS_ENV, REGION

from .infra import CHAOS_DIR, OwnPostgres, OwnRedis, RuntimeProcess
from .load import Load
from .measure import (
    Figures,
    Target,
    api_figures,
    emitted_metrics,
    figures,
    say,
    snapshot,
    targets,
    wait_quiet,
)
from .scenarios import Run, Scenario

PROVIDER_MS = 100  # the stub's answer time for SendGrid: a realistic provider
SCHEDULE_SPEEDUP = 6  # rate(1 minute) every 10 s: the sweeper's passes come sooner, the run is shorter
QUIET_TIMEOUT_S = 330  # > the queue's 180 s visibility timeout, after which failed batches return
COMMON_SETTINGS = {
    "RateLimitRequests": "1000000",  # one API key offers 100/s; the default allows 600 a minute
    "LogLevel": "WARNING",
}


@dataclass
class Environment:
    pg: OwnPostgres
    redis: OwnRedis
    stub: RemoteStub
    stub_env: dict[str, str]
    sqs_endpoint: str
    sqs_kind: str
    sqs: Any


@contextlib.contextmanager
def environment() -> Iterator[Environment]:
    CHAOS_DIR.mkdir(parents=True, exist_ok=True)
    pg = OwnPostgres(CHAOS_DIR)
    redis = OwnRedis(CHAOS_DIR)
    sqs_service = services.ensure_sqs(os.environ.get("AWS_ENDPOINT_URL"), CHAOS_DIR.parent)
    try:
        pg.init()
        pg.start()
        redis.start()
        sqs = boto3.client(
            "sqs",
            endpoint_url=sqs_service.endpoint_url,
            region_name=REGION,
            aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=20),
        )
        with stub_process() as stub:
            yield Environment(pg, redis, stub, stub.env(), sqs_service.endpoint_url, sqs_service.kind, sqs)
    finally:
        redis.close()
        pg.close()
        if sqs_service.kind != "external":
            sqs_service.stop()


@dataclass
class Result:
    scenario: Scenario
    figures: Figures | None = None
    targets: list[Target] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0
    error: str | None = None
    log_path: str = ""

    @property
    def passed(self) -> bool:
        return self.error is None and all(t.passed for t in self.targets)


def run_scenario(scenario: Scenario, env: Environment) -> Result:
    started = time.monotonic()
    result = Result(scenario, settings=dict(scenario.settings))
    state = CHAOS_DIR / "runtime" / scenario.key
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    stack = f"chaos-{scenario.key.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    runtime: RuntimeProcess | None = None
    try:
        env.pg.ensure_running()
        env.redis.ensure_running()
        database_url = env.pg.create_database(f"chaos_{scenario.key}")
        env.redis.flush()
        env.stub.reset()
        env.stub.configure("sendgrid", delay_ms=PROVIDER_MS, **scenario.stub)
        runtime = RuntimeProcess(
            port=services._free_port(),
            state_dir=state,
            stack_name=stack,
            params={
                "DatabaseUrl": database_url,
                "RedisUrl": env.redis.url,
                "AWS_ENDPOINT_URL": env.sqs_endpoint,
                **env.stub_env,
                **COMMON_SETTINGS,
                **scenario.settings,
            },
            log_path=state / "notify-local.log",
            schedule_speedup=SCHEDULE_SPEEDUP,
        )
        result.log_path = str(runtime.log_path)
        runtime.start()
        key = runtime.api_key()
        queue_url = env.sqs.get_queue_url(QueueName=f"{stack}-notifications")["QueueUrl"]
        run = Run(
            env.pg,
            env.redis,
            runtime,
            env.stub,
            env.sqs,
            queue_url,
            database_url,
            key["tenant_id"],
            scenario.seconds,
        )
        load = Load(
            runtime.url, key["key"], scenario.rate, scenario.seconds, on_accepted=run.accepted_feed.put
        )
        say(f"{scenario.key}: {scenario.rate:g}/s for {scenario.seconds:g} s; {scenario.fault}")
        run.t0 = time.time()
        load.start()
        fault = threading.Thread(target=_guarded, args=(scenario, run), name="fault", daemon=True)
        fault.start()
        load.join()
        run.load_done.set()
        run.note(f"load done: {len(load.requests)} requests answered or failed")
        fault.join()
        say(f"{scenario.key}: load and fault done; waiting for quiescence")
        quiet = wait_quiet(database_url, env.sqs, queue_url, QUIET_TIMEOUT_S)
        run.note("quiescent" if quiet is not None else f"not quiescent after {QUIET_TIMEOUT_S} s")
        runtime.stop()  # its log (and the metrics in it) complete
        killed: set[str] | None = run.extras.pop("in_progress_ids", None)
        result.figures = figures(
            load.accepted(),
            snapshot(database_url),
            env.stub.summaries("sendgrid"),
            emitted_metrics(runtime.log_path),
            api_figures(load.requests, load.late, run.outages),
            quiet,
            killed,
        )
        result.events, result.extras = run.events, run.extras
        if "fault_error" in run.extras:
            result.error = str(run.extras["fault_error"])
        result.targets = targets(result.figures, run.extras)
    except Exception as exc:  # one scenario's failure is reported, the others still run
        result.error = f"{type(exc).__name__}: {exc}"
        say(traceback.format_exc())
    finally:
        if runtime is not None:
            runtime.stop()
        for name in (f"{stack}-notifications", f"{stack}-notifications-dlq"):
            with contextlib.suppress(Exception):
                env.sqs.delete_queue(QueueUrl=env.sqs.get_queue_url(QueueName=name)["QueueUrl"])
        result.duration_s = time.monotonic() - started
    return result


def _guarded(scenario: Scenario, run: Run) -> None:
    if scenario.inject is None:
        return
    try:
        scenario.inject(run)
    except Exception as exc:  # reported as the scenario's error
        run.extras["fault_error"] = f"the fault failed: {type(exc).__name__}: {exc}"
        say(traceback.format_exc())
