"""`make dev` until the full local runtime lands: the API function on http://127.0.0.1:3000,
served as API Gateway would (REST proxy events for every `Api` event of template.yaml), over real
PostgreSQL, Redis and SQS found or started locally, with a development tenant and API key that
survive restarts. Queues (with their DLQ and redrive policy) come from template.yaml."""

from __future__ import annotations

import argparse
import json
import os
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import boto3
import psycopg
from psycopg import sql

from notify_core import auth, db
from notify_core.errors import DomainError

from . import services
from .lambda_env import LambdaContext, load_handler, rest_event
from .sandbox import reset_clients
from .stack import ROOT, Stack

STATE = ROOT / ".local"
KEY_FILE = STATE / "dev-api-key.json"


def routes(stack: Stack, function: str = "ApiFunction") -> list[tuple[str, str, re.Pattern[str]]]:
    """(method, resource, regex) for each Api event of the function; {name} becomes a named group."""
    out = []
    props = stack.resources()[function]["Properties"]
    for event in props.get("Events", {}).values():
        if event.get("Type") != "Api":
            continue
        path, method = event["Properties"]["Path"], event["Properties"]["Method"].upper()
        pattern = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(path))
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
        out.append((method, path, re.compile(f"^{pattern}$")))
    return out


def _dev_database(admin_url: str, name: str = "notify_dev") -> str:
    """The development database (created once) on the server at `admin_url`; DATABASE_URL wins."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def dev_key() -> dict[str, str]:
    """The development tenant's API key, created on first start and kept in .local/."""
    if KEY_FILE.exists():
        saved: dict[str, str] = json.loads(KEY_FILE.read_text())
        try:
            auth.authenticate(saved.get("key"))
            return saved
        except DomainError as exc:  # revoked, or a fresh database: make a new one
            print(f"saved development key not usable ({exc.message}); creating a new one")
    tenant = auth.create_tenant("development")
    issued = auth.create_api_key(tenant, "dev")
    saved = {"tenant_id": str(tenant), "key": issued.key, "prefix": issued.prefix}
    KEY_FILE.write_text(json.dumps(saved, indent=2))
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    args = parser.parse_args(argv)
    STATE.mkdir(exist_ok=True)
    admin = services.ensure_postgres(os.environ.get("DATABASE_URL"), STATE)
    redis_url = services.ensure_redis(os.environ.get("REDIS_URL"), STATE)
    sqs_service = services.ensure_sqs(os.environ.get("AWS_ENDPOINT_URL"), STATE)
    print(f"postgres {admin}\nredis {redis_url}\nsqs {sqs_service.endpoint_url} ({sqs_service.kind})")
    # dummy credentials: every AWS call goes to the local SQS endpoint
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    database_url = _dev_database(admin)
    db.migrate(database_url)
    stack = Stack.load("notify-dev", overrides={"DatabaseUrl": database_url, "RedisUrl": redis_url})
    stack.create_queues(boto3.client("sqs", endpoint_url=sqs_service.endpoint_url))
    os.environ.update(stack.function_environment("ApiFunction"))
    os.environ.update(AWS_ENDPOINT_URL=sqs_service.endpoint_url, POWERTOOLS_TRACE_DISABLED="true")
    reset_clients()
    key = dev_key()
    table = routes(stack)
    handler = load_handler("functions/api/", "app.handler")
    timeout = float(stack.resources()["ApiFunction"]["Properties"].get("Timeout", 25))

    class Gateway(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            known = [(m, r, rx.match(parts.path)) for m, r, rx in table]
            matches = [(m, r, hit) for m, r, hit in known if hit]
            chosen = next(((r, hit) for m, r, hit in matches if m in (self.command, "ANY")), None)
            if chosen is None:  # API Gateway's answer for an unknown route or method
                return self._reply(
                    403, {"Content-Type": ["application/json"]}, b'{"message":"Missing Authentication Token"}'
                )
            resource, hit = chosen
            event = rest_event(
                self.command,
                parts.path,
                resource=resource,
                path_parameters=hit.groupdict() or None,
                headers=list(self.headers.items()),
                query=parts.query,
                body=body,
            )
            result: dict[str, Any] = handler(event, LambdaContext("ApiFunction", 512, timeout))
            headers = {k: [v] for k, v in (result.get("headers") or {}).items()}
            headers.update(result.get("multiValueHeaders") or {})
            data = (result.get("body") or "").encode()
            self._reply(result["statusCode"], headers, data)

        def _reply(self, status: int, headers: dict[str, list[str]], data: bytes) -> None:
            self.send_response(status)
            for name, values in headers.items():
                for value in values:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Gateway)
    print(f"\nAPI on http://127.0.0.1:{args.port} ({len(table)} routes from template.yaml)")
    print(f"development API key: {key['key']}  (kept in {KEY_FILE.relative_to(ROOT)})\nCtrl-C stops.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopping")
    finally:
        server.server_close()
        db.close_pool()
        if sqs_service.kind != "external":
            sqs_service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
