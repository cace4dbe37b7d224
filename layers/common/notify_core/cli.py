"""Operator CLI: `notify-admin migrate | create-tenant | create-key | list-keys | revoke-key |
templates list|push | set-locale`."""

from __future__ import annotations

import argparse
import json
import sys
from uuid import UUID

from . import auth, db
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
        for d in exc.details:  # audience: which file or field, e.g. a template's Liquid error
            print(f"  {d.get('field')}: {d.get('message')}", file=sys.stderr)
        return 2
    finally:
        db.close_pool()


def _run(args: argparse.Namespace) -> int:
    if args.command == "migrate":
        applied = db.migrate()
        print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    elif args.command == "create-tenant":
        print(auth.create_tenant(args.name))
    elif args.command == "create-key":
        scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
        issued = auth.create_api_key(args.tenant_id, args.name, scopes, args.rate_limit)
        print(
            json.dumps({"id": str(issued.id), "prefix": issued.prefix, "key": issued.key, "scopes": scopes})
        )
        print("store the key now: it is shown only once", file=sys.stderr)
    elif args.command == "list-keys":
        for row in auth.list_api_keys(args.tenant_id):
            print(json.dumps(row, default=str))
    elif args.command == "revoke-key":
        if not auth.revoke_api_key(args.prefix):
            print(f"error: no active key with prefix {args.prefix}", file=sys.stderr)
            return 1
        print(f"revoked {args.prefix}")
    elif args.command == "templates":
        return _templates(args)
    elif args.command == "set-locale":
        return _set_locale(args)
    return 0


# ---------------------------------------------------------------- audience (issue 10)


def _templates(args: argparse.Namespace) -> int:
    from pathlib import Path

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
    from . import audit
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


if __name__ == "__main__":
    sys.exit(main())
