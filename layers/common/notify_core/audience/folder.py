"""Templates kept in git: a folder of files, read and pushed by `notify-admin templates push`.

Layout (one folder per template key)::

    templates/
      order-shipped/
        template.json                 {"name": "Order shipped", "category": "orders"} (optional;
                                      the name defaults to the key)
        email.en.subject.liquid       <channel>.<locale>.<part>.liquid
        email.en.body.liquid          parts: email subject, body, html; sms body; push title, body
        email.en.html.liquid
        email.default.subject.liquid  locale `default`: the channel's default variant
        sms.pt-BR.liquid              <channel>.<locale>.liquid is the body
        push.default.title.liquid
        push.default.body.liquid
        push.default.data.json        push data: {"key": "Liquid string"}

`push` validates every template first (models, Liquid syntax), then creates what is new and makes a
new version of what changed; unchanged templates are left alone. Audited as `cli`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from .. import audit
from ..errors import DomainError, NotFound, ValidationFailed
from ..models import details_from
from . import templates

PART_FILE = re.compile(r"^(email|sms|push)\.([A-Za-z0-9_-]+)(?:\.(subject|body|html|title))?\.liquid$")
DATA_FILE = re.compile(r"^push\.([A-Za-z0-9_-]+)\.data\.json$")


def read_template(folder: Path) -> templates.TemplateCreate:
    """One template's folder → the create request (a 422 naming the file when something is off)."""
    meta: dict[str, Any] = {}
    meta_file = folder / "template.json"
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValidationFailed.field(str(meta_file), f"not JSON: {exc}") from exc
    variants: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        if path.name == "template.json" or path.name.startswith("."):
            continue
        part = PART_FILE.match(path.name)
        data = DATA_FILE.match(path.name)
        if part:
            channel, locale, name = part.group(1), part.group(2), part.group(3) or "body"
            variants.setdefault((channel, locale), {})[name] = path.read_text(encoding="utf-8")
        elif data:
            try:
                variants.setdefault(("push", data.group(1)), {})["data"] = json.loads(
                    path.read_text(encoding="utf-8")
                )
            except ValueError as exc:
                raise ValidationFailed.field(str(path), f"not JSON: {exc}") from exc
        else:
            raise ValidationFailed.field(
                str(path), "not <channel>.<locale>[.<part>].liquid or push.<locale>.data.json"
            )
    body = {
        "key": folder.name,
        "name": meta.get("name", folder.name),
        "category": meta.get("category"),
        "variants": [
            {"channel": c, **({} if locale == "default" else {"locale": locale}), **parts}
            for (c, locale), parts in variants.items()
        ],
    }
    try:
        request = templates.TemplateCreate.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(f"{folder}: not a valid template", details_from(exc, str(folder))) from exc
    templates.check_syntax(request.variants)
    return request


@dataclass
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def push(tenant_id: UUID, root: Path) -> PushReport:
    if not root.is_dir():
        raise ValidationFailed.field(str(root), "not a folder")
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    wanted = []
    problems: list[dict[str, Any]] = []
    for folder in folders:  # every template is checked before any is written
        try:
            wanted.append(read_template(folder))
        except DomainError as exc:
            problems += [
                {"field": f"{folder.name}: {d['field']}", "message": d["message"]} for d in exc.details
            ]
    if problems:
        raise ValidationFailed("some templates are not valid; nothing was pushed", problems)
    report = PushReport()
    for request in wanted:
        try:
            current = templates.get(tenant_id, request.key)
        except NotFound:
            current = None
        if current is None:
            try:
                templates.create(tenant_id, request, audit.CLI)
                report.created.append(request.key)
                continue
            except DomainError as exc:
                if exc.code != "conflict":  # an archived template: a new version restores it
                    raise
        elif _same(current, request):
            report.unchanged.append(request.key)
            continue
        update = templates.TemplateUpdate.model_validate(request.model_dump(exclude={"key"}))
        templates.update(tenant_id, request.key, update, audit.CLI)
        report.updated.append(request.key)
    return report


def _same(current: templates.Template, wanted: templates.TemplateCreate) -> bool:
    def variants(items: list[templates.Variant]) -> list[str]:
        return sorted(json.dumps(v.model_dump(exclude_none=True), sort_keys=True) for v in items)

    return (current.name, current.category, variants(current.variants)) == (
        wanted.name,
        wanted.category,
        variants(wanted.variants),
    )
