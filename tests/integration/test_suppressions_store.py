"""The suppressions store over the real database: normalized addresses, one row per reason, one
query for a batch's lookups, and which reasons a critical category bypasses."""

from __future__ import annotations

from typing import Any

from notify_core import suppressions
from notify_core.db import transaction

from .conftest import Tenant


def test_addresses_are_normalized_and_looked_up_in_one_query(tenant: Tenant, make_tenant: Any) -> None:
    other = make_tenant("other")
    with transaction() as conn:
        first = suppressions.add(conn, tenant.id, "email", " Ada@Example.COM ", "hard_bounce")
        again = suppressions.add(conn, tenant.id, "email", "ada@example.com", "hard_bounce")
        suppressions.add(conn, tenant.id, "email", "ada@example.com", "unsubscribe")
        suppressions.add(conn, tenant.id, "sms", "+1 (415) 555-0100", "sms_stop")
        suppressions.add(conn, other.id, "email", "bob@example.com", "manual")
    assert first is not None and again is None  # one row per address and reason
    with transaction() as conn:
        found = suppressions.lookup(
            conn,
            [
                (tenant.id, "email", "ADA@example.com"),
                (tenant.id, "sms", "+14155550100"),
                (tenant.id, "email", "bob@example.com"),  # another tenant's suppression
                (tenant.id, "push", "token-1"),
            ],
        )
    assert found == {
        (tenant.id, "email", "ada@example.com"): {"hard_bounce", "unsubscribe"},
        (tenant.id, "sms", "+14155550100"): {"sms_stop"},
    }


def test_critical_categories_bypass_unsubscribe_only() -> None:
    assert suppressions.blocks({"unsubscribe"}, critical=True) is None
    assert suppressions.blocks({"unsubscribe"}, critical=False) == "unsubscribe"
    assert suppressions.blocks({"unsubscribe", "hard_bounce"}, critical=True) == "hard_bounce"
    assert suppressions.blocks(set(), critical=False) is None
