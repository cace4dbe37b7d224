"""Cold starts of the built artifact: what Lambda runs, measured as Lambda runs it.

For every function in .aws-sam/build/template.yaml (`make build` first), in fresh `python3.12`
processes with PYTHONDONTWRITEBYTECODE=1:

* the function's build folder read-only at /var/task and the layer read-only at /opt (a private
  mount namespace per process; where `unshare` is not allowed, the same folders at their own paths),
  sys.path as the python3.12 runtime sets it (/var/task, /opt/python/lib/python3.12/site-packages,
  /opt/python, the standard library, then the runtime's own boto3/botocore: the venv's copies,
  precompiled, in .local/lambda-runtime);
* the template's environment for that function (parameters pointing at the local services, the
  provider credentials in a Secrets Manager secret as in AWS) plus what Lambda itself sets;
* `init_ms`: importing the handler module (module-level init included), as Lambda's init phase;
* `first_ms`: the first invocation right after, with the function's sample event from events/ made
  real: an API key and user that exist, SQS records for notifications that exist (a batch of the
  event source's BatchSize, 10 for the sender, sent through the provider stub, SendGrid answering
  in --provider-ms), a CloudFormation response URL that answers.

Medians of --runs (>= 10) fresh processes per function. Targets (reported, not asserted): API
init <= 250 ms and first <= 60 ms; sender init <= 300 ms and first batch of 10 <= 1.3x the
provider time.

    make build && .venv/bin/python -m bench.coldstart [--runs 10] [--only ApiFunction,SenderFunction]
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3

from bench.common import ROOT, bench_sandbox
from notify_core import auth, notifications, users
from notify_core.models import UserCreate
from notify_local.lambda_env import sqs_event
from notify_local.provider_stub import ProviderStub
from notify_local.runtime import discover
from notify_local.sandbox import Sandbox
from notify_local.stack import REGION, Stack

BUILD = ROOT / ".aws-sam" / "build"
EVENTS = ROOT / "events"
RUNTIME_DIR = ROOT / ".local" / "lambda-runtime"
# What the python3.12 runtime has besides the standard library (its boto3 and botocore).
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
# The sample event each function's first invocation uses, when events/ has several for it.
PRIMARY_EVENT = {"api": "api_create_notification.json"}
MARK = "COLDSTART-RESULT "
TARGETS: dict[str, dict[str, float]] = {
    "ApiFunction": {"init_ms": 250, "first_ms": 60},
    "SenderFunction": {"init_ms": 300, "first_x_provider": 1.3},
}

# Runs inside the fresh interpreter (python -S -s): what Lambda's runtime client (awslambdaric) has
# imported before it imports the handler, then the import (init) and the first invocation, timed.
CHILD = r"""
import json, logging, os, sys, time, traceback, warnings, importlib, http.client, decimal, socket, math, enum
sys.path[:] = [{task!r}, {layer!r} + "/python/lib/python3.12/site-packages", {layer!r} + "/python",
               *{stdlib!r}, {runtime!r}]
event = json.loads(sys.stdin.read())

class Context:
    function_name = {name!r}
    function_version = "$LATEST"
    memory_limit_in_mb = {memory!r}
    invoked_function_arn = "arn:aws:lambda:{region}:000000000000:function:" + {name!r}
    aws_request_id = "00000000-0000-4000-8000-000000000001"
    log_group_name = "/aws/lambda/" + {name!r}
    log_stream_name = "coldstart"
    def __init__(self):
        self._deadline = time.monotonic() + {timeout!r}
    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))

before = set(sys.modules)
c0, t0 = time.process_time(), time.perf_counter()
module = importlib.import_module({module!r})
handler = getattr(module, {function!r})
c1, t1 = time.process_time(), time.perf_counter()
at_init = set(sys.modules)
error = None
try:
    result = handler(event, Context())
except Exception as exc:
    result, error = None, "".join(traceback.format_exception(exc))[-2000:]
c2, t2 = time.process_time(), time.perf_counter()
if isinstance(result, dict) and "body" in result:
    result = {{"statusCode": result.get("statusCode"), "body": str(result.get("body"))[:500]}}
print({mark!r} + json.dumps({{
    "init_ms": (t1 - t0) * 1000, "first_ms": (t2 - t1) * 1000, "error": error,
    "init_cpu_ms": (c1 - c0) * 1000, "first_cpu_ms": (c2 - c1) * 1000,
    "result": result if isinstance(result, (dict, str, int, type(None))) else str(result),
    "modules_at_init": len(at_init - before), "modules_after_first": len(set(sys.modules) - before),
    "botocore_at_init": "botocore" in at_init, "botocore_after_first": "botocore" in sys.modules,
    "from_opt": all(not m.startswith("/opt") or m.startswith("/opt/python")
                    for m in (getattr(sys.modules[n], "__file__", "") or "" for n in at_init)),
}}, default=str), flush=True)
"""


# ------------------------------------------------------------------ the runtime's boto3


def runtime_packages() -> Path:
    """The Lambda runtime's boto3/botocore stand-in: the venv's copies, precompiled (as the runtime
    image ships them), in their own folder so nothing else of the venv leaks onto sys.path."""
    versions = "|".join(f"{d}=={metadata.version(d)}" for d in RUNTIME_DISTRIBUTIONS)
    stamp = RUNTIME_DIR / ".versions"
    if stamp.exists() and stamp.read_text() == versions:
        return RUNTIME_DIR
    shutil.rmtree(RUNTIME_DIR, ignore_errors=True)
    RUNTIME_DIR.mkdir(parents=True)
    for name in RUNTIME_DISTRIBUTIONS:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            if "__pycache__" in file.parts or file.parts[0].endswith(".dist-info") or ".." in file.parts:
                continue
            source = Path(str(dist.locate_file(file)))
            target = RUNTIME_DIR / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(RUNTIME_DIR)], check=True)
    stamp.write_text(versions)
    return RUNTIME_DIR


def python312() -> str:
    """The interpreter the venv was made from: a plain python3.12, as Lambda's."""
    return str(getattr(sys, "_base_executable", sys.executable))


def stdlib_paths(python: str) -> list[str]:
    out = subprocess.run(
        [python, "-S", "-s", "-c", "import sys, json; print(json.dumps(sys.path[1:]))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [p for p in json.loads(out.stdout) if p]


def can_unshare() -> bool:
    try:
        return (
            subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "true"],
                capture_output=True,
                timeout=10,
                check=False,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


MOUNT = (
    "set -e; mount -t tmpfs tmpfs /var; mkdir -p /var/task /var/runtime; "
    'mount --bind -o ro "$1" /var/task; mount --bind -o ro "$2" /opt; '
    'mount --bind -o ro "$3" /var/runtime; shift 3; exec "$@"'
)


# ------------------------------------------------------------------ functions and their events


@dataclass
class Function:
    logical_id: str
    name: str  # functions/<name>
    build_dir: Path
    module: str
    handler: str
    timeout: float
    memory: int
    environment: dict[str, str]
    sqs_queue_arn: str | None = None  # the queue of its SQS event source
    batch_size: int = 10
    event_file: Path | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)


def layer_dirs(stack: Stack, logical_id: str) -> list[Path]:
    props = stack.resources()[logical_id].get("Properties", {})
    glob = stack.template.get("Globals", {}).get("Function", {})
    refs = list(glob.get("Layers", [])) + list(props.get("Layers", []))
    dirs = []
    for ref in refs:
        if isinstance(ref, dict) and "Ref" in ref and ref["Ref"] in stack.resources():
            uri = stack.resources()[ref["Ref"]]["Properties"]["ContentUri"]
            dirs.append((BUILD / uri).resolve())
    return dirs


def pick_event(name: str) -> Path | None:
    if name in PRIMARY_EVENT and (EVENTS / PRIMARY_EVENT[name]).exists():
        return EVENTS / PRIMARY_EVENT[name]
    for candidate in (EVENTS / f"{name}.json", *sorted(EVENTS.glob(f"{name}_*.json"))):
        if candidate.exists():
            return candidate
    return None


def functions(box: Sandbox, overrides: dict[str, str]) -> tuple[list[Function], Stack]:
    built = Stack.load(box.stack.name, overrides=overrides, path=BUILD / "template.yaml")
    built.queues, built.physical = box.stack.queues, box.stack.physical
    source = box.stack.resources("AWS::Serverless::Function")
    found = discover(built, BUILD)
    out = []
    for logical_id, spec in found.functions.items():
        code_uri = source[logical_id]["Properties"]["CodeUri"]
        name = Path(str(code_uri)).name
        module, _, handler = spec.handler.rpartition(".")
        fn = Function(
            logical_id,
            name,
            Path(spec.code_uri),
            module,
            handler,
            spec.timeout,
            spec.memory,
            built.function_environment(logical_id),
            event_file=pick_event(name),
        )
        for sqs in (s for s in found.sources if s.function == logical_id):
            fn.sqs_queue_arn, fn.batch_size = sqs.queue_arn, sqs.batch_size
        out.append(fn)
    return out, built


# ------------------------------------------------------------------ making sample events real


class ResponseSink(http.server.ThreadingHTTPServer):
    """Answers CloudFormation custom-resource responses (PUT to the ResponseURL)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                sink.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/cloudformation-response"


@dataclass
class Fixtures:
    box: Sandbox
    tenant: Any
    key: str
    user_id: str
    sink: ResponseSink
    provider_payload: Callable[[int], dict[str, Any]]

    def event(self, fn: Function) -> tuple[dict[str, Any], Callable[[], None]]:
        """The function's sample event with real ids; and what to clean up after the run."""
        text = fn.event_file.read_text(encoding="utf-8") if fn.event_file else "{}"
        text = text.replace("nk_dev_example", self.key).replace(
            "00000000-0000-0000-0000-000000000000", self.user_id
        )
        event = json.loads(text)
        if "ResponseURL" in event:
            event["ResponseURL"] = self.sink.url
        if fn.sqs_queue_arn:
            # records as the event source mapping delivers them, for notifications that exist
            messages = self.enqueue(fn.batch_size)
            event = sqs_event(messages, fn.sqs_queue_arn)
            return event, lambda: self.delete(messages)
        return event, lambda: None

    def enqueue(self, count: int) -> list[dict[str, Any]]:
        outcomes = notifications.create(self.tenant, [self.provider_payload(i) for i in range(count)])
        problems = [o.error for o in outcomes if o.error is not None]
        if problems:
            raise RuntimeError(f"bench notifications rejected: {problems[0]}")
        wanted = {str(o.notification.id) for o in outcomes if o.notification is not None}
        got: list[dict[str, Any]] = []
        for _ in range(30):
            reply = self.box.sqs.receive_message(
                QueueUrl=self.box.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            for message in reply.get("Messages", []):
                if json.loads(message["Body"]).get("id") in wanted:
                    got.append(message)
                else:
                    self.delete([message])
            if len(got) >= count:
                break
        if len(got) < count:
            raise RuntimeError(f"only {len(got)} of {count} bench messages arrived on the queue")
        return got

    def delete(self, messages: list[dict[str, Any]]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start : start + 10]
            self.box.sqs.delete_message_batch(
                QueueUrl=self.box.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )


def check(fn: Function, run: dict[str, Any]) -> str | None:
    """Why the first invocation did not do its job (None: it did)."""
    if run.get("error"):
        return str(run["error"]).strip().splitlines()[-1]
    result = run.get("result")
    if isinstance(result, dict) and "statusCode" in result and int(result["statusCode"]) >= 400:
        return f"HTTP {result['statusCode']}: {result.get('body')}"
    if isinstance(result, dict) and result.get("batchItemFailures"):
        return f"batchItemFailures: {result['batchItemFailures']}"
    if result == "FAILED":
        return "custom resource answered FAILED"
    return None


# ------------------------------------------------------------------ running


@contextlib.contextmanager
def secret(box: Sandbox, values: dict[str, str]) -> Iterator[str]:
    client = boto3.client("secretsmanager", endpoint_url=box.sqs_endpoint, region_name=REGION)
    name = f"{box.name}-{uuid.uuid4().hex[:8]}"
    arn = client.create_secret(Name=name, SecretString=json.dumps(values))["ARN"]
    try:
        yield str(arn)
    finally:
        client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def lambda_environment(fn: Function, box: Sandbox, isolated: bool) -> dict[str, str]:
    env = {
        # what Lambda sets for every python3.12 function
        "AWS_LAMBDA_FUNCTION_NAME": fn.logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "coldstart",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_SESSION_TOKEN": "test",
        "LAMBDA_TASK_ROOT": "/var/task" if isolated else str(fn.build_dir),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": f"{fn.module}.{fn.handler}",
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONDONTWRITEBYTECODE": "1",
        # the local stand-ins: LocalStack/moto for AWS APIs, the sandbox's Redis key prefix
        "AWS_ENDPOINT_URL": box.sqs_endpoint,
        "REDIS_KEY_PREFIX": f"{box.name}:",
    }
    env.update(fn.environment)  # the template's variables (Globals + the function's)
    return env


def run_once(
    fn: Function,
    fixtures: Fixtures,
    python: str,
    stdlib: list[str],
    layer: Path,
    runtime: Path,
    isolated: bool,
    importtime: Path | None = None,
) -> dict[str, Any]:
    event, cleanup = fixtures.event(fn)
    task, opt, rt = (
        ("/var/task", "/opt", "/var/runtime")
        if isolated
        else (
            str(fn.build_dir),
            str(layer),
            str(runtime),
        )
    )
    code = CHILD.format(
        task=task,
        layer=opt,
        runtime=rt,
        stdlib=stdlib,
        name=fn.logical_id,
        memory=fn.memory,
        timeout=fn.timeout,
        region=REGION,
        module=fn.module,
        function=fn.handler,
        mark=MARK,
    )
    cmd = [python, *(["-X", "importtime"] if importtime else []), "-S", "-s", "-c", code]
    if isolated:
        cmd = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", MOUNT, "sh",
               str(fn.build_dir), str(layer), str(runtime), *cmd]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd,
            input=json.dumps(event),
            capture_output=True,
            text=True,
            env=lambda_environment(fn, fixtures.box, isolated),
            cwd="/" if isolated else str(fn.build_dir),
            timeout=fn.timeout + 60,
            check=False,
        )
    finally:
        cleanup()
    if importtime:  # python -X importtime writes to stderr: the last run's, per function
        importtime.mkdir(parents=True, exist_ok=True)
        (importtime / f"{fn.logical_id}.txt").write_text(proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if not lines:
        raise RuntimeError(
            f"{fn.logical_id}: the process printed no result (exit {proc.returncode}):\n"
            + (proc.stderr or proc.stdout)[-3000:]
        )
    return dict(json.loads(lines[-1][len(MARK) :]))


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="fresh processes per function (>= 10)")
    parser.add_argument("--only", default="", help="comma-separated logical ids (default: every function)")
    parser.add_argument("--provider-ms", type=int, default=100, help="the stub's SendGrid reply time")
    parser.add_argument(
        "--secrets",
        choices=["providers", "all", "none"],
        default="providers",
        help="what comes from Secrets Manager (LocalStack/moto): the provider credentials, as in AWS "
        "(default); also the database URL (DatabaseSecretArn); nothing (all in the environment)",
    )
    parser.add_argument("--no-isolation", action="store_true", help="do not use a mount namespace")
    parser.add_argument(
        "--importtime",
        action="store_true",
        help="run with python -X importtime; each function's last report in .local/coldstart-importtime/",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a template parameter, e.g. -p EnableTracing=true (repeatable)",
    )
    args = parser.parse_args()
    if not (BUILD / "template.yaml").exists():
        sys.exit("no .aws-sam/build: run `make build` first")

    python = python312()
    stdlib = stdlib_paths(python)
    runtime = runtime_packages()
    isolated = not args.no_isolation and can_unshare()
    print(
        f"python {python}; isolation: {'read-only /var/task and /opt (mount namespace)' if isolated else 'none (paths)'}"
    )

    with ProviderStub() as stub, bench_sandbox("coldstart") as box, ResponseSink() as sink:
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        stub.configure("sendgrid", delay_ms=args.provider_ms)
        tenant = auth.create_tenant("bench")
        key = auth.create_api_key(tenant).key
        user = users.create_user(tenant, UserCreate(email="coldstart@example.com"))
        with contextlib.ExitStack() as stack:
            stack.callback(sink.shutdown)
            overrides = {
                "DatabaseUrl": box.database_url,
                "RedisUrl": box.redis_url,
                "RateLimitRequests": "1000000",
            }
            overrides.update(dict(p.split("=", 1) for p in args.parameter))
            extra_env: dict[str, str] = {}
            if args.secrets == "none":
                extra_env = stub.env()
            else:
                overrides["ProviderSecretsArn"] = stack.enter_context(secret(box, stub.env()))
            if args.secrets == "all":
                db_secret = stack.enter_context(secret(box, {"url": box.database_url}))
                overrides.update(DatabaseUrl="", DatabaseSecretArn=db_secret)
            fns, built = functions(box, overrides)
            for fn in fns:
                fn.environment.update(extra_env)
            wanted = {s for s in args.only.split(",") if s}
            fns = [f for f in fns if not wanted or f.logical_id in wanted]
            fixtures = Fixtures(
                box,
                tenant,
                key,
                str(user.id),
                sink,
                lambda i: {
                    "channel": "email",
                    "provider": "sendgrid",
                    "payload": {
                        "to": f"cold{i}.{uuid.uuid4().hex[:8]}@example.com",
                        "from": "ops@example.com",
                        "subject": "Cold start",
                        "body": "Hello",
                    },
                },
            )
            problems: list[str] = []
            for fn in fns:
                layers = layer_dirs(built, fn.logical_id)
                if len(layers) != 1:
                    raise SystemExit(f"{fn.logical_id}: expected one layer, found {len(layers)}")
                for _ in range(max(args.runs, 1)):
                    run = run_once(
                        fn, fixtures, python, stdlib, layers[0], runtime, isolated,
                        ROOT / ".local" / "coldstart-importtime" if args.importtime else None,
                    )  # fmt: skip
                    fn.runs.append(run)
                    why = check(fn, run)
                    if why:
                        problems.append(f"{fn.logical_id}: {why}")
                init = summary([r["init_ms"] for r in fn.runs])
                first = summary([r["first_ms"] for r in fn.runs])
                event = fn.event_file.name if fn.event_file else "{}"
                if fn.sqs_queue_arn:
                    event = f"{fn.batch_size} SQS records from {fn.sqs_queue_arn.rsplit(':', 1)[-1]}"
                cpu = statistics.median(r["init_cpu_ms"] for r in fn.runs)
                print(
                    f"{fn.logical_id:22} init {init['median']:4.0f} ms ({init['min']:.0f}-{init['max']:.0f};"
                    f" cpu {cpu:.0f})   first {first['median']:4.0f} ms ({first['min']:.0f}-{first['max']:.0f})"
                    f"   [{event}]"
                )

    result: dict[str, Any] = {
        "runs": args.runs,
        "isolation": "mount-namespace" if isolated else "paths",
        "secrets": args.secrets,
        "parameters": dict(p.split("=", 1) for p in args.parameter),
        "provider_ms": args.provider_ms,
        "init_ms": {f.logical_id: summary([r["init_ms"] for r in f.runs])["median"] for f in fns},
        "first_ms": {f.logical_id: summary([r["first_ms"] for r in f.runs])["median"] for f in fns},
        # CPU time of the process (all its threads): the work itself, whatever else the machine runs
        "init_cpu_ms": {f.logical_id: summary([r["init_cpu_ms"] for r in f.runs])["median"] for f in fns},
        "first_cpu_ms": {f.logical_id: summary([r["first_cpu_ms"] for r in f.runs])["median"] for f in fns},
        "range_ms": {
            f.logical_id: {
                "init": [summary([r["init_ms"] for r in f.runs])[k] for k in ("min", "max")],
                "first": [summary([r["first_ms"] for r in f.runs])[k] for k in ("min", "max")],
            }
            for f in fns
        },
        "problems": sorted(set(problems)),
    }
    sender = result["first_ms"].get("SenderFunction")
    if sender is not None:
        result["sender_first_x_provider"] = round(sender / args.provider_ms, 2)
        print(
            f"sender: first batch of 10 = {result['sender_first_x_provider']}x the provider time "
            f"({args.provider_ms} ms; target <= 1.3x)"
        )
    for name, target in TARGETS.items():
        if name in result["init_ms"]:
            met = result["init_ms"][name] <= target["init_ms"]
            if "first_ms" in target:
                met = met and result["first_ms"][name] <= target["first_ms"]
            else:
                met = met and result.get("sender_first_x_provider", 99) <= target["first_x_provider"]
            print(f"target {name}: {target} -> {'met' if met else 'NOT met'}")
    for problem in result["problems"]:
        print(f"PROBLEM {problem}")
    print("RESULT " + json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
