"""`notify-admin templates push|list` and `set-locale` over the real database: a folder of files
becomes templates and versions, unchanged ones stay, invalid ones stop the push before any write,
and every change is audited as `cli`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from notify_core import cli
from notify_core.config import get_settings

from .conftest import Api, Tenant


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_push_creates_versions_and_lists(tmp_path: Path, api: Api, tenant: Tenant, capsys: Any) -> None:
    api("POST", "/api/v1/categories", {"key": "orders", "name": "Orders"})
    write(
        tmp_path,
        {
            "order-shipped/template.json": json.dumps({"name": "Order shipped", "category": "orders"}),
            "order-shipped/email.en.subject.liquid": "Order {{ order.id }} shipped",
            "order-shipped/email.en.body.liquid": "Hi {{ name }}",
            "order-shipped/email.pt-BR.subject.liquid": "Pedido {{ order.id }}",
            "order-shipped/email.pt-BR.body.liquid": "Olá {{ name }}",
            "order-shipped/sms.default.liquid": "Order {{ order.id }} shipped",
            "order-shipped/push.default.title.liquid": "Shipped",
            "order-shipped/push.default.body.liquid": "{{ order.id }}",
            "order-shipped/push.default.data.json": json.dumps({"order": "{{ order.id }}"}),
            "welcome/sms.en.liquid": "Welcome",
        },
    )
    tenant_id = str(tenant.id)
    assert cli.main(["templates", "push", tenant_id, str(tmp_path)]) == 0
    assert capsys.readouterr().out.split("\n")[:2] == ["created order-shipped", "created welcome"]
    shipped = api("GET", "/api/v1/templates/order-shipped").json
    assert (shipped["category"], shipped["version"]) == ("orders", 1)
    assert {(v["channel"], v.get("locale")) for v in shipped["variants"]} == {
        ("email", "en"),
        ("email", "pt-BR"),
        ("sms", None),
        ("push", None),
    }
    # pushed again: unchanged; a changed file: a new version
    assert cli.main(["templates", "push", tenant_id, str(tmp_path)]) == 0
    assert "unchanged order-shipped" in capsys.readouterr().out
    write(tmp_path, {"welcome/sms.en.liquid": "Welcome aboard"})
    assert cli.main(["templates", "push", tenant_id, str(tmp_path)]) == 0
    assert "updated welcome" in capsys.readouterr().out
    assert api("GET", "/api/v1/templates/welcome").json["version"] == 2
    assert cli.main(["templates", "list", tenant_id]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(t["key"], t["version"]) for t in listed} == {("order-shipped", 1), ("welcome", 2)}
    with psycopg.connect(get_settings().database_url) as conn:
        actors = conn.execute(
            "SELECT DISTINCT actor_type FROM audit_events WHERE tenant_id = %s AND target_type = 'template'",
            (tenant.id,),
        ).fetchall()
    assert actors == [("cli",)]


def test_an_invalid_folder_pushes_nothing(tmp_path: Path, api: Api, tenant: Tenant, capsys: Any) -> None:
    write(tmp_path, {"good/sms.en.liquid": "fine", "bad/sms.en.liquid": "{{ oops ", "stray/notes.txt": "x"})
    assert cli.main(["templates", "push", str(tenant.id), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        "bad: variants[0].body" in err and "line 1, column" in err and "stray: " in err and "notes.txt" in err
    )
    assert api("GET", "/api/v1/templates").json["data"] == []


@pytest.mark.parametrize(("given", "stored"), [("pt_br", "pt-BR"), ("de", "de")])
def test_set_locale(tenant: Tenant, given: str, stored: str, capsys: Any) -> None:
    assert cli.main(["set-locale", str(tenant.id), given]) == 0
    assert cli.main(["set-locale", str(tenant.id), "xx-QQ"]) == 2
    with psycopg.connect(get_settings().database_url) as conn:
        assert conn.execute("SELECT default_locale FROM tenants WHERE id = %s", (tenant.id,)).fetchone() == (
            stored,
        )
