"""Operator CLI: `notify-admin migrate | create-tenant | create-key | list-keys | revoke-key |
templates list|push | set-locale | provider-config-add | provider-config-list | provider-config-set |
provider-config-remove | audit-tail | metrics-rollup`.

Every command that changes something writes an audit event (actor `cli`) in the transaction of the
change. Credentials are read from a file or stdin (`--credentials-file -`), never from the command
line, where shell history and the process list would keep them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from . import audit, auth, db
from .errors import DomainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notify-admin", description=__doc__)
    parser.add_argument("--database-url", help="overrides DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending database migrations")
    p = sub.add_parser("create-tenant", help="create a tenant; prints its id")
    p.add_argument("name")
    p = sub.add_parser("create-key", help="create an API key; the key is printed once and never again")
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("--name", default="")
    p.add_argument("--scopes", default=",".join(auth.SCOPES), help="comma-separated; default: all")
    p.add_argument("--rate-limit", type=int, help="requests per window (default: the stage's setting)")
    p = sub.add_parser("list-keys", help="list a tenant's API keys (prefixes only)")
    p.add_argument("tenant_id", type=UUID)
    p = sub.add_parser("revoke-key", help="revoke an API key by its prefix")
    p.add_argument("prefix")
    # ---- audience (issue 10): templates kept in git, the tenant's default locale
    p = sub.add_parser("templates", help="list a tenant's templates, or push a folder of them")
    templates_sub = p.add_subparsers(dest="templates_command", required=True)
    t = templates_sub.add_parser("list", help="the tenant's templates (latest versions)")
    t.add_argument("tenant_id", type=UUID)
    t = templates_sub.add_parser(
        "push", help="create or version the templates of a folder (<key>/<channel>.<locale>.<part>.liquid)"
    )
    t.add_argument("tenant_id", type=UUID)
    t.add_argument("folder")
    p = sub.add_parser("set-locale", help="the tenant's default locale (templates fall back to it)")
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("locale")
    _operating_commands(sub)
    args = parser.parse_args(argv)

    if args.database_url:
        import os

        os.environ["DATABASE_URL"] = args.database_url
        from .config import get_settings

        get_settings.cache_clear()
    try:
        return _run(args)
    except DomainError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for item in exc.details:
            print(f"  {item.get('field')}: {item.get('message')}", file=sys.stderr)
        return 2
    finally:
        db.close_pool()


def _run(args: argparse.Namespace) -> int:
    if args.command == "migrate":
        applied = db.migrate()
        print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    elif args.command == "create-tenant":
        print(auth.create_tenant(args.name, actor=audit.CLI))
    elif args.command == "create-key":
        scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
        issued = auth.create_api_key(args.tenant_id, args.name, scopes, args.rate_limit, actor=audit.CLI)
        print(
            json.dumps({"id": str(issued.id), "prefix": issued.prefix, "key": issued.key, "scopes": scopes})
        )
        print("store the key now: it is shown only once", file=sys.stderr)
    elif args.command == "list-keys":
        for row in auth.list_api_keys(args.tenant_id):
            print(json.dumps(row, default=str))
    elif args.command == "revoke-key":
        if not auth.revoke_api_key(args.prefix, actor=audit.CLI):
            print(f"error: no active key with prefix {args.prefix}", file=sys.stderr)
            return 1
        print(f"revoked {args.prefix}")
    elif args.command == "templates":
        return _templates(args)
    elif args.command == "set-locale":
        return _set_locale(args)
    else:
        return _run_operating(args)
    return 0


# ---------------------------------------------------------------- audience (issue 10)


def _templates(args: argparse.Namespace) -> int:
    from .audience import folder, templates

    if args.templates_command == "list":
        cursor = None
        while True:
            page = templates.list_page(args.tenant_id, limit=100, cursor=cursor)
            for t in page.data:
                variants = [f"{v.channel}:{v.locale or 'default'}" for v in t.variants]
                print(
                    json.dumps(
                        {
                            "key": t.key,
                            "version": t.version,
                            "name": t.name,
                            "category": t.category,
                            "variants": variants,
                        }
                    )
                )
            if page.next_cursor is None:
                return 0
            cursor = page.next_cursor
    report = folder.push(args.tenant_id, Path(args.folder))
    for action in ("created", "updated", "unchanged"):
        for key in getattr(report, action):
            print(f"{action} {key}")
    return 0


def _set_locale(args: argparse.Namespace) -> int:
    from .audience.templates import canonical_locale

    try:
        locale = canonical_locale(args.locale)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with db.transaction() as conn:
        row = conn.execute(
            "UPDATE tenants SET default_locale = %s WHERE id = %s RETURNING id", (locale, args.tenant_id)
        ).fetchone()
        if row is None:
            print(f"error: no tenant {args.tenant_id}", file=sys.stderr)
            return 1
        audit.record(
            conn,
            args.tenant_id,
            audit.CLI,
            "tenant.update",
            "tenant",
            args.tenant_id,
            {"default_locale": locale},
        )
    print(f"default locale of {args.tenant_id}: {locale}")
    return 0


# ---------------------------------------------------------------- operating (issue 12): provider
# configs, audit tail, metrics roll-up


def _operating_commands(sub: Any) -> None:
    p = sub.add_parser("provider-config-add", help="add a provider to a tenant's channel route")
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("--channel", required=True, choices=["email", "sms", "push"])
    p.add_argument("--provider", required=True)
    p.add_argument("--priority", required=True, type=int, help="lower goes first")
    p.add_argument("--settings", default="{}", help='JSON object, e.g. \'{"default_from": "a@b.c"}\'')
    p.add_argument("--credentials-file", help="a JSON object of credentials; - reads stdin")
    p.add_argument("--inactive", action="store_true", help="store it without routing to it yet")
    p = sub.add_parser("provider-config-list", help="list a tenant's provider configs (never credentials)")
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("--channel", choices=["email", "sms", "push"])
    p = sub.add_parser("provider-config-set", help="change a provider config")
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("config_id", type=UUID)
    p.add_argument("--priority", type=int)
    p.add_argument("--settings", help="JSON object: replaces the settings")
    p.add_argument("--credentials-file", help="a JSON object of credentials (- reads stdin): replaces them")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--active", dest="active", action="store_const", const=True)
    group.add_argument("--inactive", dest="active", action="store_const", const=False)
    p = sub.add_parser("provider-config-remove", help="remove a provider config and its credentials")
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("config_id", type=UUID)
    p = sub.add_parser(
        "audit-tail", help="a tenant's latest audit events, oldest first (--follow: keep printing)"
    )
    p.add_argument("tenant_id", type=UUID)
    p.add_argument("--action")
    p.add_argument("--target-type")
    p.add_argument("--target-id")
    p.add_argument("--actor", help="an API key prefix, cli or system")
    p.add_argument("--limit", type=int, default=20, choices=range(1, 101), metavar="1-100")
    p.add_argument("--follow", action="store_true")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls with --follow")
    p = sub.add_parser("metrics-rollup", help="recount the metrics: what changed, or a window (--from/--to)")
    p.add_argument("--from", dest="start", type=_instant)
    p.add_argument("--to", dest="end", type=_instant)
    p.add_argument("--tenant", type=UUID)


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json_object(text: str, what: str) -> dict[str, Any]:
    from .errors import ValidationFailed

    try:
        value = json.loads(text)
    except ValueError:
        raise ValidationFailed.field(what, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationFailed.field(what, "must be a JSON object")
    return value


def _credentials(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    return _json_object(text, "credentials")


def _run_operating(args: argparse.Namespace) -> int:
    from . import metrics_rollup, provider_configs
    from .models import parse

    if args.command == "provider-config-add":
        body = {
            "channel": args.channel,
            "provider": args.provider,
            "priority": args.priority,
            "settings": _json_object(args.settings, "settings"),
            "credentials": _credentials(args.credentials_file) or {},
            "active": not args.inactive,
        }
        data = parse(provider_configs.ProviderConfigCreate, body)
        print(provider_configs.create(args.tenant_id, data, audit.CLI).model_dump_json())
    elif args.command == "provider-config-list":
        cursor: str | None = None
        while True:
            page = provider_configs.list_page(args.tenant_id, limit=100, cursor=cursor, channel=args.channel)
            for config in page.data:
                print(config.model_dump_json())
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    elif args.command == "provider-config-set":
        patch: dict[str, Any] = {}
        if args.priority is not None:
            patch["priority"] = args.priority
        if args.settings is not None:
            patch["settings"] = _json_object(args.settings, "settings")
        credentials = _credentials(args.credentials_file)
        if credentials is not None:
            patch["credentials"] = credentials
        if args.active is not None:
            patch["active"] = args.active
        data_patch = parse(provider_configs.ProviderConfigPatch, patch)
        print(
            provider_configs.update(args.tenant_id, args.config_id, data_patch, audit.CLI).model_dump_json()
        )
    elif args.command == "provider-config-remove":
        provider_configs.delete(args.tenant_id, args.config_id, audit.CLI)
        print(f"removed {args.config_id}")
    elif args.command == "audit-tail":
        _audit_tail(args)
    elif args.command == "metrics-rollup":
        if args.start is not None or args.end is not None:
            end = args.end or datetime.now(UTC)
            start = args.start or end.replace(minute=0, second=0, microsecond=0)
            print(json.dumps(metrics_rollup.rollup_window(start, end, args.tenant)))
        else:
            print(json.dumps(metrics_rollup.rollup()))
    return 0


def _audit_tail(args: argparse.Namespace) -> None:
    filters = {
        "action": args.action,
        "target_type": args.target_type,
        "target_id": args.target_id,
        "actor": args.actor,
    }
    page = audit.list_page(args.tenant_id, limit=args.limit, **filters)
    seen: set[UUID] = set()
    for event in reversed(page.data):
        print(event.model_dump_json())
        seen.add(event.id)
    while args.follow:
        time.sleep(args.interval)
        fresh = [e for e in audit.list_page(args.tenant_id, limit=100, **filters).data if e.id not in seen]
        for event in reversed(fresh):
            print(event.model_dump_json(), flush=True)
            seen.add(event.id)


if __name__ == "__main__":
    sys.exit(main())
