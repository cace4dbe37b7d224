"""Operator CLI: `notify-admin migrate | create-tenant | create-key | list-keys | revoke-key`."""

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
