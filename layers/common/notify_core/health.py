"""Liveness and dependency reachability."""

from __future__ import annotations

from typing import Any

from . import db, queue, ratelimit
from .config import get_settings


def check(deep: bool = False) -> dict[str, Any]:
    report: dict[str, Any] = {"status": "ok", "stage": get_settings().stage}
    if not deep:
        return report
    checks: dict[str, str] = {}
    for name, probe in (("postgres", _postgres), ("redis", _redis), ("sqs", _sqs)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 — a health check reports every failure, whatever its type
            checks[name] = f"error: {type(exc).__name__}"
    report["checks"] = checks
    if any(v != "ok" for v in checks.values()):
        report["status"] = "degraded"
    return report


def _postgres() -> None:
    db.ping()


def _redis() -> None:
    ratelimit.get_redis().ping()


def _sqs() -> None:
    queue.get_sqs().get_queue_attributes(
        QueueUrl=get_settings().notifications_queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
