"""Templates over the real API and database: versions, locales, archive, preview, rendering at
ingest (the stored payload is what is sent), and every bad input the issue lists."""

from __future__ import annotations

from typing import Any

import psycopg

from notify_core import db

from .conftest import Api, Tenant

SHIPPED: dict[str, Any] = {
    "key": "order-shipped",
    "name": "Order shipped",
    "variants": [
        {
            "channel": "email",
            "locale": "en",
            "subject": "Order {{ order.id }} shipped",
            "body": "Hi {{ name }}, {% for item in items %}{{ item }} {% endfor %}is on its way.",
            "html": "<p>Hi {{ name }}</p>",
        },
        {
            "channel": "email",
            "locale": "pt",
            "subject": "Pedido {{ order.id }} enviado",
            "body": "Olá {{ name }}",
        },
        {"channel": "email", "subject": "[default] {{ order.id }}", "body": "Default {{ name }}"},
        {"channel": "sms", "locale": "en", "body": "Order {{ order.id }} shipped"},
        {
            "channel": "push",
            "title": "Shipped",
            "body": "{{ order.id }}",
            "data": {"order": "{{ order.id }}"},
        },
    ],
}
DATA = {"name": "<Ada>", "order": {"id": "A-1"}, "items": ["book", "pen"]}


def make_template(api: Api, **changes: Any) -> dict[str, Any]:
    reply = api("POST", "/api/v1/templates", {**SHIPPED, **changes})
    assert reply.status == 201, reply.raw
    return reply.json


def user(api: Api, **fields: Any) -> str:
    reply = api("POST", "/api/v1/users", {"email": "ada@example.com", "phone": "+14155550100", **fields})
    assert reply.status == 201, reply.raw
    return str(reply.json["id"])


def test_versions_archive_and_audit(api: Api, tenant: Tenant) -> None:
    created = make_template(api)
    assert (created["version"], created["latest_version"]) == (1, 1)
    assert api("POST", "/api/v1/templates", SHIPPED).error["code"] == "conflict"
    update = {k: v for k, v in SHIPPED.items() if k != "key"} | {"name": "Order shipped v2"}
    v2 = api("PUT", "/api/v1/templates/order-shipped", update)
    assert v2.status == 200 and v2.json["version"] == 2
    assert api("GET", "/api/v1/templates/order-shipped").json["name"] == "Order shipped v2"
    old = api("GET", "/api/v1/templates/order-shipped", query={"version": "1"})
    assert (old.json["version"], old.json["latest_version"], old.json["name"]) == (1, 2, "Order shipped")
    assert api("GET", "/api/v1/templates/order-shipped", query={"version": "9"}).status == 404
    listed = api("GET", "/api/v1/templates").json["data"]
    assert [t["key"] for t in listed] == ["order-shipped"]
    # archive: hidden, unusable; a PUT restores it as a new version
    assert api("DELETE", "/api/v1/templates/order-shipped").status == 204
    assert api("GET", "/api/v1/templates/order-shipped").status == 404
    assert api("DELETE", "/api/v1/templates/order-shipped").status == 404
    assert api("GET", "/api/v1/templates").json["data"] == []
    refused = api(
        "POST",
        "/api/v1/notifications",
        {"channel": "sms", "template": "order-shipped", "data": DATA, "payload": {"to": "+14155550100"}},
    )
    assert refused.status == 422 and refused.error["details"][0]["field"] == "template"
    assert api("PUT", "/api/v1/templates/order-shipped", update).json["version"] == 3
    with psycopg.connect(db.get_settings().database_url) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM audit_events WHERE tenant_id = %s AND target_type = 'template'"
                " ORDER BY created_at",
                (tenant.id,),
            )
        ]
    assert actions == ["template.create", "template.update", "template.archive", "template.update"]


def test_another_tenants_template_is_not_found(api: Api, make_tenant: Any, make_api: Any) -> None:
    make_template(api)
    other = make_api(make_tenant("other").key)
    assert other("GET", "/api/v1/templates/order-shipped").status == 404
    assert other("POST", "/api/v1/templates/order-shipped/preview", {"channel": "sms"}).status == 404


def test_preview_negotiates_the_locale_and_escapes_email_html_only(api: Api) -> None:
    make_template(api)

    def preview(**body: Any) -> Any:
        reply = api("POST", "/api/v1/templates/order-shipped/preview", {"data": DATA, **body})
        assert reply.status == 200, reply.raw
        return reply.json

    en = preview(channel="email", locale="en")
    assert en["locale"] == "en" and en["payload"]["subject"] == "Order A-1 shipped"
    assert en["payload"]["html"] == "<p>Hi &lt;Ada&gt;</p>"  # autoescaped
    assert en["payload"]["body"] == "Hi <Ada>, book pen is on its way."  # text: as given
    assert preview(channel="email", locale="pt-BR")["locale"] == "pt"  # pt-BR → pt
    assert preview(channel="email", locale="de")["payload"]["subject"] == "[default] A-1"  # → default variant
    push = preview(channel="push")
    assert push["payload"] == {"title": "Shipped", "body": "A-1", "data": {"order": "A-1"}}


def test_template_bad_input_is_a_clear_422(api: Api) -> None:
    def refused(body: dict[str, Any]) -> list[dict[str, str]]:
        reply = api("POST", "/api/v1/templates", body)
        assert reply.status == 422, reply.raw
        return reply.error["details"]

    # a Liquid syntax error, with its line and column
    (detail,) = refused({**SHIPPED, "variants": [{"channel": "sms", "body": "Hi\n{{ name "}]})
    assert detail["field"] == "variants[0].body"
    assert detail["message"].startswith("line 2, column")
    # tags that would reach other templates are not there
    (detail,) = refused({**SHIPPED, "variants": [{"channel": "sms", "body": "{% include 'x' %}"}]})
    assert detail["field"] == "variants[0].body"
    # an unknown locale, a part the channel does not have, a duplicate variant, an unknown category
    assert (
        refused({**SHIPPED, "variants": [{"channel": "sms", "locale": "xx-QQ", "body": "b"}]})[0]["field"]
        == "variants[0].locale"
    )
    assert (
        "no subject"
        in refused({**SHIPPED, "variants": [{"channel": "sms", "subject": "s", "body": "b"}]})[0]["message"]
    )
    two = [{"channel": "sms", "body": "a"}, {"channel": "sms", "body": "b"}]
    assert refused({**SHIPPED, "variants": two})[0]["field"] == "variants"
    assert refused({**SHIPPED, "category": "nope"})[0]["field"] == "category"


def test_rendered_at_ingest_with_strict_variables_and_limits(api: Api) -> None:
    make_template(api)
    uid = user(api, locale="pt-BR")
    # the user's locale picks the variant; the notification records the template and version
    reply = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "email", "template": "order-shipped", "data": DATA},
    )
    assert reply.status == 202, reply.raw
    body = reply.json
    assert (body["template_key"], body["template_version"]) == ("order-shipped", 1)
    assert body["payload"] == {"to": "ada@example.com", "subject": "Pedido A-1 enviado", "body": "Olá <Ada>"}
    # the request's locale wins over the user's
    en = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "email", "template": "order-shipped", "data": DATA, "locale": "en"},
    )
    assert en.json["payload"]["subject"] == "Order A-1 shipped"
    # an undefined variable names itself
    missing = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "sms", "template": "order-shipped", "data": {"name": "x"}},
    )
    assert missing.status == 422
    assert missing.error["details"] == [
        {"field": "data.order", "message": "is undefined (used by the template's body)"}
    ]
    nested = api(
        "POST",
        "/api/v1/notifications",
        {"user_id": uid, "channel": "sms", "template": "order-shipped", "data": {"order": {}}},
    )
    assert nested.error["details"][0]["field"] == "data.order.id"
    # a render over the SMS limit, an unknown template, content in the payload beside a template
    long = api(
        "POST",
        "/api/v1/templates",
        {
            "key": "long",
            "name": "Long",
            "variants": [{"channel": "sms", "body": "{% for i in (1..500) %}xxxx{% endfor %}"}],
        },
    )
    assert long.status == 201
    too_long = api(
        "POST", "/api/v1/notifications", {"user_id": uid, "channel": "sms", "template": "long", "data": {}}
    )
    assert too_long.status == 422 and too_long.error["details"][0]["field"] == "payload.body"
    loop = api(
        "POST",
        "/api/v1/templates",
        {
            "key": "loop",
            "name": "Loop",
            "variants": [{"channel": "sms", "body": "{% for i in (1..100000) %}{% endfor %}x"}],
        },
    )
    assert loop.status == 201
    looped = api(
        "POST", "/api/v1/notifications", {"user_id": uid, "channel": "sms", "template": "loop", "data": {}}
    )
    assert looped.status == 422 and "loop iteration limit" in looped.error["details"][0]["message"]
    unknown = api(
        "POST", "/api/v1/notifications", {"user_id": uid, "channel": "sms", "template": "nope", "data": {}}
    )
    assert unknown.status == 422 and unknown.error["details"][0]["field"] == "template"
    content = api(
        "POST",
        "/api/v1/notifications",
        {
            "user_id": uid,
            "channel": "sms",
            "template": "order-shipped",
            "data": DATA,
            "payload": {"body": "x"},
        },
    )
    assert content.status == 422 and content.error["details"][0]["field"] == "payload.body"
    no_push = api(
        "POST",
        "/api/v1/templates",
        {"key": "smsonly", "name": "S", "variants": [{"channel": "sms", "body": "x"}]},
    )
    assert no_push.status == 201
    no_variant = api(
        "POST",
        "/api/v1/notifications",
        {"channel": "push", "template": "smsonly", "data": {}, "payload": {"token": "t"}},
    )
    assert no_variant.status == 422 and "no push variant" in no_variant.error["details"][0]["message"]
