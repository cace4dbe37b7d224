"""notify-local: run the whole system on this machine, in the foreground, until Ctrl-C.

1. PostgreSQL and Redis: the configured URLs (the `DatabaseUrl` / `RedisUrl` parameters in
   local.env or --param, else DATABASE_URL / REDIS_URL from the environment), else local servers on
   the standard ports, else embedded ones started with their data under .local/ (services.py).
   Without a configured database the runtime uses its own database `notify_local` there.
2. SQS: AWS_ENDPOINT_URL (local.env or environment), else a LocalStack already on :4566, else
   LocalStack started from .local/localstack-venv, else moto's server in this process; it says which.
3. Migrations; the queues, DLQs and redrive policies of template.yaml (Stack.create_queues).
4. A development tenant and API key, created on the first start, kept in .local/dev-api-key.json
   and checked against the database on every start (a new one is made if it no longer works).
5. The functions' environment (template + local.env + the runtime's endpoints) in os.environ,
   and env.json for `sam local start-api --env-vars env.json` users.
6. The API on http://127.0.0.1:3000, the SQS pollers and the schedules (runtime.py).

Ctrl-C (SIGINT) or SIGTERM stops the pollers and schedules, lets invocations in flight finish,
closes the port and stops the SQS server this run started (--keep-sqs leaves a LocalStack running
for a faster next start). PostgreSQL and Redis started by services.py keep running, shared with the
test suite; `make services-down` stops them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .overrides import Overrides, OverridesError, classify, parse_pairs, read_overrides
from .stack import LOCAL_AWS_ENV, REGION, ROOT, TEMPLATE, Stack

log = logging.getLogger("notify_local")

LOCAL_DATABASE = "notify_local"
DEV_TENANT = "local-dev"
DEV_KEY_FILE = "dev-api-key.json"
# Every function's environment is the same Globals set plus a few of its own; where they differ
# (POWERTOOLS_SERVICE_NAME), the shared process gets this value instead.
SHARED_SERVICE_NAME = "notify-local"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="notify-local",
        description="Run the notification platform locally: API Gateway, SQS event sources and "
        "schedules from template.yaml, invoking the real handlers in this process.",
        epilog="Overrides file: KEY=VALUE lines; template parameter names (CamelCase) override "
        "parameters, UPPER_CASE names are extra environment variables. See local.env.example.",
    )
    parser.add_argument("--port", type=int, default=3000, help="HTTP port on 127.0.0.1 (default 3000)")
    parser.add_argument(
        "--env-file", type=Path, default=ROOT / "local.env", help="overrides file (default: local.env)"
    )
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more override, as a line of the overrides file (wins over it); repeatable",
    )
    parser.add_argument(
        "--template", type=Path, default=TEMPLATE, help="SAM template (default template.yaml)"
    )
    parser.add_argument(
        "--stack-name", default="notify-local", help="names the queues (default notify-local)"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=ROOT / ".local", help="local state (default .local/)"
    )
    parser.add_argument("--localstack-port", type=int, default=4566, help="where to find/start LocalStack")
    parser.add_argument(
        "--only",
        action="append",
        metavar="FUNCTION",
        help="run only these functions (logical ids); repeatable",
    )
    parser.add_argument(
        "--disable",
        action="append",
        default=[],
        choices=["api", "sqs", "schedule"],
        help="do not run this kind of event source; repeatable",
    )
    parser.add_argument(
        "--schedule-speedup",
        type=float,
        default=1.0,
        metavar="N",
        help="divide rate() periods by N (60: rate(1 minute) fires every second); cron() is unaffected",
    )
    parser.add_argument(
        "--poll-wait",
        type=int,
        default=2,
        metavar="SECONDS",
        help="WaitTimeSeconds of the pollers' long polls, 0-20 (default 2: Ctrl-C is answered within it)",
    )
    parser.add_argument(
        "--keep-sqs", action="store_true", help="leave a LocalStack started by this run running"
    )
    parser.add_argument(
        "--provider-stub",
        nargs="?",
        const=8025,
        type=int,
        metavar="PORT",
        help="feedback: run the provider stub in this process (default port 8025), point SendGrid, Twilio "
        "and FCM at it, and have it report deliveries back to this runtime's /callbacks/* (signed)",
    )
    parser.add_argument(
        "--env-json",
        type=Path,
        default=ROOT / "env.json",
        help="where to write env.json (sam local --env-vars)",
    )
    return parser


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


# --------------------------------------------------------------------------- configuration


def load_overrides(env_file: Path, params: list[str], parameter_names: list[str]) -> Overrides:
    from_file = read_overrides(env_file, parameter_names)
    from_cli = classify(parse_pairs(params, "--param"), parameter_names, "--param")
    return Overrides(
        {**from_file.parameters, **from_cli.parameters}, {**from_file.environment, **from_cli.environment}
    )


def merge_environments(per_function: dict[str, dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The union of the functions' environments, for the one os.environ they share in this process.

    That is acceptable because every function gets the same Globals variables (database, Redis,
    queue URL, limits, Powertools settings) and adds only names of its own (the sender's retry
    settings, cleanup's retention days) - except POWERTOOLS_SERVICE_NAME, which differs by design
    and is replaced by one shared name (the Powertools log lines still carry function_name).
    Any other name with different values is reported; the first function's value is kept.
    """
    union: dict[str, str] = {}
    conflicts: list[str] = []
    for function, env in per_function.items():
        for name, value in env.items():
            if name not in union:
                union[name] = value
            elif union[name] != value and name != "POWERTOOLS_SERVICE_NAME":
                conflicts.append(f"{name} ({function} wants {value!r}, kept {union[name]!r})")
    if len({env.get("POWERTOOLS_SERVICE_NAME") for env in per_function.values()} - {None}) > 1:
        union["POWERTOOLS_SERVICE_NAME"] = SHARED_SERVICE_NAME
    return union, conflicts


# --------------------------------------------------------------------------- services


def _database(configured: str | None, state_dir: Path) -> tuple[str, str]:
    """(url, how): the configured database, else the runtime's own database on a local server."""
    import psycopg
    from psycopg import sql

    from . import services

    url = services.ensure_postgres(configured, state_dir)
    if configured and url == configured:
        return url, "configured"
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (LOCAL_DATABASE,)).fetchone()
        if not exists:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # another start made it meanwhile
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(LOCAL_DATABASE)))
    return psycopg.conninfo.make_conninfo(
        url, dbname=LOCAL_DATABASE
    ), f"database {LOCAL_DATABASE} on a local server"


def _redact(url: str) -> str:
    import psycopg

    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return url
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a password
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def _sqs_client(endpoint: str, poll_wait: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # noqa: S106 - LocalStack / moto accept any credentials
        config=Config(
            connect_timeout=5,
            read_timeout=poll_wait + 15,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
        ),
    )


def _describe_sqs(kind: str, endpoint: str, keep: bool) -> str:
    return {
        "external": f"{endpoint} (already running; left running)",
        "localstack": f"{endpoint} LocalStack started by this run "
        + ("(left running: --keep-sqs)" if keep else "(stopped on exit; --keep-sqs keeps it)"),
        "moto": f"{endpoint} moto's server in this process (no Python 3.13 / .local/localstack-venv for "
        "LocalStack; moto slows down as queues fill up)",
    }.get(kind, endpoint)


# --------------------------------------------------------------------------- the development key


def dev_api_key(state_dir: Path, database_url: str) -> tuple[dict[str, str], bool]:
    """The development tenant's API key: the stored one if it still authenticates, else a new one.
    Returns (record, created)."""
    from notify_core import auth
    from notify_core.errors import DomainError

    path = state_dir / DEV_KEY_FILE
    try:
        stored = json.loads(path.read_text())
        auth.authenticate(str(stored["key"]))
        return stored, False
    except (OSError, ValueError, KeyError, TypeError, DomainError):
        pass
    tenant_id = auth.create_tenant(DEV_TENANT)
    issued = auth.create_api_key(tenant_id, "notify-local development key")
    record = {
        "tenant_id": str(tenant_id),
        "key": issued.key,
        "prefix": issued.prefix,
        "database": _redact(database_url),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return record, True


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    if not 0 <= args.poll_wait <= 20:
        log.error("notify-local: --poll-wait must be 0-20 seconds")
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a stop while starting cleans up as Ctrl-C does
    try:
        return _run(args)
    except (OverridesError, ValueError, RuntimeError, OSError) as exc:
        log.error("notify-local: %s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("notify-local: interrupted while starting")
        return 130


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from . import services

    begun = time.perf_counter()
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    template = Stack.load(args.stack_name, {}, args.template).template
    overrides = load_overrides(args.env_file, args.param, list(template.get("Parameters", {})))
    params, extra_env = overrides.parameters, overrides.environment
    os.environ.pop("AWS_PROFILE", None)  # nothing here may reach a real AWS account

    endpoint = extra_env.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    sqs_service: Any = None
    try:
        # SQS (a LocalStack start takes seconds) in parallel with PostgreSQL, Redis
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="start-sqs") as pool:
            sqs_future = pool.submit(services.ensure_sqs, endpoint, state_dir, port=args.localstack_port)
            try:
                database_url, database_how = _database(
                    params.get("DatabaseUrl") or os.environ.get("DATABASE_URL"), state_dir
                )
                redis_url = services.ensure_redis(
                    params.get("RedisUrl") or os.environ.get("REDIS_URL"), state_dir
                )
            finally:
                sqs_service = sqs_future.result()
        return _serve(
            args, begun, state_dir, params, extra_env, database_url, database_how, redis_url, sqs_service
        )
    finally:
        if sqs_service is not None and (
            sqs_service.kind == "moto" or (sqs_service.kind == "localstack" and not args.keep_sqs)
        ):
            log.info("notify-local: stopping the SQS server this run started (%s)", sqs_service.kind)
            sqs_service.stop()


def _serve(
    args: argparse.Namespace,
    begun: float,
    state_dir: Path,
    params: dict[str, str],
    extra_env: dict[str, str],
    database_url: str,
    database_how: str,
    redis_url: str,
    sqs_service: Any,
) -> int:
    from botocore.exceptions import ClientError

    from notify_core import db
    from notify_core.config import get_settings

    from .runtime import EVENT_KINDS, Runtime

    applied = db.migrate(database_url)
    if applied:
        log.info("notify-local: applied migrations %s", ", ".join(applied))

    stack = Stack.load(
        args.stack_name, {**params, "DatabaseUrl": database_url, "RedisUrl": redis_url}, args.template
    )
    sqs = _sqs_client(sqs_service.endpoint_url, args.poll_wait)
    try:
        stack.create_queues(sqs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if "QueueAlreadyExists" in code or "QueueNameExists" in code:
            raise RuntimeError(
                f"a queue of stack {args.stack_name} exists with other attributes than the template now "
                f"gives ({exc}); delete the stack's queues (or restart the SQS server) and start again"
            ) from exc
        raise

    # ---- the functions' environment (see merge_environments for why one os.environ is enough)
    runtime_env = {
        "AWS_ENDPOINT_URL": sqs_service.endpoint_url,
        **LOCAL_AWS_ENV,
        "AWS_REGION": REGION,
        "POWERTOOLS_TRACE_DISABLED": "1",
        # One process stands in for every function's containers (each of which has its own pool in
        # AWS), so the one pool they share here is sized for all of them.
        "DB_POOL_MAX_SIZE": "20",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{args.port}",
        # feedback: local webhook receivers (http://, 127.0.0.1) are allowed; metadata addresses never
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
    }
    stub = None
    if args.provider_stub is not None:  # feedback: the whole loop locally, callbacks included
        from .provider_stub import ProviderStub

        stub = ProviderStub(args.provider_stub).start()
        stub.configure_callbacks(sendgrid_url=f"http://127.0.0.1:{args.port}/callbacks/sendgrid")
        runtime_env.update(stub.env())
        log.info("notify-local: provider stub on %s, reporting deliveries to /callbacks/*", stub.url)
    functions = [
        logical_id
        for logical_id in stack.resources("AWS::Serverless::Function")
        if args.only is None or logical_id in args.only
    ]
    per_function = {fn: {**stack.function_environment(fn), **runtime_env, **extra_env} for fn in functions}
    union, conflicts = merge_environments(per_function)
    for conflict in conflicts:
        log.warning("notify-local: functions disagree on %s", conflict)
    os.environ.update(union)
    get_settings.cache_clear()
    args.env_json.write_text(json.dumps(per_function, indent=2) + "\n")

    key, created = dev_api_key(state_dir, database_url)

    runtime = Runtime(
        stack,
        sqs,
        port=args.port,
        template_dir=args.template.resolve().parent,
        kinds=tuple(k for k in EVENT_KINDS if k not in args.disable),
        functions=set(functions),
        schedule_speedup=args.schedule_speedup,
        poll_wait=args.poll_wait,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("notify-local: second signal: exiting now")
            os._exit(130)
        log.info("notify-local: %s received, stopping (again to force)", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        runtime.warm(sorted({r.function for r in runtime.routes}))  # the API's first: no cold first request
        runtime.start()
        _banner(
            args, runtime, begun, database_url, database_how, redis_url, sqs_service, key, created, state_dir
        )
        runtime.warm()  # the others, so that an import error shows now rather than at their first event
        while not stop.wait(0.5):
            pass
    finally:
        runtime.stop()
        if stub is not None:
            stub.close()
        db.close_pool()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("notify-local: stopped")
    return 0


def _banner(
    args: argparse.Namespace,
    runtime: Any,
    begun: float,
    database_url: str,
    database_how: str,
    redis_url: str,
    sqs_service: Any,
    key: dict[str, str],
    created: bool,
    state_dir: Path,
) -> None:
    lines = [
        f"notify-local ready in {time.perf_counter() - begun:.1f} s: {runtime.url}",
        f"  PostgreSQL  {_redact(database_url)} ({database_how})",
        f"  Redis       {redis_url}",
        f"  SQS         {_describe_sqs(sqs_service.kind, sqs_service.endpoint_url, args.keep_sqs)}",
        f"  API key     {key['key']}  (tenant {DEV_TENANT} {key['tenant_id']}; "
        f"{'new, ' if created else ''}kept in {state_dir / DEV_KEY_FILE})",
        f"  try         curl -H 'X-Api-Key: {key['key']}' {runtime.url}/api/v1/notifications",
        *(
            [f"  console     {runtime.url}/console  (sign in with the API key above)"]
            if any(r.path == "/console" for r in runtime.routes)
            else []
        ),
        f"  routes      {len(runtime.routes)} (-> {', '.join(sorted({r.function for r in runtime.routes})) or 'none'})",
    ]
    for source in runtime.sources:
        lines.append(
            f"  sqs         {source.function} <- {source.queue_name} (batch {source.batch_size}, window "
            f"{source.batching_window:g} s, {source.max_concurrency} concurrent"
            f"{', partial failures' if source.report_failures else ''})"
        )
    for spec in runtime.schedules:
        state = "" if spec.enabled else " DISABLED"
        lines.append(
            f"  schedule    {spec.function} {spec.expression.text}{state} "
            f"(now: curl -X POST {runtime.url}/_local/schedules/{spec.function})"
        )
    for skipped in runtime.discovery.skipped:
        lines.append(f"  skipped     {skipped}")
    lines.append(f"  env.json    {args.env_json} (sam local start-api --env-vars)")
    lines.append("  Ctrl-C stops everything")
    log.info("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
